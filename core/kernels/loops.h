// Loop helpers shared by the kernels (header-only, so the per-element functor inlines): flat
// parallel maps over contiguous buffers, with one grain for every cheap elementwise loop.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "core/parallel.h"
#include "core/tensor.h"

namespace seqlab::kernels {

/// Elements per parallel task for cheap elementwise loops (below this a loop runs on one thread).
inline constexpr int64_t kGrain = 32768;

/// out[i] = f(x[i]) for i in [0, n), in parallel chunks; out may alias x.
template <typename T, typename F>
void map1(const T* x, T* out, int64_t n, F f) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = f(x[i]);
  });
}

/// out[i] = f(a[i], b[i]); out may alias a or b.
template <typename T, typename F>
void map2(const T* a, const T* b, T* out, int64_t n, F f) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = f(a[i], b[i]);
  });
}

/// out[i] = f(a[i], b[i], c[i]); out may alias any input.
template <typename T, typename F>
void map3(const T* a, const T* b, const T* c, T* out, int64_t n, F f) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = f(a[i], b[i], c[i]);
  });
}

/// Fresh y = f(x) elementwise; f is a generic lambda `[](auto v) { ... }`; op names errors.
template <typename F>
Tensor unary_map(const Tensor& x, const char* op, F f) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), op, [&]<typename T>() { map1<T>(x.data<T>(), y.data<T>(), x.numel(), f); });
  return y;
}

/// Fresh y = f(a, b) elementwise for same-shape, same-dtype a and b (no broadcasting).
template <typename F>
Tensor binary_map(const Tensor& a, const Tensor& b, const char* op, F f) {
  SEQLAB_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype(), op, ": expected equal shapes and dtypes, got ",
               to_string(a.shape()), " ", dtype_name(a.dtype()), " and ", to_string(b.shape()), " ",
               dtype_name(b.dtype()));
  Tensor y = Tensor::empty(a.shape(), a.dtype());
  dispatch_float(a.dtype(), op,
                 [&]<typename T>() { map2<T>(a.data<T>(), b.data<T>(), y.data<T>(), a.numel(), f); });
  return y;
}

}  // namespace seqlab::kernels
