// clip_grad_norm: deterministic chunked sum of squares, then an in-place scale.
#include "optim/clip.h"

#include <cmath>

#include "autograd/node.h"
#include "core/cuda/optim.h"
#include "core/device.h"
#include "core/parallel.h"

namespace seqlab::optim {
namespace {
constexpr int64_t kClipChunk = 1 << 15;  // fixed, so the sum order does not depend on threads
}  // namespace

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double known_sum_sq) {
  SEQLAB_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got ", max_norm);
  NoGradGuard no_grad;
  if constexpr (kCuda) {
    std::vector<Tensor> gs;
    for (const Tensor& p : params)
      if (p.grad().defined()) gs.push_back(p.grad());
    if (on_cuda("clip_grad_norm", gs)) {  // one norm, one copy back, then one scale per tensor
      const double norm = std::sqrt(known_sum_sq >= 0 ? known_sum_sq : cuda::sum_of_squares(gs));
      const double coef = max_norm / (norm + 1e-6);
      if (coef < 1 && std::isfinite(norm)) cuda::scale_all(gs, coef);
      return norm;
    }
  }
  double sq = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    sq += dispatch_float(g.dtype(), "clip_grad_norm", [&]<typename T>() {
      const T* pg = g.data<T>();
      return parallel_sum<double>(0, g.numel(), kClipChunk, [&](int64_t lo, int64_t hi) {
        double s = 0;
        for (int64_t i = lo; i < hi; ++i) s += static_cast<double>(pg[i]) * static_cast<double>(pg[i]);
        return s;
      });
    });
  }
  double norm = std::sqrt(sq);
  double coef = max_norm / (norm + 1e-6);
  if (!(coef < 1) || !std::isfinite(norm)) return norm;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    dispatch_float(g.dtype(), "clip_grad_norm", [&]<typename T>() {
      T* pg = g.data<T>();
      const T c = static_cast<T>(coef);
      parallel_for(0, g.numel(), kClipChunk, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) pg[i] *= c;
      });
    });
  }
  return norm;
}

}  // namespace seqlab::optim
