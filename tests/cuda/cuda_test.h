// What the CUDA tests (label `cuda`, tests/cuda/*.cpp) share: the skip when no GPU can be used, random
// inputs, and the comparison of a device result with the CPU kernel's on the same inputs.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/random.h"
#include "core/tensor.h"
#include "layers/model.h"

namespace seqlab::test {

/// True (and a "SKIPPED" message, which CTest reports as skipped) when no CUDA device can be used.
inline bool no_gpu() {
  if (cuda::device_count() > 0) return false;
  MESSAGE("SKIPPED: no usable CUDA device (" << cuda::describe_devices() << ")");
  return true;
}
#define SEQLAB_REQUIRE_GPU() \
  if (::seqlab::test::no_gpu()) return

/// A small model of one family: 2 blocks, d_model 16, 3 channels, T = 24, horizon 6. The transformer's
/// dropout is `dropout` (0 by default: the device draws its masks from another generator, Philox, so
/// only a model without dropout can match the CPU step for step).
inline nn::ModelOptions small_model(const std::string& type, double dropout = 0.0) {
  nn::ModelOptions mo;
  mo.layer = type;
  mo.in_channels = 3;
  mo.out_channels = 3;
  mo.d_model = 16;
  mo.n_layers = 2;
  mo.seq_len = 24;
  mo.pred_len = 6;
  mo.head = "last";
  mo.layer_args = nn::LayerArgs("cuda test '" + type + "'");
  if (type == "transformer") mo.layer_args.set("n_heads", int64_t{2}).set("dropout", dropout);
  return mo;
}

/// A CPU tensor of uniform values in [lo, hi) from a fixed seed.
inline Tensor rand_cpu(const Shape& s, uint64_t seed, DType d = DType::f32, double lo = -1, double hi = 1) {
  Generator g(seed);
  std::vector<double> v(static_cast<size_t>(numel(s)));
  for (double& x : v) x = lo + (hi - lo) * g.uniform();
  return Tensor::from_vector(v, s, d);
}

/// max |a - b| / (atol + rtol * |b|) <= 1 elementwise (b: the CPU reference), with the worst entry
/// in the failure message. `a` may live on cuda.
inline void check_close(const Tensor& gpu, const Tensor& cpu, double rtol, double atol, const std::string& what) {
  REQUIRE_MESSAGE(gpu.defined() == cpu.defined(), what << ": one side undefined");
  if (!cpu.defined()) return;
  REQUIRE_MESSAGE(gpu.shape() == cpu.shape(), what << ": shape " << to_string(gpu.shape()) << " vs CPU "
                                                   << to_string(cpu.shape()));
  std::vector<double> a = gpu.to_vector(), b = cpu.to_vector();
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double r = std::abs(a[i] - b[i]) / (atol + rtol * std::abs(b[i]));
    if (!(r <= worst)) {  // NaN counts as worst
      worst = std::isnan(r) ? INFINITY : r;
      wi = i;
    }
  }
  CHECK_MESSAGE(worst <= 1.0, what << ": worst entry " << wi << " gpu " << (a.empty() ? 0 : a[wi]) << " cpu "
                                   << (b.empty() ? 0 : b[wi]) << " (rtol " << rtol << ", atol " << atol << ")");
}

}  // namespace seqlab::test
