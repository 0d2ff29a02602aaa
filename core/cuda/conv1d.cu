// Causal depthwise conv1d on the device (equations in core/kernels/conv1d.h). The sums over taps
// run in the CPU kernels' order (bias, then k = first valid tap .. K-1; dx: k = K-1 .. 0).
#include <algorithm>

#include "core/cuda/common.cuh"
#include "core/cuda/conv1d.h"
#include "core/dtype.h"

namespace seqlab::cuda {
namespace {

__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }

template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + dexp(-x));
  const T e = dexp(x);
  return e / (T(1) + e);
}

// Pre-activation at row r = b T + t, channel c.
template <typename T>
__device__ __forceinline__ T conv_at(const T* x, const T* w, const T* bias, int64_t r, int64_t t, int64_t c,
                                     int64_t C, int64_t K) {
  T acc = bias ? bias[c] : T(0);
  for (int64_t k = t < K - 1 ? K - 1 - t : 0; k < K; ++k) acc += w[c * K + k] * x[(r - (K - 1) + k) * C + c];
  return acc;
}

template <typename T>
__global__ void conv_fwd_kernel(const T* x, const T* w, const T* bias, int64_t T_, int64_t C, int64_t K, bool silu,
                                int64_t n, T* y) {
  SEQLAB_CUDA_LOOP(i, n) {
    const int64_t c = i % C, r = i / C;
    T v = conv_at(x, w, bias, r, r % T_, c, C, K);
    if (silu) v = v * sigmoid(v);
    y[i] = v;
  }
}

// g = dy silu'(pre) = dy s (1 + p (1 - s)), s = sigmoid(p).
template <typename T>
__global__ void conv_grad_kernel(const T* dy, const T* x, const T* w, const T* bias, int64_t T_, int64_t C,
                                 int64_t K, int64_t n, T* g) {
  SEQLAB_CUDA_LOOP(i, n) {
    const int64_t c = i % C, r = i / C;
    const T p = conv_at(x, w, bias, r, r % T_, c, C, K), sg = sigmoid(p);
    g[i] = dy[i] * (sg * (T(1) + p * (T(1) - sg)));
  }
}

// dx[b, s, c] = sum_{k = K-1 .. 0, s + K-1-k < T} w[c, k] g[b, s + K-1-k, c].
template <typename T>
__global__ void conv_dx_kernel(const T* g, const T* w, int64_t T_, int64_t C, int64_t K, int64_t n, T* dx) {
  SEQLAB_CUDA_LOOP(i, n) {
    const int64_t c = i % C, r = i / C, s = r % T_;
    T acc = T(0);
    for (int64_t k = K - 1; k >= 0; --k) {
      const int64_t t = s + K - 1 - k;
      if (t >= T_) continue;
      acc += w[c * K + k] * g[(r + K - 1 - k) * C + c];
    }
    dx[i] = acc;
  }
}

// Partials over row tiles: part[(q (K+1) + k) C + c] = sum over rows r of tile q (in order) of
// g[r, c] x[r - (K-1) + k, c] (k < K; same sequence only) or of g[r, c] (k = K: the bias).
template <typename T>
__global__ void conv_dw_part_kernel(const T* g, const T* x, int64_t T_, int64_t C, int64_t K, int64_t rows,
                                    int64_t R, int64_t tiles, T* part) {
  SEQLAB_CUDA_LOOP(i, tiles * (K + 1) * C) {
    const int64_t c = i % C, k = i / C % (K + 1), q = i / C / (K + 1);
    const int64_t r0 = q * R, r1 = min(rows, r0 + R);
    T acc = T(0);
    if (k == K) {
      for (int64_t r = r0; r < r1; ++r) acc += g[r * C + c];
    } else {
      for (int64_t r = r0; r < r1; ++r)
        if (r % T_ >= K - 1 - k) acc += g[r * C + c] * x[(r - (K - 1) + k) * C + c];
    }
    part[i] = acc;
  }
}

// dw[c, k] / db[c] = sum over tiles, in order, of the partials.
template <typename T>
__global__ void conv_dw_sum_kernel(const T* part, int64_t C, int64_t K, int64_t tiles, T* dw, T* db) {
  SEQLAB_CUDA_LOOP(i, (K + 1) * C) {
    const int64_t c = i % C, k = i / C;
    T acc = T(0);
    for (int64_t q = 0; q < tiles; ++q) acc += part[q * (K + 1) * C + i];
    if (k < K) dw[c * K + k] = acc;
    else if (db) db[c] = acc;
  }
}

template <typename T>
__global__ void conv_step_kernel(T* buf, const T* x, const T* w, const T* bias, int64_t C, int64_t K, bool silu,
                                 int64_t n, T* y) {
  SEQLAB_CUDA_LOOP(i, n) {
    const int64_t c = i % C;
    T* q = buf + i * (K - 1);
    const T xv = x[i];
    T acc = bias ? bias[c] : T(0);
    for (int64_t k = 0; k < K - 1; ++k) acc += w[c * K + k] * q[k];
    acc += w[c * K + K - 1] * xv;
    for (int64_t k = 0; k + 1 < K - 1; ++k) q[k] = q[k + 1];
    if (K > 1) q[K - 2] = xv;
    if (silu) acc = acc * sigmoid(acc);
    y[i] = acc;
  }
}

constexpr int kThreads = 256;

}  // namespace

Tensor causal_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu) {
  const int64_t T_ = x.size(1), C = x.size(2), K = w.size(1);
  Tensor y = empty(x.shape(), x.dtype());
  const int64_t n = x.numel();
  if (n == 0) return y;
  dispatch_float(x.dtype(), "causal_conv1d", [&]<typename T>() {
    conv_fwd_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
        ptr<T>(x), ptr<T>(w), bias.defined() ? ptr<T>(bias) : nullptr, T_, C, K, silu, n, ptr<T>(y));
    check_launch("causal_conv1d_forward");
  });
  return y;
}

std::array<Tensor, 3> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& bias,
                                             bool silu) {
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), K = w.size(1);
  Tensor dx = empty(x.shape(), x.dtype());
  Tensor dw = zeros(w.shape(), w.dtype());
  Tensor db = bias.defined() ? zeros(bias.shape(), bias.dtype()) : Tensor();
  const int64_t rows = B * T_, n = rows * C;
  if (n == 0) return {dx, dw, db};
  // Row tiles of at least 64 rows and at most 1024 tiles: fixed by the shapes only.
  const int64_t R = std::max<int64_t>(64, (rows + 1023) / 1024), tiles = (rows + R - 1) / R;
  dispatch_float(x.dtype(), "causal_conv1d_backward", [&]<typename T>() {
    const T *px = ptr<T>(x), *pw = ptr<T>(w), *pb = bias.defined() ? ptr<T>(bias) : nullptr;
    Tensor g = dy;  // dL/d(pre-activation)
    if (silu) {
      g = empty(x.shape(), x.dtype());
      conv_grad_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(ptr<T>(dy), px, pw, pb, T_, C, K, n,
                                                                            ptr<T>(g));
      check_launch("causal_conv1d_backward: silu'");
    }
    const T* pg = ptr<T>(g);
    conv_dx_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(pg, pw, T_, C, K, n, ptr<T>(dx));
    check_launch("causal_conv1d_backward: dx");
    Tensor part = empty({tiles, K + 1, C}, x.dtype());
    conv_dw_part_kernel<T><<<blocks_for(part.numel(), kThreads), kThreads, 0, stream()>>>(pg, px, T_, C, K, rows, R,
                                                                                          tiles, ptr<T>(part));
    check_launch("causal_conv1d_backward: dw partials");
    conv_dw_sum_kernel<T><<<blocks_for((K + 1) * C, kThreads), kThreads, 0, stream()>>>(
        ptr<T>(part), C, K, tiles, ptr<T>(dw), db.defined() ? ptr<T>(db) : nullptr);
    check_launch("causal_conv1d_backward: dw sums");
  });
  return {dx, dw, db};
}

Tensor causal_conv1d_step(Tensor& buf, const Tensor& x_t, const Tensor& w, const Tensor& bias, bool silu) {
  const int64_t C = x_t.size(1), K = w.size(1);
  Tensor y = empty(x_t.shape(), x_t.dtype());
  const int64_t n = x_t.numel();
  if (n == 0) return y;
  dispatch_float(x_t.dtype(), "causal_conv1d_step", [&]<typename T>() {
    conv_step_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
        K > 1 ? ptr<T>(buf) : nullptr, ptr<T>(x_t), ptr<T>(w), bias.defined() ? ptr<T>(bias) : nullptr, C, K, silu,
        n, ptr<T>(y));
    check_launch("causal_conv1d_step");
  });
  return y;
}

}  // namespace seqlab::cuda
