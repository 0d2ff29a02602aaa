// Elementwise kernels. A broadcasting binary op is planned once: size-1 dims dropped, adjacent dims
// merged when both operands stay contiguous across them, so (B, T, D) + (D) becomes rows of D and
// (B, T, D) * (B, 1, D) becomes B blocks of T rows. The innermost loop then has operand strides of
// 0 or 1 only and is specialised for each pair, so it vectorises.
#include "core/kernels/elementwise.h"

#include <cmath>
#include <cstring>

#include "core/cuda/elementwise.h"
#include "core/device.h"
#include "core/kernels/loops.h"

namespace seqlab::kernels {

BroadcastPlan broadcast_plan(const Shape& out, const Shape& a, const Shape& b) {
  size_t r = out.size();
  auto aligned_strides = [&](const Shape& s) {
    std::vector<int64_t> st(r, 0);
    int64_t acc = 1;
    for (size_t i = s.size(); i-- > 0;) {
      size_t o = i + (r - s.size());
      st[o] = s[i] == 1 ? 0 : acc;  // broadcast dims read the same element
      acc *= s[i];
    }
    return st;
  };
  std::vector<int64_t> sa = aligned_strides(a), sb = aligned_strides(b);
  BroadcastPlan p;
  for (size_t i = 0; i < r; ++i) {
    if (out[i] == 1) continue;
    if (!p.size.empty() && p.sa.back() == sa[i] * out[i] && p.sb.back() == sb[i] * out[i]) {
      p.size.back() *= out[i];
      p.sa.back() = sa[i];
      p.sb.back() = sb[i];
    } else {
      p.size.push_back(out[i]);
      p.sa.push_back(sa[i]);
      p.sb.push_back(sb[i]);
    }
  }
  if (p.size.empty()) p = BroadcastPlan{{1}, {0}, {0}};
  return p;
}
namespace {


// One inner row: n elements, operand strides ia, ib in {0, 1}; one loop per case so each vectorises.
template <typename T, typename F>
inline void row(const T* pa, int64_t ia, const T* pb, int64_t ib, T* po, int64_t n, F f) {
  if (ia == 1 && ib == 1) {
    for (int64_t j = 0; j < n; ++j) po[j] = f(pa[j], pb[j]);
  } else if (ia == 1) {
    const T bv = pb[0];
    for (int64_t j = 0; j < n; ++j) po[j] = f(pa[j], bv);
  } else if (ib == 1) {
    const T av = pa[0];
    for (int64_t j = 0; j < n; ++j) po[j] = f(av, pb[j]);
  } else {
    const T v = f(pa[0], pb[0]);
    for (int64_t j = 0; j < n; ++j) po[j] = v;
  }
}

// out (shape `out`, contiguous) = f(a, b) with a and b broadcast to `out`. out may alias a when
// a already has shape `out`.
template <typename T, typename F>
void broadcast_apply(const T* a, const Shape& as, const T* b, const Shape& bs, T* out, const Shape& os, F f) {
  int64_t n = numel(os);
  if (n == 0) return;
  if (as == os && bs == os) return map2<T>(a, b, out, n, f);
  if (as == os && numel(bs) == 1) {
    const T bv = b[0];
    return map1<T>(a, out, n, [&](T x) { return f(x, bv); });
  }
  if (bs == os && numel(as) == 1) {
    const T av = a[0];
    return map1<T>(b, out, n, [&](T x) { return f(av, x); });
  }
  BroadcastPlan p = broadcast_plan(os, as, bs);
  const size_t d = p.size.size();
  const int64_t inner = p.size.back(), ia = p.sa.back(), ib = p.sb.back();
  const int64_t rows = n / inner;
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t lo, int64_t hi) {
    // Multi-index of row `lo` over the outer dims, then walked like an odometer.
    std::vector<int64_t> idx(d, 0);
    int64_t oa = 0, ob = 0, rem = lo;
    for (size_t k = d - 1; k-- > 0;) {
      idx[k] = rem % p.size[k];
      rem /= p.size[k];
      oa += idx[k] * p.sa[k];
      ob += idx[k] * p.sb[k];
    }
    for (int64_t r = lo; r < hi; ++r) {
      row(a + oa, ia, b + ob, ib, out + r * inner, inner, f);
      for (size_t k = d - 1; k-- > 0;) {
        oa += p.sa[k];
        ob += p.sb[k];
        if (++idx[k] < p.size[k]) break;
        oa -= p.sa[k] * p.size[k];
        ob -= p.sb[k] * p.size[k];
        idx[k] = 0;
      }
    }
  });
}

void check_dtypes(const Tensor& a, const Tensor& b, const char* op) {
  SEQLAB_CHECK(a.defined() && b.defined(), op, ": undefined tensor");
  SEQLAB_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", dtype_name(a.dtype()), " ", to_string(a.shape()),
               " and ", dtype_name(b.dtype()), " ", to_string(b.shape()));
}

template <typename F>
Tensor binary(const Tensor& a, const Tensor& b, const char* op, F f) {
  check_dtypes(a, b, op);
  Shape os = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor out = Tensor::empty(os, a.dtype());
  dispatch_float(a.dtype(), op, [&]<typename T>() {
    broadcast_apply<T>(a.data<T>(), a.shape(), b.data<T>(), b.shape(), out.data<T>(), os, f);
  });
  return out;
}

// In place dst = f(dst, src) with src broadcast to dst's shape.
template <typename F>
void binary_inplace(Tensor& dst, const Tensor& src, const char* op, F f) {
  check_dtypes(dst, src, op);
  Shape os = broadcast_shapes(dst.shape(), src.shape(), op);
  SEQLAB_CHECK(os == dst.shape(), op, ": ", to_string(src.shape()), " does not broadcast to the destination ",
               to_string(dst.shape()));
  dispatch_float(dst.dtype(), op, [&]<typename T>() {
    broadcast_apply<T>(dst.data<T>(), dst.shape(), src.data<T>(), src.shape(), dst.data<T>(), os, f);
  });
}

void check_same_numel(const Tensor& a, const Tensor& b, const char* op) {
  check_dtypes(a, b, op);
  SEQLAB_CHECK(a.numel() == b.numel(), op, ": shapes ", to_string(a.shape()), " and ", to_string(b.shape()),
               " have different sizes");
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  if constexpr (kCuda) if (on_cuda("add", a, b)) return cuda::add(a, b);
  return binary(a, b, "add", [](auto x, auto y) { return x + y; });
}
Tensor sub(const Tensor& a, const Tensor& b) {
  if constexpr (kCuda) if (on_cuda("sub", a, b)) return cuda::sub(a, b);
  return binary(a, b, "sub", [](auto x, auto y) { return x - y; });
}
Tensor mul(const Tensor& a, const Tensor& b) {
  if constexpr (kCuda) if (on_cuda("mul", a, b)) return cuda::mul(a, b);
  return binary(a, b, "mul", [](auto x, auto y) { return x * y; });
}
Tensor div(const Tensor& a, const Tensor& b) {
  if constexpr (kCuda) if (on_cuda("div", a, b)) return cuda::div(a, b);
  return binary(a, b, "div", [](auto x, auto y) { return x / y; });
}

Tensor broadcast_to(const Tensor& x, const Shape& shape, double alpha) {
  if constexpr (kCuda) if (on_cuda("broadcast_to", x)) return cuda::broadcast_to(x, shape, alpha);
  Shape os = broadcast_shapes(x.shape(), shape, "broadcast_to");
  SEQLAB_CHECK(os == shape, "broadcast_to: ", to_string(x.shape()), " does not broadcast to ", to_string(shape));
  Tensor out = Tensor::empty(shape, x.dtype());
  dispatch_float(x.dtype(), "broadcast_to", [&]<typename T>() {
    const T s = static_cast<T>(alpha);
    if (alpha == 1.0) {
      broadcast_apply<T>(x.data<T>(), x.shape(), &s, Shape{}, out.data<T>(), shape, [](T v, T) { return v; });
    } else {
      broadcast_apply<T>(x.data<T>(), x.shape(), &s, Shape{}, out.data<T>(), shape, [](T v, T c) { return v * c; });
    }
  });
  return out;
}

Tensor neg(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("neg", x)) return cuda::neg(x);
  return unary_map(x, "neg", [](auto v) { return -v; });
}

Tensor add_scalar(const Tensor& x, double s) {
  if constexpr (kCuda) if (on_cuda("add_scalar", x)) return cuda::add_scalar(x, s);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "add_scalar", [&]<typename T>() {
    const T c = static_cast<T>(s);
    map1<T>(x.data<T>(), y.data<T>(), x.numel(), [c](T v) { return v + c; });
  });
  return y;
}

Tensor mul_scalar(const Tensor& x, double s) {
  if constexpr (kCuda) if (on_cuda("mul_scalar", x)) return cuda::mul_scalar(x, s);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "mul_scalar", [&]<typename T>() {
    const T c = static_cast<T>(s);
    map1<T>(x.data<T>(), y.data<T>(), x.numel(), [c](T v) { return v * c; });
  });
  return y;
}

Tensor pow_scalar(const Tensor& x, double p) {
  if constexpr (kCuda) if (on_cuda("pow_scalar", x)) return cuda::pow_scalar(x, p);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "pow_scalar", [&]<typename T>() {
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const int64_t n = x.numel();
    const T c = static_cast<T>(p);
    if (p == 2.0) map1<T>(px, py, n, [](T v) { return v * v; });
    else if (p == 1.0) map1<T>(px, py, n, [](T v) { return v; });
    else if (p == 0.5) map1<T>(px, py, n, [](T v) { return std::sqrt(v); });
    else if (p == -1.0) map1<T>(px, py, n, [](T v) { return T(1) / v; });
    else map1<T>(px, py, n, [c](T v) { return std::pow(v, c); });
  });
  return y;
}

Tensor pow_scalar_backward(const Tensor& dy, const Tensor& x, double p) {
  if constexpr (kCuda) if (on_cuda("pow_scalar_backward", dy, x)) return cuda::pow_scalar_backward(dy, x, p);
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  check_same_numel(dy, x, "pow_scalar_backward");
  dispatch_float(x.dtype(), "pow_scalar_backward", [&]<typename T>() {
    const T* pdy = dy.data<T>();
    const T* px = x.data<T>();
    T* pdx = dx.data<T>();
    const int64_t n = x.numel();
    const T c = static_cast<T>(p), cm1 = static_cast<T>(p - 1);
    if (p == 0.0) map2<T>(pdy, px, pdx, n, [](T, T) { return T(0); });
    else if (p == 1.0) map2<T>(pdy, px, pdx, n, [](T g, T) { return g; });
    else if (p == 2.0) map2<T>(pdy, px, pdx, n, [](T g, T v) { return g * T(2) * v; });
    else map2<T>(pdy, px, pdx, n, [c, cm1](T g, T v) { return g * c * std::pow(v, cm1); });
  });
  return dx;
}

void add_(Tensor& dst, const Tensor& src, double alpha) {
  if constexpr (kCuda) if (on_cuda("add_", dst, src)) { cuda::add_(dst, src, alpha); return; }
  if (alpha == 1.0) {
    binary_inplace(dst, src, "add_", [](auto d, auto s) { return d + s; });
  } else {
    binary_inplace(dst, src, "add_", [alpha](auto d, auto s) { return d + static_cast<decltype(d)>(alpha) * s; });
  }
}

void axpby_(Tensor& dst, double alpha, const Tensor& src, double beta) {
  if constexpr (kCuda) if (on_cuda("axpby_", dst, src)) { cuda::axpby_(dst, alpha, src, beta); return; }
  check_same_numel(dst, src, "axpby_");
  dispatch_float(dst.dtype(), "axpby_", [&]<typename T>() {
    const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
    map2<T>(dst.data<T>(), src.data<T>(), dst.data<T>(), dst.numel(), [a, b](T d, T s) { return a * d + b * s; });
  });
}

void mul_(Tensor& dst, const Tensor& src) {
  if constexpr (kCuda) if (on_cuda("mul_", dst, src)) { cuda::mul_(dst, src); return; }
  binary_inplace(dst, src, "mul_", [](auto d, auto s) { return d * s; });
}

void addcmul_(Tensor& dst, const Tensor& a, const Tensor& b, double value) {
  if constexpr (kCuda) if (on_cuda("addcmul_", dst, a, b)) { cuda::addcmul_(dst, a, b, value); return; }
  check_same_numel(dst, a, "addcmul_");
  check_same_numel(dst, b, "addcmul_");
  dispatch_float(dst.dtype(), "addcmul_", [&]<typename T>() {
    const T c = static_cast<T>(value);
    map3<T>(dst.data<T>(), a.data<T>(), b.data<T>(), dst.data<T>(), dst.numel(),
            [c](T d, T x, T y) { return d + c * x * y; });
  });
}

void scale_(Tensor& t, double s) {
  if constexpr (kCuda) if (on_cuda("scale_", t)) { cuda::scale_(t, s); return; }
  dispatch_float(t.dtype(), "scale_", [&]<typename T>() {
    const T c = static_cast<T>(s);
    map1<T>(t.data<T>(), t.data<T>(), t.numel(), [c](T v) { return v * c; });
  });
}

void fill(Tensor& t, double v) {
  if constexpr (kCuda) if (on_cuda("fill", t)) { cuda::fill(t, v); return; }
  dispatch_float(t.dtype(), "fill", [&]<typename T>() {
    const T c = static_cast<T>(v);
    T* p = t.data<T>();
    parallel_for(0, t.numel(), kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) p[i] = c;
    });
  });
}

void copy_(Tensor& dst, const Tensor& src) {
  if constexpr (kCuda) if (on_cuda("copy_", dst, src)) { cuda::copy_(dst, src); return; }
  check_same_numel(dst, src, "copy_");
  std::memcpy(dst.raw_data(), src.raw_data(), dst.nbytes());
}

}  // namespace seqlab::kernels
