// Fused optimizer updates and the clipping norm on the device (core/cuda/optim.h).
#include "core/cuda/common.cuh"
#include "core/cuda/optim.h"

namespace seqlab::cuda {
namespace {

template <typename T>
__global__ void adam_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, T b1c, T b2, T b2c, T eps, T step_size, T bc2s, T l2, T shrink,
                            bool decay) {
  SEQLAB_CUDA_LOOP(i, n) {
    T pi = p[i];
    if (decay) pi *= shrink;
    const T gi = l2 != T(0) ? g[i] + l2 * pi : g[i];
    T mi = m[i], vi = v[i];
    mi += b1c * (gi - mi);  // lerp, as torch
    vi = b2 * vi + b2c * gi * gi;
    pi -= step_size * mi / (sqrt(vi) / bc2s + eps);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}

template <typename T>
__global__ void sgd_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, T lr, T wd,
                           T mu, T damp, bool nesterov, bool first) {
  SEQLAB_CUDA_LOOP(i, n) {
    T d = g[i];
    if (wd != T(0)) d += wd * p[i];
    if (buf) {
      buf[i] = first ? d : mu * buf[i] + damp * d;
      d = nesterov ? d + mu * buf[i] : buf[i];
    }
    p[i] -= lr * d;
  }
}

constexpr int kThreads = 256;
constexpr int64_t kChunk = 1 << 15;  // elements per partial sum: fixed, so the order is fixed

// partial[first + c] = sum of squares of chunk c of g (a block per chunk, a fixed tree).
template <typename T>
__global__ void sq_partials(const T* __restrict__ g, int64_t n, double* __restrict__ partial) {
  __shared__ double s[kThreads];
  const int64_t lo = blockIdx.x * kChunk, hi = min(n, lo + kChunk);
  double acc = 0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) acc += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

__global__ void sum_in_order(const double* __restrict__ partial, int64_t n, double* __restrict__ out) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += partial[i];  // a few hundred partials at most: serial is fine
  *out = acc;
}

template <typename T>
__global__ void scale_kernel(T* p, int64_t n, T c) {
  SEQLAB_CUDA_LOOP(i, n) p[i] *= c;
}

}  // namespace

void adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, double b1c, double b2, double b2c, double eps,
                 double step_size, double bc2s, double l2, double shrink, bool decay) {
  const int64_t n = p.numel();
  dispatch_float(p.dtype(), "Adam", [&]<typename T>() {
    adam_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(n, ptr<T>(p), ptr<T>(g), ptr<T>(m), ptr<T>(v), T(b1c),
                                                             T(b2), T(b2c), T(eps), T(step_size), T(bc2s), T(l2),
                                                             T(shrink), decay);
  });
  check_launch("adam_update");
}

void sgd_update(Tensor& p, const Tensor& g, Tensor* buf, double lr, double wd, double mu, double damp, bool nesterov,
                bool first) {
  const int64_t n = p.numel();
  dispatch_float(p.dtype(), "SGD", [&]<typename T>() {
    sgd_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(n, ptr<T>(p), ptr<T>(g), buf ? ptr<T>(*buf) : nullptr,
                                                            T(lr), T(wd), T(mu), T(damp), nesterov, first);
  });
  check_launch("sgd_update");
}

double sum_of_squares(const std::vector<Tensor>& gs) {
  int64_t total = 0;
  for (const Tensor& g : gs) total += (g.numel() + kChunk - 1) / kChunk;
  if (total == 0) return 0;
  Tensor partial = empty({total}, DType::f64);
  int64_t at = 0;
  for (const Tensor& g : gs) {
    const int64_t chunks = (g.numel() + kChunk - 1) / kChunk;
    if (!chunks) continue;
    dispatch_float(g.dtype(), "clip_grad_norm", [&]<typename T>() {
      sq_partials<T><<<static_cast<unsigned>(chunks), kThreads, 0, stream()>>>(ptr<T>(g), g.numel(),
                                                                               ptr<double>(partial) + at);
    });
    check_launch("clip_grad_norm (partials)");
    at += chunks;
  }
  Tensor out = empty({}, DType::f64);
  sum_in_order<<<1, 1, 0, stream()>>>(ptr<double>(partial), total, ptr<double>(out));
  check_launch("clip_grad_norm (sum)");
  return out.item();
}

void scale_all(const std::vector<Tensor>& gs, double c) {
  for (const Tensor& g : gs) {
    const int64_t n = g.numel();
    dispatch_float(g.dtype(), "clip_grad_norm", [&]<typename T>() {
      scale_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(ptr<T>(g), n, static_cast<T>(c));
    });
    check_launch("clip_grad_norm (scale)");
  }
}

}  // namespace seqlab::cuda
