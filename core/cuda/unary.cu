// Unary maths kernels on the device (twins of core/kernels/unary.cpp): one flat grid-stride map per
// function, the maths in a functor templated on float/double with the CPU's formulas (exact GELU
// with erf, softplus returning x above the threshold, the sign-split sigmoid). Transcendentals are
// CUDA's (expf, tanhf, erff, log1pf: a few ulp, where the CPU uses its own float approximations);
// products and sums use the _rn intrinsics (never fused into an FMA), so the derivatives that are
// plain arithmetic (exp, log, sqrt, tanh, sigmoid, relu, abs backward) round as the CPU's do.
#include "core/cuda/common.cuh"
#include "core/cuda/unary.h"

namespace seqlab::cuda {
namespace {

__device__ __forceinline__ float radd(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double radd(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float rsub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double rsub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float rmul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double rmul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float rdiv(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double rdiv(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float dexp(float a) { return expf(a); }
__device__ __forceinline__ double dexp(double a) { return exp(a); }
__device__ __forceinline__ float dlog(float a) { return logf(a); }
__device__ __forceinline__ double dlog(double a) { return log(a); }
__device__ __forceinline__ float dlog1p(float a) { return log1pf(a); }
__device__ __forceinline__ double dlog1p(double a) { return log1p(a); }
__device__ __forceinline__ float dsqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double dsqrt(double a) { return __dsqrt_rn(a); }
__device__ __forceinline__ float dtanh(float a) { return tanhf(a); }
__device__ __forceinline__ double dtanh(double a) { return tanh(a); }
__device__ __forceinline__ float derf(float a) { return erff(a); }
__device__ __forceinline__ double derf(double a) { return erf(a); }
__device__ __forceinline__ float dabs(float a) { return fabsf(a); }
__device__ __forceinline__ double dabs(double a) { return fabs(a); }

constexpr double kSqrt1_2 = 0.70710678118654752440;     // 1 / sqrt(2), M_SQRT1_2
constexpr double kInvSqrt2Pi = 0.5 * 1.12837916709551257390 * 0.70710678118654752440;  // as the CPU's constant

// 1 / (1 + exp(-x)): exp of a non-positive number only (as vmath::sigmoid_of).
template <typename T>
__device__ __forceinline__ T sigmoid_of(T v) {
  const T e = dexp(-dabs(v));
  const T r = rdiv(T(1), radd(T(1), e));
  return v >= T(0) ? r : rmul(e, r);
}

// --- forward functors f(x) ---
template <typename T>
struct ExpF {
  __device__ T operator()(T v) const { return dexp(v); }
};
template <typename T>
struct LogF {
  __device__ T operator()(T v) const { return dlog(v); }
};
template <typename T>
struct SqrtF {
  __device__ T operator()(T v) const { return dsqrt(v); }
};
template <typename T>
struct TanhF {
  __device__ T operator()(T v) const { return dtanh(v); }
};
template <typename T>
struct SigmoidF {
  __device__ T operator()(T v) const { return sigmoid_of(v); }
};
template <typename T>
struct SiluF {
  __device__ T operator()(T v) const { return rmul(v, sigmoid_of(v)); }
};
template <typename T>
struct GeluF {  // 0.5 x (1 + erf(x / sqrt 2))
  __device__ T operator()(T v) const {
    return rmul(rmul(T(0.5), v), radd(T(1), derf(rmul(v, T(kSqrt1_2)))));
  }
};
template <typename T>
struct SoftplusF {  // x above the threshold, else log1p(exp(x))
  T threshold;
  __device__ T operator()(T v) const { return v > threshold ? v : dlog1p(dexp(v)); }
};
template <typename T>
struct ReluF {  // NaN passes
  __device__ T operator()(T v) const { return v < T(0) ? T(0) : v; }
};
template <typename T>
struct AbsF {
  __device__ T operator()(T v) const { return dabs(v); }
};

// --- backward functors f(dy, x or y) ---
template <typename T>
struct ExpB {  // g y
  __device__ T operator()(T g, T y) const { return rmul(g, y); }
};
template <typename T>
struct LogB {  // g / x
  __device__ T operator()(T g, T x) const { return rdiv(g, x); }
};
template <typename T>
struct SqrtB {  // g / (2 y)
  __device__ T operator()(T g, T y) const { return rdiv(g, radd(y, y)); }
};
template <typename T>
struct TanhB {  // g (1 - y^2)
  __device__ T operator()(T g, T y) const { return rmul(g, rsub(T(1), rmul(y, y))); }
};
template <typename T>
struct SigmoidB {  // g y (1 - y)
  __device__ T operator()(T g, T y) const { return rmul(rmul(g, y), rsub(T(1), y)); }
};
template <typename T>
struct SiluB {  // g s (1 + x (1 - s))
  __device__ T operator()(T g, T v) const {
    const T s = sigmoid_of(v);
    return rmul(rmul(g, s), radd(T(1), rmul(v, rsub(T(1), s))));
  }
};
template <typename T>
struct GeluB {  // g (Phi(x) + x phi(x))
  __device__ T operator()(T g, T v) const {
    const T u = rmul(v, T(kSqrt1_2));
    const T e = dexp(-rmul(u, u));  // e^{-x^2/2}
    const T cdf = rmul(T(0.5), radd(T(1), derf(u)));
    const T pdf = rmul(T(kInvSqrt2Pi), e);
    return rmul(g, radd(cdf, rmul(v, pdf)));
  }
};
template <typename T>
struct SoftplusB {  // g where x > threshold, else g sigmoid(x)
  T threshold;
  __device__ T operator()(T g, T v) const { return v > threshold ? g : rmul(g, sigmoid_of(v)); }
};
template <typename T>
struct ReluB {  // g where y > 0
  __device__ T operator()(T g, T y) const { return y > T(0) ? g : T(0); }
};
template <typename T>
struct AbsB {  // g sign(x), 0 at 0
  __device__ T operator()(T g, T v) const { return v > T(0) ? g : (v < T(0) ? -g : T(0)); }
};

template <typename T, typename F>
__global__ void map1_kernel(const T* x, T* y, int64_t n, F f) {
  SEQLAB_CUDA_LOOP(i, n) y[i] = f(x[i]);
}
template <typename T, typename F>
__global__ void map2_kernel(const T* a, const T* b, T* y, int64_t n, F f) {
  SEQLAB_CUDA_LOOP(i, n) y[i] = f(a[i], b[i]);
}

// Fresh y = f(x), f = Op<T>{T(args)...} (as loops.h's unary_map).
template <template <typename> class Op, typename... Args>
Tensor unary_map(const Tensor& x, const char* op, Args... args) {
  SEQLAB_CHECK(x.defined(), op, ": undefined tensor");
  Tensor y = empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), op, [&]<typename T>() {
    const int64_t n = x.numel();
    if (n == 0) return;
    map1_kernel<<<blocks_for(n), 256, 0, stream()>>>(ptr<T>(x), ptr<T>(y), n, Op<T>{static_cast<T>(args)...});
    check_launch(op);
  });
  return y;
}

// Fresh y = f(a, b) for same-shape, same-dtype a and b (as loops.h's binary_map).
template <template <typename> class Op, typename... Args>
Tensor binary_map(const Tensor& a, const Tensor& b, const char* op, Args... args) {
  SEQLAB_CHECK(a.defined() && b.defined(), op, ": undefined tensor");
  SEQLAB_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype(), op, ": expected equal shapes and dtypes, got ",
               to_string(a.shape()), " ", dtype_name(a.dtype()), " and ", to_string(b.shape()), " ",
               dtype_name(b.dtype()));
  Tensor y = empty(a.shape(), a.dtype());
  dispatch_float(a.dtype(), op, [&]<typename T>() {
    const int64_t n = a.numel();
    if (n == 0) return;
    map2_kernel<<<blocks_for(n), 256, 0, stream()>>>(ptr<T>(a), ptr<T>(b), ptr<T>(y), n,
                                                     Op<T>{static_cast<T>(args)...});
    check_launch(op);
  });
  return y;
}

}  // namespace

Tensor exp_forward(const Tensor& x) { return unary_map<ExpF>(x, "exp"); }
Tensor exp_backward(const Tensor& dy, const Tensor& y) { return binary_map<ExpB>(dy, y, "exp_backward"); }
Tensor log_forward(const Tensor& x) { return unary_map<LogF>(x, "log"); }
Tensor log_backward(const Tensor& dy, const Tensor& x) { return binary_map<LogB>(dy, x, "log_backward"); }
Tensor sqrt_forward(const Tensor& x) { return unary_map<SqrtF>(x, "sqrt"); }
Tensor sqrt_backward(const Tensor& dy, const Tensor& y) { return binary_map<SqrtB>(dy, y, "sqrt_backward"); }
Tensor tanh_forward(const Tensor& x) { return unary_map<TanhF>(x, "tanh"); }
Tensor tanh_backward(const Tensor& dy, const Tensor& y) { return binary_map<TanhB>(dy, y, "tanh_backward"); }
Tensor sigmoid_forward(const Tensor& x) { return unary_map<SigmoidF>(x, "sigmoid"); }
Tensor sigmoid_backward(const Tensor& dy, const Tensor& y) {
  return binary_map<SigmoidB>(dy, y, "sigmoid_backward");
}
Tensor silu_forward(const Tensor& x) { return unary_map<SiluF>(x, "silu"); }
Tensor silu_backward(const Tensor& dy, const Tensor& x) { return binary_map<SiluB>(dy, x, "silu_backward"); }
Tensor gelu_forward(const Tensor& x) { return unary_map<GeluF>(x, "gelu"); }
Tensor gelu_backward(const Tensor& dy, const Tensor& x) { return binary_map<GeluB>(dy, x, "gelu_backward"); }
Tensor softplus_forward(const Tensor& x, double threshold) {
  return unary_map<SoftplusF>(x, "softplus", threshold);
}
Tensor softplus_backward(const Tensor& dy, const Tensor& x, double threshold) {
  return binary_map<SoftplusB>(dy, x, "softplus_backward", threshold);
}
Tensor relu_forward(const Tensor& x) { return unary_map<ReluF>(x, "relu"); }
Tensor relu_backward(const Tensor& dy, const Tensor& y) { return binary_map<ReluB>(dy, y, "relu_backward"); }
Tensor abs_forward(const Tensor& x) { return unary_map<AbsF>(x, "abs"); }
Tensor abs_backward(const Tensor& dy, const Tensor& x) { return binary_map<AbsB>(dy, x, "abs_backward"); }

}  // namespace seqlab::cuda
