// Unary maths kernels: one flat parallel map per function (core/kernels/loops.h), the maths in a
// generic lambda so float and double share it. Derivatives use the output where that is cheaper.
#include "core/kernels/unary.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "core/kernels/loops.h"

namespace seqlab::kernels {
namespace {

// exp for float, branch-free so the loops around it vectorise (libm's expf is a scalar call):
// Cephes' expf (range reduction by ln 2 in two parts, degree-6 polynomial), about 1 ulp. Results
// that would be subnormal flush to 0. Double keeps std::exp.
inline float exp_of(float x) {
  float xc = x > -87.3f ? x : -87.3f;  // also maps NaN to a number; it is put back at the end
  xc = xc < 88.7f ? xc : 88.7f;
  const float t = xc * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (|t| < 2^22)
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  float y = p * scale;
  y = x < -87.3f ? 0.0f : y;
  y = x > 88.7f ? INFINITY : y;
  return x != x ? x : y;
}
inline double exp_of(double x) { return std::exp(x); }

// tanh for float, branch-free (Cephes' tanhf): an odd polynomial below |x| = 0.625, where
// 1 - 2 / (e^2x + 1) would cancel, and the exp form above. About 2 ulp.
inline float tanh_of(float x) {
  const float a = std::abs(x);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float big = 1.0f - 2.0f / (exp_of(2.0f * a) + 1.0f);
  const float r = a < 0.625f ? small : std::copysign(big, x);
  return x != x ? x : r;
}
inline double tanh_of(double x) { return std::tanh(x); }

template <typename T>
inline T sigmoid_of(T v) {
  // exp of a non-positive number never overflows; both branches are accurate in relative terms.
  const T e = exp_of(-std::abs(v));
  const T r = T(1) / (T(1) + e);
  return v >= T(0) ? r : e * r;
}
}  // namespace

Tensor exp_forward(const Tensor& x) {
  return unary_map(x, "exp", [](auto v) { return exp_of(v); });
}
Tensor exp_backward(const Tensor& dy, const Tensor& y) {
  return binary_map(dy, y, "exp_backward", [](auto g, auto v) { return g * v; });
}

Tensor log_forward(const Tensor& x) {
  return unary_map(x, "log", [](auto v) { return std::log(v); });
}
Tensor log_backward(const Tensor& dy, const Tensor& x) {
  return binary_map(dy, x, "log_backward", [](auto g, auto v) { return g / v; });
}

Tensor sqrt_forward(const Tensor& x) {
  return unary_map(x, "sqrt", [](auto v) { return std::sqrt(v); });
}
Tensor sqrt_backward(const Tensor& dy, const Tensor& y) {
  return binary_map(dy, y, "sqrt_backward", [](auto g, auto v) { return g / (v + v); });
}

Tensor tanh_forward(const Tensor& x) {
  return unary_map(x, "tanh", [](auto v) { return tanh_of(v); });
}
Tensor tanh_backward(const Tensor& dy, const Tensor& y) {
  return binary_map(dy, y, "tanh_backward", [](auto g, auto v) { return g * (decltype(v)(1) - v * v); });
}

Tensor sigmoid_forward(const Tensor& x) {
  return unary_map(x, "sigmoid", [](auto v) { return sigmoid_of(v); });
}
Tensor sigmoid_backward(const Tensor& dy, const Tensor& y) {
  return binary_map(dy, y, "sigmoid_backward", [](auto g, auto v) { return g * v * (decltype(v)(1) - v); });
}

Tensor silu_forward(const Tensor& x) {
  return unary_map(x, "silu", [](auto v) { return v * sigmoid_of(v); });
}
Tensor silu_backward(const Tensor& dy, const Tensor& x) {
  return binary_map(dy, x, "silu_backward", [](auto g, auto v) {
    using T = decltype(v);
    T s = sigmoid_of(v);
    return g * s * (T(1) + v * (T(1) - s));
  });
}

Tensor gelu_forward(const Tensor& x) {
  return unary_map(x, "gelu", [](auto v) {
    using T = decltype(v);
    return T(0.5) * v * (T(1) + std::erf(v * T(M_SQRT1_2)));
  });
}
Tensor gelu_backward(const Tensor& dy, const Tensor& x) {
  return binary_map(dy, x, "gelu_backward", [](auto g, auto v) {
    using T = decltype(v);
    const T cdf = T(0.5) * (T(1) + std::erf(v * T(M_SQRT1_2)));
    const T pdf = T(0.5 * M_2_SQRTPI * M_SQRT1_2) * std::exp(T(-0.5) * v * v);  // 1/sqrt(2 pi) e^{-v^2/2}
    return g * (cdf + v * pdf);
  });
}

Tensor softplus_forward(const Tensor& x, double threshold) {
  return unary_map(x, "softplus", [threshold](auto v) {
    using T = decltype(v);
    return v > T(threshold) ? v : std::log1p(std::exp(v));
  });
}
Tensor softplus_backward(const Tensor& dy, const Tensor& x, double threshold) {
  return binary_map(dy, x, "softplus_backward", [threshold](auto g, auto v) {
    using T = decltype(v);
    return v > T(threshold) ? g : g * sigmoid_of(v);
  });
}

Tensor relu_forward(const Tensor& x) {
  return unary_map(x, "relu", [](auto v) { return v < decltype(v)(0) ? decltype(v)(0) : v; });  // NaN passes
}
Tensor relu_backward(const Tensor& dy, const Tensor& y) {
  return binary_map(dy, y, "relu_backward", [](auto g, auto v) { return v > decltype(v)(0) ? g : decltype(v)(0); });
}

Tensor abs_forward(const Tensor& x) {
  return unary_map(x, "abs", [](auto v) { return std::abs(v); });
}
Tensor abs_backward(const Tensor& dy, const Tensor& x) {
  return binary_map(dy, x, "abs_backward", [](auto g, auto v) {
    using T = decltype(v);
    return v > T(0) ? g : (v < T(0) ? -g : T(0));
  });
}

}  // namespace seqlab::kernels
