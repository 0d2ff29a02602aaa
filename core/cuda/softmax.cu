// Softmax kernels on the device (core/cuda/softmax.h), the maths of core/kernels/softmax.cpp: a tensor
// is seen as (outer, n, inner) around the axis. Contiguous lines (inner == 1): one block per line,
// each thread taking every blockDim.x-th element. Strided lines: a block of 32 x 8 threads per 32
// adjacent lines (x: the line, reads coalesced; y: every 8th element of it). The max and the sums
// (in double) are fixed-order trees, so results are bit-identical from run to run.
#include "core/cuda/softmax.h"

#include <cmath>

#include "core/cuda/common.cuh"
#include "core/kernels/softmax_plan.h"

namespace seqlab::cuda {
namespace {

constexpr int kColLines = 32;  // lines per block, strided case
constexpr int kColSplit = 8;   // threads per line, strided case
constexpr int kPad = 33;

using Lines = kernels::SoftmaxLines;

int threads_for(int64_t n) {
  int t = 32;
  while (t < 256 && t < n) t *= 2;
  return t;
}

__device__ inline float dexp(float v) { return expf(v); }
__device__ inline double dexp(double v) { return exp(v); }

struct Max {
  // std::max(a, b) of the CPU: b only when a < b (a NaN never enters).
  template <typename V>
  __device__ V operator()(V a, V b) const {
    return a < b ? b : a;
  }
};
struct Sum {
  template <typename V>
  __device__ V operator()(V a, V b) const {
    return a + b;
  }
};

// Reduces v over the threads of one line, in a fixed order; every thread of the line gets the
// result. rows: the line is the whole block along x (blockDim.x a multiple of 32, <= 256); else the
// line is one x column, spread along y. sh: kColSplit * kPad slots.
template <typename V, typename Op>
__device__ V reduce_line(V v, Op op, V* sh, bool rows) {
  if (rows) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    __syncthreads();  // an earlier reduction's readers are done with sh
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    V r = sh[0];
    for (int w = 1; w < nw; ++w) r = op(r, sh[w]);
    return r;
  }
  __syncthreads();
  sh[threadIdx.y * kPad + threadIdx.x] = v;
  __syncthreads();
  V r = sh[threadIdx.x];
  for (int w = 1; w < static_cast<int>(blockDim.y); ++w) r = op(r, sh[w * kPad + threadIdx.x]);
  return r;
}

// One line: elements k0, k0 + step, ... < n at stride st. live: this thread's line exists (every
// thread of the block takes part in the reductions).
template <typename T, bool kLog>
__device__ void forward_line(const T* xi, T* yi, int64_t n, int64_t st, int64_t k0, int64_t step, bool live, bool rows,
                             T* shT, double* shD) {
  T m = -INFINITY;
  if (live)
    for (int64_t k = k0; k < n; k += step) {
      const T v = xi[k * st];
      m = m < v ? v : m;
    }
  m = reduce_line<T>(m, Max{}, shT, rows);
  if (m == T(-INFINITY)) m = 0;  // an all -inf line: keep NaN out of x - m
  double s = 0;
  if constexpr (kLog) {
    if (live)
      for (int64_t k = k0; k < n; k += step) s += exp(static_cast<double>(xi[k * st] - m));
    s = reduce_line<double>(s, Sum{}, shD, rows);
    const T lse = m + static_cast<T>(log(s));
    if (live)
      for (int64_t k = k0; k < n; k += step) yi[k * st] = xi[k * st] - lse;
  } else {
    if (live)
      for (int64_t k = k0; k < n; k += step) {
        const T e = dexp(xi[k * st] - m);
        yi[k * st] = e;
        s += static_cast<double>(e);
      }
    s = reduce_line<double>(s, Sum{}, shD, rows);
    const T inv = static_cast<T>(1.0 / s);
    if (live)
      for (int64_t k = k0; k < n; k += step) yi[k * st] *= inv;
  }
}

template <typename T, bool kLog>
__device__ void backward_line(const T* gi, const T* yi, T* di, int64_t n, int64_t st, int64_t k0, int64_t step,
                              bool live, bool rows, double* shD) {
  double s = 0;
  if (live)
    for (int64_t k = k0; k < n; k += step) {
      if constexpr (kLog) s += static_cast<double>(gi[k * st]);
      else s += static_cast<double>(gi[k * st]) * static_cast<double>(yi[k * st]);
    }
  s = reduce_line<double>(s, Sum{}, shD, rows);
  const T ts = static_cast<T>(s);
  if (live)
    for (int64_t k = k0; k < n; k += step) {
      if constexpr (kLog) di[k * st] = gi[k * st] - dexp(yi[k * st]) * ts;
      else di[k * st] = yi[k * st] * (gi[k * st] - ts);
    }
}

// Contiguous lines: one block per line of n.
template <typename T, bool kLog>
__global__ void forward_row_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t lines, int64_t n) {
  __shared__ T shT[kColSplit * kPad];
  __shared__ double shD[kColSplit * kPad];
  for (int64_t r = blockIdx.x; r < lines; r += gridDim.x)
    forward_line<T, kLog>(x + r * n, y + r * n, n, 1, threadIdx.x, blockDim.x, true, true, shT, shD);
}

// Strided lines: block (32, 8) per 32 adjacent lines of one outer index.
template <typename T, bool kLog>
__global__ void forward_col_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t n,
                                   int64_t inner) {
  __shared__ T shT[kColSplit * kPad];
  __shared__ double shD[kColSplit * kPad];
  const int64_t tiles = (inner + kColLines - 1) / kColLines;
  for (int64_t u = blockIdx.x; u < outer * tiles; u += gridDim.x) {
    const int64_t o = u / tiles, j = (u % tiles) * kColLines + threadIdx.x;
    const bool live = j < inner;
    const int64_t off = o * n * inner + (live ? j : 0);
    forward_line<T, kLog>(x + off, y + off, n, inner, threadIdx.y, blockDim.y, live, false, shT, shD);
  }
}

template <typename T, bool kLog>
__global__ void backward_row_kernel(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx,
                                    int64_t lines, int64_t n) {
  __shared__ double shD[kColSplit * kPad];
  for (int64_t r = blockIdx.x; r < lines; r += gridDim.x)
    backward_line<T, kLog>(g + r * n, y + r * n, dx + r * n, n, 1, threadIdx.x, blockDim.x, true, true, shD);
}

template <typename T, bool kLog>
__global__ void backward_col_kernel(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx,
                                    int64_t outer, int64_t n, int64_t inner) {
  __shared__ double shD[kColSplit * kPad];
  const int64_t tiles = (inner + kColLines - 1) / kColLines;
  for (int64_t u = blockIdx.x; u < outer * tiles; u += gridDim.x) {
    const int64_t o = u / tiles, j = (u % tiles) * kColLines + threadIdx.x;
    const bool live = j < inner;
    const int64_t off = o * n * inner + (live ? j : 0);
    backward_line<T, kLog>(g + off, y + off, dx + off, n, inner, threadIdx.y, blockDim.y, live, false, shD);
  }
}

template <bool kLog>
Tensor forward(const Tensor& x, int64_t axis, const char* op) {
  const Lines l = kernels::softmax_lines(x.shape(), axis, op);
  Tensor y = empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), op, [&]<typename T>() {
    if (y.numel() == 0) return;
    if (l.inner == 1) {
      forward_row_kernel<T, kLog><<<blocks_for(l.outer, 1), threads_for(l.n), 0, stream()>>>(ptr<T>(x), ptr<T>(y),
                                                                                            l.outer, l.n);
      check_launch("softmax forward_row_kernel");
    } else {
      const int64_t tiles = (l.inner + kColLines - 1) / kColLines;
      forward_col_kernel<T, kLog><<<blocks_for(l.outer * tiles, 1), dim3(kColLines, kColSplit), 0, stream()>>>(
          ptr<T>(x), ptr<T>(y), l.outer, l.n, l.inner);
      check_launch("softmax forward_col_kernel");
    }
  });
  return y;
}

template <bool kLog>
Tensor backward(const Tensor& dy, const Tensor& y, int64_t axis, const char* op) {
  const Lines l = kernels::softmax_backward_lines(dy, y, axis, op);
  Tensor dx = empty(y.shape(), y.dtype());
  dispatch_float(y.dtype(), op, [&]<typename T>() {
    const T* pg = ptr<T>(dy);
    if (dx.numel() == 0) return;
    if (l.inner == 1) {
      backward_row_kernel<T, kLog><<<blocks_for(l.outer, 1), threads_for(l.n), 0, stream()>>>(
          pg, ptr<T>(y), ptr<T>(dx), l.outer, l.n);
      check_launch("softmax backward_row_kernel");
    } else {
      const int64_t tiles = (l.inner + kColLines - 1) / kColLines;
      backward_col_kernel<T, kLog><<<blocks_for(l.outer * tiles, 1), dim3(kColLines, kColSplit), 0, stream()>>>(
          pg, ptr<T>(y), ptr<T>(dx), l.outer, l.n, l.inner);
      check_launch("softmax backward_col_kernel");
    }
  });
  return dx;
}

}  // namespace

Tensor softmax_forward(const Tensor& x, int64_t axis) { return forward<false>(x, axis, "softmax"); }
Tensor log_softmax_forward(const Tensor& x, int64_t axis) { return forward<true>(x, axis, "log_softmax"); }
Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t axis) {
  return backward<false>(dy, y, axis, "softmax");
}
Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t axis) {
  return backward<true>(dy, y, axis, "log_softmax");
}

}  // namespace seqlab::cuda
