// Branch-free float maths that GCC vectorises inside plain loops (libm's expf, erff, tanhf, log1pf
// are scalar calls that stop the vectoriser; there is no -ffast-math here). Each function has a
// double overload that calls the std:: one (gradcheck and reference paths stay exact).
//   exp_of   Cephes expf, about 1 ulp; results below the normal range flush to 0
//   exp_nonpositive_of  the same for x <= 0 (or -inf) only, cheaper (softmax arguments)
//   tanh_of  Cephes tanhf, about 2 ulp
//   log_of   Cephes logf for positive normal x, about 1 ulp
//   sigmoid_of, softplus_of (PyTorch's threshold 20), erf_of (max relative error 1.7e-7 measured)
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace seqlab::kernels::vmath {

// Cephes expf's core for xc in [-87.3, 88.7]: xc = n ln2 + r, |r| <= ln2 / 2, a degree-6
// polynomial, 2^n from the bits of the rounding constant 1.5 * 2^23 + n (its low bits hold n; the
// exponent bits shift out). About 1 ulp.
[[gnu::always_inline]] inline float exp_core(float xc) {
  const float k = xc * 1.44269504088896341f + 12582912.0f;  // round to nearest (|t| < 2^22)
  const float n = k - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((std::bit_cast<int32_t>(k) + 127) << 23);
}
[[gnu::always_inline]] inline float exp_of(float x) {
  float xc = x > -87.3f ? x : -87.3f;  // also maps NaN to a number; it is put back at the end
  xc = xc < 88.7f ? xc : 88.7f;
  float y = exp_core(xc);
  y = x < -87.3f ? 0.0f : y;
  y = x > 88.7f ? INFINITY : y;
  return x != x ? x : y;
}
// e^x for x <= 0 or -inf (scores minus a row max or a logsumexp): exp_of without the overflow and
// NaN handling, a third fewer instructions where the exponentials cost as much as the products.
[[gnu::always_inline]] inline float exp_nonpositive_of(float x) {
  const float y = exp_core(x > -87.3f ? x : -87.3f);
  return x > -87.3f ? y : 0.0f;
}
[[gnu::always_inline]] inline double exp_of(double x) { return std::exp(x); }

// An odd polynomial below |x| = 0.625, where 1 - 2 / (e^2x + 1) would cancel, the exp form above.
[[gnu::always_inline]] inline float tanh_of(float x) {
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
[[gnu::always_inline]] inline double tanh_of(double x) { return std::tanh(x); }

// x = m 2^e with m in [sqrt(1/2), sqrt(2)); log(m) by Cephes' degree-9 polynomial in m - 1.
// For positive normal finite x (the callers guarantee it).
[[gnu::always_inline]] inline float log_of(float x) {
  const int32_t bits = std::bit_cast<int32_t>(x);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  float m = std::bit_cast<float>((bits & 0x807fffff) | 0x3f000000);  // [0.5, 1)
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}
[[gnu::always_inline]] inline double log_of(double x) { return std::log(x); }

template <typename T>
[[gnu::always_inline]] inline T sigmoid_of(T v) {
  // exp of a non-positive number never overflows; both branches are accurate in relative terms.
  const T e = exp_of(-std::abs(v));
  const T r = T(1) / (T(1) + e);
  return v >= T(0) ? r : e * r;
}

// softplus(x) = log1p(exp(x)), x above PyTorch's threshold 20 returned as is. log1p(e) is
// log(u) * e / (u - 1) with u = 1 + e (u - 1 is exact), which keeps log1p's accuracy for small e.
[[gnu::always_inline]] inline float softplus_of(float x) {
  const float e = exp_of(x < 20.0f ? x : 20.0f);
  const float u = 1.0f + e;
  const float d = u - 1.0f;
  const float lg = log_of(u) * (e / d);  // inf or NaN when d == 0, then not selected (a guarded
  const float l = d == 0.0f ? e : lg;     // divisor would stop GCC's if-conversion)
  return x > 20.0f ? x : l;
}
[[gnu::always_inline]] inline double softplus_of(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// erf(x): below |x| = 1 an odd polynomial x P(x^2) (least-squares fit of erf(x)/x in relative
// error; Horner by std::fma, a single instruction with -march=native); on [1, 4)
// 1 - exp(-x^2) R(x) with R a degree-11 polynomial in (x - 2.5) / 1.5 fitted to erfc(x) e^{x^2},
// and x^2 split into hi + lo so exp(-x^2) = exp(-hi) (1 - lo) keeps float's precision; 1 from 4
// on (erfc(4) = 1.5e-8 rounds away). Max relative error 1.7e-7 over [-6, 6] (tests/test_unary.cpp).
// erf(x), and through `e` exp(-x^2) (the Gaussian density's factor, flushed to 0 beyond |x| = 9.3),
// which the [1, 4) branch needs anyway: GELU's backward takes both from one call.
[[gnu::always_inline]] inline float erf_exp_of(float x, float& e) {
  const float a = std::abs(x);
  const float z = a * a;
  float p = -9.6895882785892905e-06f;  // Horner with fused multiply-adds: one rounding per step
  p = std::fma(p, z, 0.00011274685375811914f);
  p = std::fma(p, z, -0.00084854317511693538f);
  p = std::fma(p, z, 0.0052211382044794761f);
  p = std::fma(p, z, -0.026865475337090237f);
  p = std::fma(p, z, 0.11283783440656824f);
  p = std::fma(p, z, -0.37612638552578792f);
  p = std::fma(p, z, 1.1283791670800536f);
  const float small = a * p;
  const float ac = std::min(std::max(a, 1.0f), 4.0f);
  const float t = (ac - 2.5f) * (1.0f / 1.5f);
  float q = -3.3179310927303431e-05f;
  q = q * t + 9.5658948151970279e-05f;
  q = q * t - 0.00015413162835149394f;
  q = q * t + 0.00036971301424779162f;
  q = q * t - 0.0010070917932085591f;
  q = q * t + 0.0024242930541305621f;
  q = q * t - 0.0055716330019991095f;
  q = q * t + 0.012484594123922067f;
  q = q * t - 0.027004977284195101f;
  q = q * t + 0.056110890325010064f;
  q = q * t - 0.11152104077211314f;
  q = q * t + 0.21080635884138291f;
  const float ae = std::min(a, 10.0f);     // = ac on [1, 4), where erf uses it; keeps ae^2 finite
  const float hi = ae * ae;
  const float lo = std::fma(ae, ae, -hi);  // exact residual (a float->double product here stops the vectoriser)
  e = exp_of(-hi) * (1.0f - lo);
  const float big = 1.0f - e * q;
  float r = a < 1.0f ? small : big;
  r = a < 4.0f ? r : 1.0f;
  r = std::copysign(r, x);
  return x != x ? x : r;
}
[[gnu::always_inline]] inline float erf_of(float x) {
  float e;
  return erf_exp_of(x, e);
}
[[gnu::always_inline]] inline double erf_of(double x) { return std::erf(x); }
[[gnu::always_inline]] inline double erf_exp_of(double x, double& e) {
  e = std::exp(-x * x);
  return std::erf(x);
}

// Vector forms of exp_of, log_of, sigmoid_of, softplus_of on 16 floats (GCC/clang vector
// extensions: one AVX-512 register with -march=native here, split into narrower registers
// elsewhere). Lane for lane the same operations as the scalar functions above. Used by kernels
// that keep a block of 16 channels in a vector (the selective scan).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte vectors without AVX-512: inline functions only
typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));

[[gnu::always_inline]] inline f32x16 splat(float v) { return v - f32x16{}; }

[[gnu::always_inline]] inline f32x16 exp_core(f32x16 xc) {
  const f32x16 k = xc * 1.44269504088896341f + 12582912.0f;
  const f32x16 n = k - 12582912.0f;
  f32x16 r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  f32x16 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * (f32x16)(((i32x16)k + 127) << 23);
}
[[gnu::always_inline]] inline f32x16 exp_of(f32x16 x) {
  f32x16 xc = x > splat(-87.3f) ? x : splat(-87.3f);  // NaN lanes compare false: put back at the end
  xc = xc < splat(88.7f) ? xc : splat(88.7f);
  f32x16 y = exp_core(xc);
  y = x < splat(-87.3f) ? splat(0.0f) : y;
  y = x > splat(88.7f) ? splat(INFINITY) : y;
  return x != x ? x : y;
}
[[gnu::always_inline]] inline f32x16 exp_nonpositive_of(f32x16 x) {
  const f32x16 y = exp_core(x > splat(-87.3f) ? x : splat(-87.3f));
  return x > splat(-87.3f) ? y : splat(0.0f);
}

[[gnu::always_inline]] inline f32x16 log_of(f32x16 x) {
  const i32x16 bits = (i32x16)x;
  f32x16 e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, f32x16);
  f32x16 m = (f32x16)((bits & (int32_t)0x807fffff) | 0x3f000000);
  const auto low = m < splat(0.707106781186547524f);
  e = low ? e - 1.0f : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const f32x16 z = m * m;
  f32x16 y = splat(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

[[gnu::always_inline]] inline f32x16 sigmoid_of(f32x16 v) {
  const f32x16 e = exp_of(v < splat(0.0f) ? v : -v);  // exp(-|v|)
  const f32x16 r = 1.0f / (1.0f + e);
  return v >= splat(0.0f) ? r : e * r;
}

[[gnu::always_inline]] inline f32x16 softplus_of(f32x16 x) {
  const f32x16 e = exp_of(x < splat(20.0f) ? x : splat(20.0f));
  const f32x16 u = 1.0f + e;
  const f32x16 d = u - 1.0f;
  const f32x16 lg = log_of(u) * (e / d);
  const f32x16 l = d == splat(0.0f) ? e : lg;
  return x > splat(20.0f) ? x : l;
}
// Sum of the 16 lanes by halving (8 + 8, 4 + 4, 2 + 2, 1 + 1): a fixed order, three shuffles.
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
[[gnu::always_inline]] inline float reduce_add(f32x16 v) {
  const f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}
#pragma GCC diagnostic pop

}  // namespace seqlab::kernels::vmath
