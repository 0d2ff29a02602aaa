// Elementwise kernels on the device (twins of core/kernels/elementwise.cpp). One thread per output
// element in a grid-stride loop. Binary ops with broadcasting are planned once on the host as on the
// CPU (size-1 dims dropped, adjacent dims merged while both operands stay contiguous across them); an
// equal-shape or scalar-operand op is a flat map with operand strides 0 or 1, anything else walks the
// plan's multi-index per element (32-bit index arithmetic when the output has fewer than 2^31 elements).
// Products and sums use the _rn intrinsics, which nvcc never fuses into an FMA, so every result is
// rounded as the CPU's (built without FP contraction) rounds it: bit-identical where the CPU's maths
// is plain IEEE arithmetic.
#include "core/cuda/common.cuh"
#include "core/cuda/elementwise.h"
#include "core/kernels/elementwise.h"

namespace seqlab::cuda {
namespace {

// --- IEEE-rounded arithmetic (no contraction) and maths overloads for float and double ---
__device__ __forceinline__ float radd(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double radd(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float rsub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double rsub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float rmul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double rmul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float rdiv(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double rdiv(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float dsqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double dsqrt(double a) { return __dsqrt_rn(a); }
__device__ __forceinline__ float dpow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double dpow(double a, double b) { return pow(a, b); }

// --- functors: f(a, b) of the binary ops ---
template <typename T>
struct AddOp {
  __device__ T operator()(T x, T y) const { return radd(x, y); }
};
template <typename T>
struct SubOp {
  __device__ T operator()(T x, T y) const { return rsub(x, y); }
};
template <typename T>
struct MulOp {
  __device__ T operator()(T x, T y) const { return rmul(x, y); }
};
template <typename T>
struct DivOp {
  __device__ T operator()(T x, T y) const { return rdiv(x, y); }
};
template <typename T>
struct AddScaledOp {  // d + alpha * s
  T alpha;
  __device__ T operator()(T d, T s) const { return radd(d, rmul(alpha, s)); }
};
template <typename T>
struct FirstOp {  // broadcast_to with alpha 1: the value itself
  __device__ T operator()(T v, T) const { return v; }
};
template <typename T>
struct FirstScaledOp {  // broadcast_to: v * alpha
  T c;
  __device__ T operator()(T v, T) const { return rmul(v, c); }
};

// --- functors of one operand ---
template <typename T>
struct NegOp {
  __device__ T operator()(T v) const { return -v; }
};
template <typename T>
struct AddScalarOp {
  T c;
  __device__ T operator()(T v) const { return radd(v, c); }
};
template <typename T>
struct MulScalarOp {
  T c;
  __device__ T operator()(T v) const { return rmul(v, c); }
};
template <typename T>
struct SquareOp {
  __device__ T operator()(T v) const { return rmul(v, v); }
};
template <typename T>
struct IdentityOp {
  __device__ T operator()(T v) const { return v; }
};
template <typename T>
struct SqrtOp {
  __device__ T operator()(T v) const { return dsqrt(v); }
};
template <typename T>
struct ReciprocalOp {
  __device__ T operator()(T v) const { return rdiv(T(1), v); }
};
template <typename T>
struct PowOp {
  T c;
  __device__ T operator()(T v) const { return dpow(v, c); }
};

// --- pow_scalar_backward and the two-operand in-place updates: f(a, b) without broadcasting ---
template <typename T>
struct ZeroGradOp {
  __device__ T operator()(T, T) const { return T(0); }
};
template <typename T>
struct PassGradOp {
  __device__ T operator()(T g, T) const { return g; }
};
template <typename T>
struct SquareGradOp {  // g * 2 * v
  __device__ T operator()(T g, T v) const { return rmul(rmul(g, T(2)), v); }
};
template <typename T>
struct PowGradOp {  // g * c * v^(c - 1)
  T c, cm1;
  __device__ T operator()(T g, T v) const { return rmul(rmul(g, c), dpow(v, cm1)); }
};
template <typename T>
struct AxpbyOp {  // a * d + b * s
  T a, b;
  __device__ T operator()(T d, T s) const { return radd(rmul(a, d), rmul(b, s)); }
};
template <typename T>
struct AddcmulOp {  // d + c * x * y
  T c;
  __device__ T operator()(T d, T x, T y) const { return radd(d, rmul(rmul(c, x), y)); }
};

// --- kernels ---
template <typename T, typename F>
__global__ void map1_kernel(const T* x, T* y, int64_t n, F f) {
  SEQLAB_CUDA_LOOP(i, n) y[i] = f(x[i]);
}

// out[i] = f(a[i * ia], b[i * ib]), ia and ib in {0, 1}; out may alias a or b.
template <typename T, typename F>
__global__ void map2_kernel(const T* a, int64_t ia, const T* b, int64_t ib, T* out, int64_t n, F f) {
  SEQLAB_CUDA_LOOP(i, n) out[i] = f(a[i * ia], b[i * ib]);
}

template <typename T, typename F>
__global__ void map3_kernel(const T* a, const T* b, const T* c, T* out, int64_t n, F f) {
  SEQLAB_CUDA_LOOP(i, n) out[i] = f(a[i], b[i], c[i]);
}

// The coalesced iteration space of out = f(a, b), outermost dim first (by value, as a kernel argument).
constexpr int kMaxDims = 32;
template <typename Idx>
struct Plan {
  int d = 0;
  Idx size[kMaxDims], sa[kMaxDims], sb[kMaxDims];
};

// out[i] = f(a[oa(i)], b[ob(i)]) with the offsets from i's multi-index over the plan. out may alias a
// when a has the output's shape (then oa(i) = i: each element is read and written by one thread).
template <typename T, typename Idx, typename F>
__global__ void broadcast_kernel(const T* a, const T* b, T* out, Idx n, Plan<Idx> p, F f) {
  const Idx stride = static_cast<Idx>(blockDim.x) * gridDim.x;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    Idx rem = i, oa = 0, ob = 0;
    for (int k = p.d - 1; k > 0; --k) {
      const Idx q = rem / p.size[k];
      const Idx idx = rem - q * p.size[k];
      rem = q;
      oa += idx * p.sa[k];
      ob += idx * p.sb[k];
    }
    oa += rem * p.sa[0];
    ob += rem * p.sb[0];
    out[i] = f(a[oa], b[ob]);
  }
}

// --- host side ---
using HostPlan = kernels::BroadcastPlan;  // core/kernels/elementwise.h

template <typename Idx>
Plan<Idx> device_plan(const HostPlan& h, const char* op) {
  SEQLAB_CHECK(h.size.size() <= static_cast<size_t>(kMaxDims), op, ": the broadcast needs ", h.size.size(),
               " dims after merging, the CUDA kernel handles at most ", kMaxDims);
  Plan<Idx> p;
  p.d = static_cast<int>(h.size.size());
  for (int k = 0; k < p.d; ++k) {
    p.size[k] = static_cast<Idx>(h.size[k]);
    p.sa[k] = static_cast<Idx>(h.sa[k]);
    p.sb[k] = static_cast<Idx>(h.sb[k]);
  }
  return p;
}

// out (shape os, contiguous) = f(a, b) with a and b broadcast to os; out may alias a when as == os.
template <typename T, typename F>
void broadcast_apply(const T* a, const Shape& as, const T* b, const Shape& bs, T* out, const Shape& os, F f,
                     const char* op) {
  const int64_t n = numel(os);
  if (n == 0) return;
  if (as == os && bs == os) {
    map2_kernel<<<blocks_for(n), 256, 0, stream()>>>(a, 1, b, 1, out, n, f);
  } else if (as == os && numel(bs) == 1) {
    map2_kernel<<<blocks_for(n), 256, 0, stream()>>>(a, 1, b, 0, out, n, f);
  } else if (bs == os && numel(as) == 1) {
    map2_kernel<<<blocks_for(n), 256, 0, stream()>>>(a, 0, b, 1, out, n, f);
  } else {
    const HostPlan h = kernels::broadcast_plan(os, as, bs);
    if (n <= INT32_MAX) {
      broadcast_kernel<<<blocks_for(n), 256, 0, stream()>>>(a, b, out, static_cast<uint32_t>(n),
                                                            device_plan<uint32_t>(h, op), f);
    } else {
      broadcast_kernel<<<blocks_for(n), 256, 0, stream()>>>(a, b, out, n, device_plan<int64_t>(h, op), f);
    }
  }
  check_launch(op);
}

template <typename T, typename F>
void map1(const T* x, T* y, int64_t n, F f, const char* op) {
  if (n <= 0) return;
  map1_kernel<<<blocks_for(n), 256, 0, stream()>>>(x, y, n, f);
  check_launch(op);
}
template <typename T, typename F>
void map2(const T* a, const T* b, T* out, int64_t n, F f, const char* op) {
  if (n <= 0) return;
  map2_kernel<<<blocks_for(n), 256, 0, stream()>>>(a, 1, b, 1, out, n, f);
  check_launch(op);
}
template <typename T, typename F>
void map3(const T* a, const T* b, const T* c, T* out, int64_t n, F f, const char* op) {
  if (n <= 0) return;
  map3_kernel<<<blocks_for(n), 256, 0, stream()>>>(a, b, c, out, n, f);
  check_launch(op);
}

void check_dtypes(const Tensor& a, const Tensor& b, const char* op) {
  SEQLAB_CHECK(a.defined() && b.defined(), op, ": undefined tensor");
  SEQLAB_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", dtype_name(a.dtype()), " ", to_string(a.shape()),
               " and ", dtype_name(b.dtype()), " ", to_string(b.shape()));
}

void check_same_numel(const Tensor& a, const Tensor& b, const char* op) {
  check_dtypes(a, b, op);
  SEQLAB_CHECK(a.numel() == b.numel(), op, ": shapes ", to_string(a.shape()), " and ", to_string(b.shape()),
               " have different sizes");
}

template <template <typename> class Op>
Tensor binary(const Tensor& a, const Tensor& b, const char* op) {
  check_dtypes(a, b, op);
  Shape os = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor out = empty(os, a.dtype());
  dispatch_float(a.dtype(), op, [&]<typename T>() {
    broadcast_apply<T>(ptr<T>(a), a.shape(), ptr<T>(b), b.shape(), ptr<T>(out), os, Op<T>{}, op);
  });
  return out;
}

// In place dst = f(dst, src) with src broadcast to dst's shape, f = Op<T>{T(args)...}.
template <template <typename> class Op, typename... Args>
void binary_inplace(Tensor& dst, const Tensor& src, const char* op, Args... args) {
  check_dtypes(dst, src, op);
  Shape os = broadcast_shapes(dst.shape(), src.shape(), op);
  SEQLAB_CHECK(os == dst.shape(), op, ": ", to_string(src.shape()), " does not broadcast to the destination ",
               to_string(dst.shape()));
  dispatch_float(dst.dtype(), op, [&]<typename T>() {
    broadcast_apply<T>(ptr<T>(dst), dst.shape(), ptr<T>(src), src.shape(), ptr<T>(dst), os,
                       Op<T>{static_cast<T>(args)...}, op);
  });
}

// Fresh y = f(x) with f = Op<T>{T(args)...}.
template <template <typename> class Op, typename... Args>
Tensor unary(const Tensor& x, const char* op, Args... args) {
  SEQLAB_CHECK(x.defined(), op, ": undefined tensor");
  Tensor y = empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), op,
                 [&]<typename T>() { map1<T>(ptr<T>(x), ptr<T>(y), x.numel(), Op<T>{static_cast<T>(args)...}, op); });
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary<AddOp>(a, b, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary<SubOp>(a, b, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary<MulOp>(a, b, "mul"); }
Tensor div(const Tensor& a, const Tensor& b) { return binary<DivOp>(a, b, "div"); }

Tensor broadcast_to(const Tensor& x, const Shape& shape, double alpha) {
  SEQLAB_CHECK(x.defined(), "broadcast_to: undefined tensor");
  Shape os = broadcast_shapes(x.shape(), shape, "broadcast_to");
  SEQLAB_CHECK(os == shape, "broadcast_to: ", to_string(x.shape()), " does not broadcast to ", to_string(shape));
  Tensor out = empty(shape, x.dtype());
  dispatch_float(x.dtype(), "broadcast_to", [&]<typename T>() {
    // The second operand is x's first element as a scalar, ignored by the functor.
    const T* px = ptr<T>(x);
    if (alpha == 1.0) {
      broadcast_apply<T>(px, x.shape(), px, Shape{}, ptr<T>(out), shape, FirstOp<T>{}, "broadcast_to");
    } else {
      broadcast_apply<T>(px, x.shape(), px, Shape{}, ptr<T>(out), shape, FirstScaledOp<T>{static_cast<T>(alpha)},
                         "broadcast_to");
    }
  });
  return out;
}

Tensor neg(const Tensor& x) {
  return unary<NegOp>(x, "neg");
}

Tensor add_scalar(const Tensor& x, double s) {
  return unary<AddScalarOp>(x, "add_scalar", s);
}

Tensor mul_scalar(const Tensor& x, double s) {
  return unary<MulScalarOp>(x, "mul_scalar", s);
}

Tensor pow_scalar(const Tensor& x, double p) {
  SEQLAB_CHECK(x.defined(), "pow_scalar: undefined tensor");
  Tensor y = empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "pow_scalar", [&]<typename T>() {
    const T* px = ptr<T>(x);
    T* py = ptr<T>(y);
    const int64_t n = x.numel();
    const char* op = "pow_scalar";
    if (p == 2.0) map1<T>(px, py, n, SquareOp<T>{}, op);
    else if (p == 1.0) map1<T>(px, py, n, IdentityOp<T>{}, op);
    else if (p == 0.5) map1<T>(px, py, n, SqrtOp<T>{}, op);
    else if (p == -1.0) map1<T>(px, py, n, ReciprocalOp<T>{}, op);
    else map1<T>(px, py, n, PowOp<T>{static_cast<T>(p)}, op);
  });
  return y;
}

Tensor pow_scalar_backward(const Tensor& dy, const Tensor& x, double p) {
  SEQLAB_CHECK(x.defined(), "pow_scalar_backward: undefined tensor");
  Tensor dx = empty(x.shape(), x.dtype());
  check_same_numel(dy, x, "pow_scalar_backward");
  dispatch_float(x.dtype(), "pow_scalar_backward", [&]<typename T>() {
    const T* pdy = ptr<T>(dy);
    const T* px = ptr<T>(x);
    T* pdx = ptr<T>(dx);
    const int64_t n = x.numel();
    const char* op = "pow_scalar_backward";
    if (p == 0.0) map2<T>(pdy, px, pdx, n, ZeroGradOp<T>{}, op);
    else if (p == 1.0) map2<T>(pdy, px, pdx, n, PassGradOp<T>{}, op);
    else if (p == 2.0) map2<T>(pdy, px, pdx, n, SquareGradOp<T>{}, op);
    else map2<T>(pdy, px, pdx, n, PowGradOp<T>{static_cast<T>(p), static_cast<T>(p - 1)}, op);
  });
  return dx;
}

void add_(Tensor& dst, const Tensor& src, double alpha) {
  if (alpha == 1.0) {
    binary_inplace<AddOp>(dst, src, "add_");
  } else {
    binary_inplace<AddScaledOp>(dst, src, "add_", alpha);
  }
}

void axpby_(Tensor& dst, double alpha, const Tensor& src, double beta) {
  check_same_numel(dst, src, "axpby_");
  dispatch_float(dst.dtype(), "axpby_", [&]<typename T>() {
    map2<T>(ptr<T>(dst), ptr<T>(src), ptr<T>(dst), dst.numel(),
            AxpbyOp<T>{static_cast<T>(alpha), static_cast<T>(beta)}, "axpby_");
  });
}

void mul_(Tensor& dst, const Tensor& src) {
  binary_inplace<MulOp>(dst, src, "mul_");
}

void addcmul_(Tensor& dst, const Tensor& a, const Tensor& b, double value) {
  check_same_numel(dst, a, "addcmul_");
  check_same_numel(dst, b, "addcmul_");
  dispatch_float(dst.dtype(), "addcmul_", [&]<typename T>() {
    map3<T>(ptr<T>(dst), ptr<T>(a), ptr<T>(b), ptr<T>(dst), dst.numel(), AddcmulOp<T>{static_cast<T>(value)},
            "addcmul_");
  });
}

void scale_(Tensor& t, double s) {
  SEQLAB_CHECK(t.defined(), "scale_: undefined tensor");
  dispatch_float(t.dtype(), "scale_", [&]<typename T>() {
    map1<T>(ptr<T>(t), ptr<T>(t), t.numel(), MulScalarOp<T>{static_cast<T>(s)}, "scale_");
  });
}

void fill(Tensor& t, double v) {
  SEQLAB_CHECK(t.defined(), "fill: undefined tensor");
  dispatch_float(t.dtype(), "fill", [&]<typename T>() {
    fill(static_cast<void*>(ptr<T>(t)), t.dtype(), t.numel(), v);  // runtime's fill: static_cast<T>(v)
  });
}

void copy_(Tensor& dst, const Tensor& src) {
  check_same_numel(dst, src, "copy_");
  SEQLAB_CHECK(dst.device() == Device::cuda && src.device() == Device::cuda, "copy_: expected two cuda tensors");
  if (dst.nbytes() == 0 || dst.shares_storage(src)) return;
  copy_d2d(dst.device_ptr(), src.device_ptr(), dst.nbytes());
}

}  // namespace seqlab::cuda
