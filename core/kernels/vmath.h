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
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

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

// Polynomials shared by the scalar and the vector forms, highest power first: tanh below 0.625, and
// erf below 1 (in x^2) and erfc(x) e^{x^2} on [1, 4) (in (x - 2.5) / 1.5).
inline constexpr float kTanhSmall[5] = {-5.70498872745e-3f, 2.06390887954e-2f, -5.37397155531e-2f, 1.33314422036e-1f,
                                        -3.33332819422e-1f};
inline constexpr float kErfSmall[8] = {-9.6895882785892905e-06f, 0.00011274685375811914f, -0.00084854317511693538f,
                                       0.0052211382044794761f,   -0.026865475337090237f,  0.11283783440656824f,
                                       -0.37612638552578792f,    1.1283791670800536f};
inline constexpr float kErfcBig[12] = {-3.3179310927303431e-05f, 9.5658948151970279e-05f, -0.00015413162835149394f,
                                       0.00036971301424779162f,  -0.0010070917932085591f, 0.0024242930541305621f,
                                       -0.0055716330019991095f,  0.012484594123922067f,   -0.027004977284195101f,
                                       0.056110890325010064f,    -0.11152104077211314f,   0.21080635884138291f};
// Horner's rule over c (highest power first): p = p * x + c[i], in the type of x (float or vector).
template <typename V, size_t N>
[[gnu::always_inline]] inline V horner(V x, const float (&c)[N]) {
  V p = c[0] - V{};  // c[0] in every lane (float or vector)
  for (size_t i = 1; i < N; ++i) p = p * x + c[i];
  return p;
}

// An odd polynomial below |x| = 0.625, where 1 - 2 / (e^2x + 1) would cancel, the exp form above.
[[gnu::always_inline]] inline float tanh_of(float x) {
  const float a = std::abs(x);
  const float z = x * x;
  const float small = horner(z, kTanhSmall) * z * x + x;
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
  float p = kErfSmall[0];  // Horner with fused multiply-adds: one rounding per step
  for (int i = 1; i < 8; ++i) p = std::fma(p, z, kErfSmall[i]);
  const float small = a * p;
  const float ac = std::min(std::max(a, 1.0f), 4.0f);
  const float t = (ac - 2.5f) * (1.0f / 1.5f);
  const float q = horner(t, kErfcBig);
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

// Vector forms of exp_of, exp_nonpositive_of, log_of, sigmoid_of, softplus_of on W floats (GCC
// vector extensions), W = 4, 8 or 16: one SSE, AVX2 or AVX-512 register. Lane for lane the same
// operations as the scalar functions above. The kernels that keep a block of channels or keys in a
// vector use the width of their ISA path (core/kernels/isa_target.h); these functions are
// always_inline, so each is compiled for the instruction set of the kernel that calls it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors wider than the baseline ISA: inline functions only
/// W lanes of T (float, double, int32_t) as one GCC vector: Vec<float, 8> is one AVX2 register.
template <typename T, int W>
struct VecOf {
  typedef T type __attribute__((vector_size(sizeof(T) * W)));
};
template <typename T, int W>
using Vec = typename VecOf<T, W>::type;
template <int W>
struct VecTypes {
  using f = Vec<float, W>;
  using i = Vec<int32_t, W>;
};
typedef VecTypes<4>::f f32x4;
typedef VecTypes<8>::f f32x8;
typedef VecTypes<16>::f f32x16;
typedef VecTypes<16>::i i32x16;

template <typename V>
concept FloatVec = std::is_same_v<V, f32x4> || std::is_same_v<V, f32x8> || std::is_same_v<V, f32x16>;
/// The int32 vector of V's width (what a comparison of two V returns).
template <FloatVec V>
using IntVec = decltype(V{} < V{});
/// The element type of a vector V (float for f32x8), and its number of lanes.
template <typename V>
using lane_t = std::remove_cvref_t<decltype(V{}[0])>;
template <typename V>
inline constexpr int lanes_of = static_cast<int>(sizeof(V) / sizeof(lane_t<V>));

/// v in every lane of V.
template <typename V = f32x16>
[[gnu::always_inline]] inline V splat(lane_t<V> v) {
  return v - V{};
}
/// lanes_of<V> values from p (any alignment), and back.
template <typename V>
[[gnu::always_inline]] inline V load(const lane_t<V>* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V>
[[gnu::always_inline]] inline void store(lane_t<V>* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
/// The first cnt values from p in the low lanes, the others zero (the tail of a row), and back.
template <typename V>
[[gnu::always_inline]] inline V load(const lane_t<V>* p, int cnt) {
  V v{};
  std::memcpy(&v, p, sizeof(lane_t<V>) * static_cast<size_t>(cnt));
  return v;
}
/// load(p, cnt) for a cnt known only at run time (the selective scan's channel blocks): a full
/// vector is one plain load instead of a memcpy of run-time length (a library call). Loops whose
/// cnt is a constant after inlining (for_each_vec) take load(p, cnt): the extra branch would only
/// change GCC's inlining choices there.
template <typename V>
[[gnu::always_inline]] inline V load_upto(const lane_t<V>* p, int cnt) {
  if (cnt == lanes_of<V>) return load<V>(p);
  return load<V>(p, cnt);
}
template <typename V>
[[gnu::always_inline]] inline void store(lane_t<V>* p, V v, int cnt) {
  std::memcpy(p, &v, sizeof(lane_t<V>) * static_cast<size_t>(cnt));
}

template <FloatVec V>
[[gnu::always_inline]] inline V exp_core(V xc) {
  const V k = xc * 1.44269504088896341f + 12582912.0f;
  const V n = k - 12582912.0f;
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * (V)(((IntVec<V>)k + 127) << 23);
}
template <FloatVec V>
[[gnu::always_inline]] inline V exp_of(V x) {
  V xc = x > splat<V>(-87.3f) ? x : splat<V>(-87.3f);  // NaN lanes compare false: put back at the end
  xc = xc < splat<V>(88.7f) ? xc : splat<V>(88.7f);
  V y = exp_core(xc);
  y = x < splat<V>(-87.3f) ? splat<V>(0.0f) : y;
  y = x > splat<V>(88.7f) ? splat<V>(INFINITY) : y;
  return x != x ? x : y;
}
template <FloatVec V>
[[gnu::always_inline]] inline V exp_nonpositive_of(V x) {
  const V y = exp_core(x > splat<V>(-87.3f) ? x : splat<V>(-87.3f));
  return x > splat<V>(-87.3f) ? y : splat<V>(0.0f);
}

template <FloatVec V>
[[gnu::always_inline]] inline V log_of(V x) {
  using IV = IntVec<V>;
  const IV bits = (IV)x;
  V e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, V);
  V m = (V)((bits & (int32_t)0x807fffff) | 0x3f000000);
  const auto low = m < splat<V>(0.707106781186547524f);
  e = low ? e - 1.0f : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const V z = m * m;
  V y = splat<V>(7.0376836292e-2f);
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

template <FloatVec V>
[[gnu::always_inline]] inline V sigmoid_of(V v) {
  const V e = exp_of(v < splat<V>(0.0f) ? v : -v);  // exp(-|v|)
  const V r = 1.0f / (1.0f + e);
  return v >= splat<V>(0.0f) ? r : e * r;
}

template <FloatVec V>
[[gnu::always_inline]] inline V softplus_of(V x) {
  const V e = exp_of(x < splat<V>(20.0f) ? x : splat<V>(20.0f));
  const V u = 1.0f + e;
  const V d = u - 1.0f;
  const V lg = log_of(u) * (e / d);
  const V l = d == splat<V>(0.0f) ? e : lg;
  return x > splat<V>(20.0f) ? x : l;
}

// tanh_of on W lanes: the scalar form's two branches as a select.
template <FloatVec V>
[[gnu::always_inline]] inline V tanh_of(V x) {
  using IV = IntVec<V>;
  const V a = (V)((IV)x & 0x7fffffff);
  const V z = x * x;
  const V small = horner(z, kTanhSmall) * z * x + x;
  const V big = 1.0f - 2.0f / (exp_of(2.0f * a) + 1.0f);
  const V sbig = (V)(((IV)big & 0x7fffffff) | ((IV)x & (int32_t)0x80000000));  // copysign(big, x)
  const V r = a < splat<V>(0.625f) ? small : sbig;
  return x != x ? x : r;
}

// erf_exp_of on W lanes: the scalar form's polynomials and branches as selects, without the exact
// residual lo = fma(a, a, -a^2): written a * a - hi, GCC folds it to 0 (a * a is hi) before it
// could contract it, and a per-lane fma would be a libm call on the SSE2 path. exp(-x^2) then
// carries the rounding of x^2: up to 4e-6 relative at |x| near 10 (tests/test_unary.cpp measures
// it); erf itself stays within 7e-8 of the scalar form.
template <FloatVec V>
[[gnu::always_inline]] inline V erf_exp_of(V x, V& e) {
  using IV = IntVec<V>;
  const V a = (V)((IV)x & 0x7fffffff);
  const V z = a * a;
  const V small = a * horner(z, kErfSmall);
  V ac = a > splat<V>(1.0f) ? a : splat<V>(1.0f);
  ac = ac < splat<V>(4.0f) ? ac : splat<V>(4.0f);
  const V t = (ac - 2.5f) * (1.0f / 1.5f);
  const V q = horner(t, kErfcBig);
  const V ae = a < splat<V>(10.0f) ? a : splat<V>(10.0f);
  const V hi = ae * ae;
  e = exp_of(-hi);
  const V big = 1.0f - e * q;
  V r = a < splat<V>(1.0f) ? small : big;
  r = a < splat<V>(4.0f) ? r : splat<V>(1.0f);
  r = (V)(((IV)r & 0x7fffffff) | ((IV)x & (int32_t)0x80000000));  // copysign(r, x)
  return x != x ? x : r;
}

// Sum and maximum of the lanes by halving (W/2 + W/2, ..., then (0 + 2) + (1 + 3)): a fixed order
// for each width (deterministic at any thread count; widths differ from each other in rounding).
template <FloatVec V>
[[gnu::always_inline]] inline float reduce_add(V v) {
  if constexpr (lanes_of<V> == 16) {
    return reduce_add(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                      __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
  } else if constexpr (lanes_of<V> == 8) {
    return reduce_add(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
  } else {
    return (v[0] + v[2]) + (v[1] + v[3]);
  }
}
template <FloatVec V>
[[gnu::always_inline]] inline float reduce_max(V v) {
  if constexpr (lanes_of<V> == 16) {
    const f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    const f32x8 b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    return reduce_max(a > b ? a : b);
  } else if constexpr (lanes_of<V> == 8) {
    const f32x4 a = __builtin_shufflevector(v, v, 0, 1, 2, 3), b = __builtin_shufflevector(v, v, 4, 5, 6, 7);
    return reduce_max(a > b ? a : b);
  } else {
    return std::max(std::max(v[0], v[2]), std::max(v[1], v[3]));
  }
}
#pragma GCC diagnostic pop

}  // namespace seqlab::kernels::vmath
