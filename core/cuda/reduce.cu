// Reductions on the device (core/cuda/reduce.h). With the CPU's plan (core/kernels/reduce_plan.h), a
// reduction is (A, K, B) -> (A, B) after dropping size-1 axes and merging adjacent reduced / kept axes;
// several separated reduced groups are reduced one at a time, innermost first. One (A, K, B) step:
//   contiguous rows (B == 1): one block per (row, chunk of threads * 64 elements); each thread adds
//     its strided elements in order, then a fixed warp-shuffle tree and the warps' sums in order;
//   columns (B > 1): one thread per (a, chunk of 256 rows, b), adding its rows in order (reads
//     coalesced along b).
// More than one chunk per output: the partials (A, G, B) are reduced again the same way. The order
// of every sum depends only on the shape, so results are bit-identical from run to run.
#include "core/cuda/reduce.h"

#include <algorithm>
#include <cmath>

#include "core/cuda/common.cuh"
#include "core/kernels/reduce_plan.h"

namespace seqlab::cuda {
namespace {

constexpr int kMaxThreads = 256;
constexpr int64_t kPerThread = 64;  // elements per thread in one chunk of a contiguous row
constexpr int64_t kColRows = 256;   // rows per thread in one chunk of a column sum
constexpr int kMaxDims = 16;

// Threads per block for lines of n elements: a power of two in [32, 256].
int threads_for(int64_t n) {
  int t = 32;
  while (t < kMaxThreads && t < n) t *= 2;
  return t;
}

// --- loaders: element i of the (A, K, B) view, as the accumulator type ---

template <typename T>
struct Plain {
  const T* p;
  __device__ T operator()(int64_t i) const { return p[i]; }
};

template <typename T>
struct Square {
  const T* p;
  __device__ double operator()(int64_t i) const {
    const double v = static_cast<double>(p[i]);
    return v * v;
  }
};

template <typename T>
struct Product {
  const T* a;
  const T* b;
  __device__ T operator()(int64_t i) const { return a[i] * b[i]; }
};

// Sum over the block (blockDim.x a multiple of 32): a shuffle tree per warp, then the warps' sums in
// order by thread 0. Every thread gets the result. sh: 33 slots.
template <typename V>
__device__ V block_sum(V v, V* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  __syncthreads();  // an earlier call's readers of sh are done
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    V r = sh[0];
    for (int w = 1; w < nw; ++w) r += sh[w];
    sh[32] = r;
  }
  __syncthreads();
  return sh[32];
}

// out[a * G + g] = sum of load(a * K + k) over k in [g * chunk, min(K, (g + 1) * chunk)).
template <typename Acc, typename L>
__global__ void row_sum_kernel(L load, int64_t A, int64_t K, int64_t G, int64_t chunk, Acc* __restrict__ out) {
  __shared__ Acc sh[33];
  for (int64_t u = blockIdx.x; u < A * G; u += gridDim.x) {
    const int64_t a = u / G, g = u % G;
    const int64_t lo = g * chunk, hi = min(K, lo + chunk);
    Acc s = Acc(0);
    for (int64_t k = lo + threadIdx.x; k < hi; k += blockDim.x) s += load(a * K + k);
    s = block_sum<Acc>(s, sh);
    if (threadIdx.x == 0) out[u] = s;
  }
}

// out[(a * G + g) * B + b] = sum of load((a * K + k) * B + b) over the rows k of chunk g, in order.
template <typename Acc, typename L>
__global__ void col_sum_kernel(L load, int64_t A, int64_t K, int64_t B, int64_t G, Acc* __restrict__ out) {
  SEQLAB_CUDA_LOOP(u, A * G * B) {
    const int64_t b = u % B, ag = u / B, g = ag % G, a = ag / G;
    const int64_t lo = g * kColRows, hi = min(K, lo + kColRows);
    Acc s = Acc(0);
    for (int64_t k = lo; k < hi; ++k) s += load((a * K + k) * B + b);
    out[u] = s;
  }
}

// out[a * B + b] = sum_k load((a * K + k) * B + b); out is a device buffer of A * B elements.
template <typename Acc, typename L>
void reduce_akb(const L& load, int64_t A, int64_t K, int64_t B, Acc* out) {
  if (A * B == 0) return;
  if (K == 0) {
    memset_zero(out, static_cast<size_t>(A * B) * sizeof(Acc));
    return;
  }
  Tensor part;
  Acc* dst = out;
  int64_t G;
  if (B == 1) {
    const int threads = threads_for(K);
    const int64_t chunk = threads * kPerThread;
    G = (K + chunk - 1) / chunk;
    if (G > 1) {
      part = empty({A, G}, dtype_of<Acc>());
      dst = ptr<Acc>(part);
    }
    row_sum_kernel<Acc><<<blocks_for(A * G, 1), threads, 0, stream()>>>(load, A, K, G, chunk, dst);
    check_launch("row_sum_kernel");
  } else {
    G = (K + kColRows - 1) / kColRows;
    if (G > 1) {
      part = empty({A, G, B}, dtype_of<Acc>());
      dst = ptr<Acc>(part);
    }
    col_sum_kernel<Acc><<<blocks_for(A * G * B), 256, 0, stream()>>>(load, A, K, B, G, dst);
    check_launch("col_sum_kernel");
  }
  if (G > 1) reduce_akb<Acc>(Plain<Acc>{dst}, A, G, B, out);
}

// out = x summed over the sorted axes (out holds numel(x) / prod(reduced sizes) elements).
template <typename T>
void sum_impl(const Tensor& x, const std::vector<int64_t>& axes, const Tensor& out) {
  const Shape& xs = x.shape();
  if (x.numel() == 0) {
    memset_zero(out.device_ptr(), out.nbytes());
    return;
  }
  const std::vector<kernels::SumStep> steps = kernels::plan_sum(xs, axes);
  if (steps.empty()) {
    copy_d2d(out.device_ptr(), x.device_ptr(), x.nbytes());
    return;
  }
  Tensor buf[2];
  const T* src = ptr<T>(x);
  for (size_t step = 0; step < steps.size(); ++step) {
    const kernels::SumStep& st = steps[step];
    T* dst = ptr<T>(out);
    if (step + 1 < steps.size()) {
      buf[step % 2] = empty({st.A * st.B}, dtype_of<T>());
      dst = ptr<T>(buf[step % 2]);
    }
    reduce_akb<T>(Plain<T>{src}, st.A, st.K, st.B, dst);
    src = dst;
  }
}

Tensor sum_into(const Tensor& x, const std::vector<int64_t>& axes, const Shape& out_shape, const char* op) {
  Tensor out = empty(out_shape, x.dtype());
  dispatch_float(x.dtype(), op, [&]<typename T>() { sum_impl<T>(x, axes, out); });
  return out;
}

template <typename T>
__global__ void scale_kernel(T* p, int64_t n, T c) {
  SEQLAB_CUDA_LOOP(i, n) p[i] = p[i] * c;
}

// t *= s as the CPU's scale_ does it (the factor rounded to T first).
void scale_in_place(const Tensor& t, double s) {
  if (t.numel() == 0) return;
  dispatch_float(t.dtype(), "scale_", [&]<typename T>() {
    scale_kernel<T><<<blocks_for(t.numel()), 256, 0, stream()>>>(ptr<T>(t), t.numel(), static_cast<T>(s));
  });
  check_launch("scale_kernel");
}

// The broadcast product a * b (NumPy rules), as kernels::mul computes it.
struct Bcast {
  int d = 0;
  int64_t size[kMaxDims];
  int64_t sa[kMaxDims];
  int64_t sb[kMaxDims];
};

template <typename T>
__global__ void bcast_mul_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n,
                                 Bcast p) {
  SEQLAB_CUDA_LOOP(i, n) {
    int64_t r = i, oa = 0, ob = 0;
    for (int k = p.d - 1; k >= 0; --k) {
      const int64_t idx = r % p.size[k];
      r /= p.size[k];
      oa += idx * p.sa[k];
      ob += idx * p.sb[k];
    }
    out[i] = a[oa] * b[ob];
  }
}

Tensor bcast_mul(const Tensor& a, const Tensor& b) {
  SEQLAB_CHECK(a.defined() && b.defined(), "mul", ": undefined tensor");
  SEQLAB_CHECK(a.dtype() == b.dtype(), "mul", ": dtypes differ: ", dtype_name(a.dtype()), " ", to_string(a.shape()),
               " and ", dtype_name(b.dtype()), " ", to_string(b.shape()));
  const Shape os = broadcast_shapes(a.shape(), b.shape(), "mul");
  Tensor out = empty(os, a.dtype());
  const int64_t n = out.numel();
  const size_t r = os.size();
  Bcast p;
  for (size_t i = 0; i < r; ++i) {
    if (os[i] == 1) continue;
    SEQLAB_CHECK(p.d < kMaxDims, "mul: more than ", kMaxDims, " axes in ", to_string(os));
    auto stride = [&](const Shape& s) {
      const size_t lead = r - s.size();
      if (i < lead || s[i - lead] == 1) return int64_t{0};
      int64_t st = 1;
      for (size_t j = i - lead + 1; j < s.size(); ++j) st *= s[j];
      return st;
    };
    p.size[p.d] = os[i];
    p.sa[p.d] = stride(a.shape());
    p.sb[p.d] = stride(b.shape());
    ++p.d;
  }
  dispatch_float(a.dtype(), "mul", [&]<typename T>() {
    if (n == 0) return;
    bcast_mul_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(ptr<T>(a), ptr<T>(b), ptr<T>(out), n, p);
    check_launch("bcast_mul_kernel");
  });
  return out;
}

// --- max: ties to the first position, a NaN wins once and is never displaced ---

template <typename T>
__device__ bool better(T v, T best) {
  return v > best || (v != v && best == best);
}

// Merges the candidate (v2, i2) into (v, i) (i < 0: no candidate yet): the first NaN, else the
// largest value at its first position. The winner does not depend on the merge order.
template <typename T>
__device__ void merge(T& v, int& i, T v2, int i2) {
  if (i2 < 0) return;
  if (i < 0) {
    v = v2;
    i = i2;
    return;
  }
  const bool n1 = v != v, n2 = v2 != v2;
  bool take;
  if (n1 || n2) take = n2 && (!n1 || i2 < i);
  else take = v2 > v || (v2 == v && i2 < i);
  if (take) {
    v = v2;
    i = i2;
  }
}

// B == 1: one block per row of K.
template <typename T>
__global__ void max_row_kernel(const T* __restrict__ x, int64_t A, int64_t K, T* __restrict__ val,
                               int32_t* __restrict__ idx) {
  __shared__ T sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int64_t a = blockIdx.x; a < A; a += gridDim.x) {
    const T* p = x + a * K;
    T v = T(0);
    int i = -1;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
      const T e = p[k];
      if (i < 0 || better(e, v)) {
        v = e;
        i = static_cast<int>(k);
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const T v2 = __shfl_down_sync(0xffffffffu, v, o);
      const int i2 = __shfl_down_sync(0xffffffffu, i, o);
      merge(v, i, v2, i2);
    }
    __syncthreads();
    if (lane == 0) {
      sv[warp] = v;
      si[warp] = i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      T bv = sv[0];
      int bi = si[0];
      for (int w = 1; w < nw; ++w) merge(bv, bi, sv[w], si[w]);
      val[a] = bv;
      idx[a] = bi;
    }
  }
}

// B > 1: one thread per output, scanning its column in order (reads coalesced along b).
template <typename T>
__global__ void max_col_kernel(const T* __restrict__ x, int64_t A, int64_t K, int64_t B, T* __restrict__ val,
                               int32_t* __restrict__ idx) {
  SEQLAB_CUDA_LOOP(u, A * B) {
    const int64_t a = u / B, b = u % B;
    const T* p = x + a * K * B + b;
    T v = p[0];
    int32_t id = 0;
    for (int64_t k = 1; k < K; ++k) {
      const T e = p[k * B];
      if (better(e, v)) {
        v = e;
        id = static_cast<int32_t>(k);
      }
    }
    val[u] = v;
    idx[u] = id;
  }
}

// dx[a, k, b] = dy[a, b] where indices[a, b] == k, else 0.
template <typename T>
__global__ void max_backward_kernel(const T* __restrict__ dy, const int32_t* __restrict__ ind, T* __restrict__ dx,
                                    int64_t K, int64_t B, int64_t n) {
  SEQLAB_CUDA_LOOP(i, n) {
    const int64_t b = i % B, ak = i / B, k = ak % K, a = ak / K;
    const int64_t o = a * B + b;
    dx[i] = ind[o] == k ? dy[o] : T(0);
  }
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  std::vector<int64_t> ax = kernels::norm_axes(axes, x.shape(), "sum");
  return sum_into(x, ax, kernels::reduced_shape(x.shape(), ax, keepdim), "sum");
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  std::vector<int64_t> ax = kernels::norm_axes(axes, x.shape(), "mean");
  Tensor s = sum_into(x, ax, kernels::reduced_shape(x.shape(), ax, keepdim), "mean");
  int64_t cnt = 1;
  for (int64_t a : ax) cnt *= x.shape()[static_cast<size_t>(a)];
  scale_in_place(s, 1.0 / static_cast<double>(cnt));
  return s;
}

Tensor sum_all(const Tensor& x) {
  Tensor out = empty({}, x.dtype());
  dispatch_float(x.dtype(), "sum", [&]<typename T>() {
    reduce_akb<T>(Plain<T>{ptr<T>(x)}, 1, x.numel(), 1, ptr<T>(out));
  });
  return out;
}

Tensor mean_all(const Tensor& x) {
  Tensor s = sum_all(x);
  scale_in_place(s, 1.0 / static_cast<double>(x.numel()));
  return s;
}

double sum_squares(const Tensor& x) {
  Tensor out = empty({}, DType::f64);
  dispatch_float(x.dtype(), "sum_squares", [&]<typename T>() {
    reduce_akb<double>(Square<T>{ptr<T>(x)}, 1, x.numel(), 1, ptr<double>(out));
  });
  return out.item();
}

Tensor sum_to(const Tensor& g, const Shape& target) {
  const Shape& gs = g.shape();
  if (gs == target) return g;
  return sum_into(g, kernels::sum_to_axes(gs, target), target, "sum_to");
}

Tensor mul_sum_to(const Tensor& a, const Tensor& b, const Shape& target) {
  if (!(a.shape() == b.shape() && a.dtype() == b.dtype())) return sum_to(bcast_mul(a, b), target);
  const Shape& s = a.shape();
  if (s == target) return bcast_mul(a, b);
  if (!kernels::sums_leading_rows(s, target)) return sum_to(bcast_mul(a, b), target);
  Tensor out = empty(target, a.dtype());
  const int64_t B = numel(target), K = B == 0 ? 0 : a.numel() / B;
  dispatch_float(a.dtype(), "mul_sum_to", [&]<typename T>() {
    reduce_akb<T>(Product<T>{ptr<T>(a), ptr<T>(b)}, 1, K, B, ptr<T>(out));
  });
  return out;
}

kernels::MaxResult max(const Tensor& x, int64_t axis, bool keepdim) {
  const kernels::AxisPlan p = kernels::plan_max(x.shape(), axis, keepdim);
  const int64_t A = p.A, K = p.K, B = p.B;
  kernels::MaxResult r{empty(p.out, x.dtype()), empty(p.out, DType::i32)};
  dispatch_float(x.dtype(), "max", [&]<typename T>() {
    if (A * B == 0) return;
    if (B == 1) {
      max_row_kernel<T><<<blocks_for(A, 1), threads_for(K), 0, stream()>>>(ptr<T>(x), A, K, ptr<T>(r.values),
                                                                           ptr<int32_t>(r.indices));
      check_launch("max_row_kernel");
    } else {
      max_col_kernel<T><<<blocks_for(A * B), 256, 0, stream()>>>(ptr<T>(x), A, K, B, ptr<T>(r.values),
                                                                   ptr<int32_t>(r.indices));
      check_launch("max_col_kernel");
    }
  });
  return r;
}

Tensor max_backward(const Tensor& dy, const Tensor& indices, const Shape& x_shape, int64_t axis) {
  const kernels::AxisPlan p = kernels::plan_max_backward(dy, indices, x_shape, axis);
  const int64_t K = p.K, B = p.B;
  Tensor dx = empty(p.out, dy.dtype());
  dispatch_float(dy.dtype(), "max_backward", [&]<typename T>() {
    const int64_t n = dx.numel();
    if (n == 0) return;
    max_backward_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(ptr<T>(dy), ptr<int32_t>(indices), ptr<T>(dx), K,
                                                                  B, n);
    check_launch("max_backward_kernel");
  });
  return dx;
}

}  // namespace seqlab::cuda
