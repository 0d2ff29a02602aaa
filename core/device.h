// Where an op runs. A kernel in core/kernels/ checks its inputs' device first and hands cuda tensors
// to its CUDA twin in core/cuda/ (same name, same shapes, same maths):
//     if constexpr (kCuda) if (on_cuda("add", a, b)) return cuda::add(a, b);
// Built without CUDA, kCuda is false and the call is a discarded statement (never linked), and no
// cuda tensor can exist. Inputs on different devices are an error naming the op and both devices.
#pragma once
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace seqlab {

#ifdef SEQLAB_WITH_CUDA
inline constexpr bool kCuda = true;
#else
inline constexpr bool kCuda = false;
#endif

/// True when the defined tensors among `ts` live on cuda; throws when they are on different devices.
template <typename... Ts>
bool on_cuda(const char* op, const Ts&... ts) {
  int cpu = 0, gpu = 0;
  auto count = [&](const Tensor& t) {
    if (t.defined()) (t.device() == Device::cuda ? gpu : cpu)++;
  };
  (count(ts), ...);
  if (gpu && cpu) {
    std::string where;
    auto name = [&](const Tensor& t) {
      if (t.defined()) where += str(where.empty() ? "" : ", ", device_name(t.device()), " ", to_string(t.shape()));
    };
    (name(ts), ...);
    throw Error(str(op, ": tensors on different devices (", where, "); move them with .to(device) first"));
  }
  return gpu > 0;
}

/// The same for a list of tensors (concat).
inline bool on_cuda(const char* op, const std::vector<Tensor>& ts) {
  bool gpu = false, cpu = false;
  for (const Tensor& t : ts)
    if (t.defined()) (t.device() == Device::cuda ? gpu : cpu) = true;
  SEQLAB_CHECK(!(gpu && cpu), op, ": tensors on different devices (cpu and cuda); move them with .to(device) first");
  return gpu;
}

}  // namespace seqlab
