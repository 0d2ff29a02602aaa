// Softmax kernels. A tensor is seen as (outer, n, inner) around the axis; each of the outer * inner
// lines of n elements (stride inner) is independent, so lines are spread over TBB tasks. Sums
// accumulate in double in a fixed order, so results do not depend on the thread count.
#include "core/kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/cuda/softmax.h"
#include "core/device.h"
#include "core/kernels/softmax_plan.h"
#include "core/parallel.h"

namespace seqlab::kernels {

// ---------------------------------------------------------------------------------------------
// Plans (softmax_plan.h), shared with the CUDA twins

SoftmaxLines softmax_lines(const Shape& s, int64_t axis, const char* op) {
  int64_t a = norm_axis(axis, static_cast<int64_t>(s.size()), op);
  SoftmaxLines l;
  for (int64_t i = 0; i < a; ++i) l.outer *= s[i];
  l.n = s[a];
  for (size_t i = a + 1; i < s.size(); ++i) l.inner *= s[i];
  return l;
}

SoftmaxLines softmax_backward_lines(const Tensor& dy, const Tensor& y, int64_t axis, const char* op) {
  SEQLAB_CHECK(dy.shape() == y.shape(), op, " backward: gradient of shape ", to_string(dy.shape()),
               " for an output of shape ", to_string(y.shape()));
  return softmax_lines(y.shape(), axis, op);
}

namespace {

using Lines = SoftmaxLines;

// Calls f(offset) for the first element of every line, lines spread over tasks.
template <typename F>
void for_lines(const Lines& l, F&& f) {
  int64_t count = l.outer * l.inner;
  parallel_for(0, count, std::max<int64_t>(1, 16384 / std::max<int64_t>(l.n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) f((k / l.inner) * l.n * l.inner + k % l.inner);
  });
}

// Forward for both: y = x - max - log(sum) (log) or exp(x - max) / sum.
template <bool kLog>
Tensor forward(const Tensor& x, int64_t axis, const char* op) {
  const Lines l = softmax_lines(x.shape(), axis, op);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), op, [&]<typename T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const int64_t n = l.n, st = l.inner;
    for_lines(l, [&](int64_t off) {
      const T* xi = px + off;
      T* yi = py + off;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, xi[j * st]);
      if (m == -std::numeric_limits<T>::infinity()) m = 0;  // an all -inf line: keep NaN out of x - m
      double s = 0;
      if constexpr (kLog) {
        for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(xi[j * st] - m));
        T lse = m + static_cast<T>(std::log(s));
        for (int64_t j = 0; j < n; ++j) yi[j * st] = xi[j * st] - lse;
      } else {
        for (int64_t j = 0; j < n; ++j) {
          T e = std::exp(xi[j * st] - m);
          yi[j * st] = e;
          s += static_cast<double>(e);
        }
        T inv = static_cast<T>(1.0 / s);
        for (int64_t j = 0; j < n; ++j) yi[j * st] *= inv;
      }
    });
  });
  return y;
}

template <bool kLog>
Tensor backward(const Tensor& dy, const Tensor& y, int64_t axis, const char* op) {
  const Lines l = softmax_backward_lines(dy, y, axis, op);
  Tensor dx = Tensor::empty(y.shape(), y.dtype());
  dispatch_float(y.dtype(), op, [&]<typename T>() {
    const T* pg = dy.data<T>();
    const T* py = y.data<T>();
    T* pd = dx.data<T>();
    const int64_t n = l.n, st = l.inner;
    for_lines(l, [&](int64_t off) {
      const T* gi = pg + off;
      const T* yi = py + off;
      T* di = pd + off;
      double s = 0;
      if constexpr (kLog) {
        for (int64_t j = 0; j < n; ++j) s += static_cast<double>(gi[j * st]);
        T ts = static_cast<T>(s);
        for (int64_t j = 0; j < n; ++j) di[j * st] = gi[j * st] - std::exp(yi[j * st]) * ts;
      } else {
        for (int64_t j = 0; j < n; ++j) s += static_cast<double>(gi[j * st]) * static_cast<double>(yi[j * st]);
        T ts = static_cast<T>(s);
        for (int64_t j = 0; j < n; ++j) di[j * st] = yi[j * st] * (gi[j * st] - ts);
      }
    });
  });
  return dx;
}

}  // namespace

Tensor softmax_forward(const Tensor& x, int64_t axis) {
  if constexpr (kCuda) if (on_cuda("softmax", x)) return cuda::softmax_forward(x, axis);
  return forward<false>(x, axis, "softmax");
}
Tensor log_softmax_forward(const Tensor& x, int64_t axis) {
  if constexpr (kCuda) if (on_cuda("log_softmax", x)) return cuda::log_softmax_forward(x, axis);
  return forward<true>(x, axis, "log_softmax");
}
Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t axis) {
  if constexpr (kCuda) if (on_cuda("softmax", dy, y)) return cuda::softmax_backward(dy, y, axis);
  return backward<false>(dy, y, axis, "softmax");
}
Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t axis) {
  if constexpr (kCuda) if (on_cuda("log_softmax", dy, y)) return cuda::log_softmax_backward(dy, y, axis);
  return backward<true>(dy, y, axis, "log_softmax");
}

}  // namespace seqlab::kernels
