// Fused optimizer updates and the clipping norm on the device (core/cuda/optim.h).
#include <atomic>
#include <cstdlib>
#include <string>

#include "core/cuda/common.cuh"
#include "core/cuda/multi_tensor.h"
#include "core/cuda/optim.h"

namespace seqlab::cuda {
namespace {

template <typename T>
struct AdamScalars {
  T b1c, b2, b2c, eps, step_size, bc2s, l2, shrink;
  bool decay;
};

// IEEE operations that ptxas may not fuse into FMAs (a plain mul.f32 feeding an add.f32 may be fused
// in one kernel and not in another, depending on scheduling).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float fma_rn(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double fma_rn(double a, double b, double c) { return __fma_rn(a, b, c); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }

// One element of Adam/AdamW, every operation spelled out with its rounding: the single-tensor, the
// multi-tensor and the device-gated kernels (a CUDA graph's step) share it and give the same bits
// whatever ptxas schedules around it (a run of the training step as a graph must match the eager
// run bit for bit; with the plain operators the decoupled decay's multiply was fused differently).
template <typename T>
__device__ __forceinline__ void adam_element(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                                             T* __restrict__ v, int64_t i, const AdamScalars<T>& s) {
  T pi = p[i];
  if (s.decay) pi = mul_rn(pi, s.shrink);
  const T gi = s.l2 != T(0) ? fma_rn(s.l2, pi, g[i]) : g[i];
  T mi = m[i], vi = v[i];
  mi = fma_rn(s.b1c, sub_rn(gi, mi), mi);  // lerp, as torch
  vi = fma_rn(mul_rn(s.b2c, gi), gi, mul_rn(s.b2, vi));
  pi = sub_rn(pi, div_rn(mul_rn(s.step_size, mi), add_rn(div_rn(sqrt_rn(vi), s.bc2s), s.eps)));
  m[i] = mi;
  v[i] = vi;
  p[i] = pi;
}

template <typename T>
__global__ void adam_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, AdamScalars<T> s) {
  SEQLAB_CUDA_LOOP(i, n) adam_element(p, g, m, v, i, s);
}

constexpr int64_t kElemsPerBlock = 2048;  // multi-tensor elementwise kernels: elements per block

// Blocks of a multi-tensor launch: this block's tensor and its element range [lo, hi).
struct BlockRange {
  int t;
  int64_t lo, hi;
};
__device__ __forceinline__ BlockRange block_range(const TensorBlocks& tb, int64_t per_block) {
  const int t = block_owner(tb, blockIdx.x);
  const int64_t lo = (blockIdx.x - tb.first[t]) * per_block;
  return {t, lo, min(tb.n[t], lo + per_block)};
}

// This block's share of a multi-tensor Adam launch.
template <typename T>
__device__ __forceinline__ void adam_many_block(const TensorBlocks& tb, const TensorPointers<4>& ptrs,
                                                const AdamScalars<T>& s) {
  const BlockRange r = block_range(tb, kElemsPerBlock);
  T* p = static_cast<T*>(ptrs.p[0][r.t]);
  const T* g = static_cast<const T*>(ptrs.p[1][r.t]);
  T* m = static_cast<T*>(ptrs.p[2][r.t]);
  T* v = static_cast<T*>(ptrs.p[3][r.t]);
  for (int64_t i = r.lo + threadIdx.x; i < r.hi; i += blockDim.x) adam_element(p, g, m, v, i, s);
}

template <typename T>
__global__ void adam_many_kernel(TensorBlocks tb, TensorPointers<4> ptrs, AdamScalars<T> s) {
  adam_many_block(tb, ptrs, s);
}

// adam_many_kernel with the step's scalars read from the device (b1c, b2, b2c, eps, step_size, bc2s,
// l2, shrink, decay: the host's doubles, converted as the host converts them) and nothing done
// unless the loss and the gradients' sum of squares (gate[0], gate[1]) are finite.
template <typename T>
__global__ void adam_many_gated_kernel(TensorBlocks tb, TensorPointers<4> ptrs, const double* __restrict__ sc,
                                       const double* __restrict__ gate) {
  if (!isfinite(gate[0]) || !isfinite(gate[1])) return;
  adam_many_block(tb, ptrs, AdamScalars<T>{T(sc[0]), T(sc[1]), T(sc[2]), T(sc[3]), T(sc[4]), T(sc[5]), T(sc[6]),
                                            T(sc[7]), sc[8] != 0});
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

// The sum of squares of g[lo, hi) by one block of kThreads (a fixed tree), in thread 0.
template <typename T>
__device__ __forceinline__ double block_sum_of_squares(const T* __restrict__ g, int64_t lo, int64_t hi) {
  __shared__ double s[kThreads];
  double acc = 0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) acc += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  return s[0];
}

// partial[first + c] = sum of squares of chunk c of g (a block per chunk, a fixed tree).
template <typename T>
__global__ void sq_partials(const T* __restrict__ g, int64_t n, double* __restrict__ partial) {
  const int64_t lo = blockIdx.x * kChunk;
  const double s = block_sum_of_squares(g, lo, min(n, lo + kChunk));
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// The same partials for a group of tensors in one launch: block b is chunk b - first[t] of tensor t,
// and its partial lands where the per-tensor launches put it.
template <typename T>
__global__ void sq_partials_many(TensorBlocks tb, TensorPointers<1> ptrs, double* __restrict__ partial) {
  const BlockRange r = block_range(tb, kChunk);
  const double s = block_sum_of_squares(static_cast<const T*>(ptrs.p[0][r.t]), r.lo, r.hi);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

template <typename T>
__global__ void scale_many_kernel(TensorBlocks tb, TensorPointers<1> ptrs, T c) {
  const BlockRange r = block_range(tb, kElemsPerBlock);
  T* p = static_cast<T*>(ptrs.p[0][r.t]);
  for (int64_t i = r.lo + threadIdx.x; i < r.hi; i += blockDim.x) p[i] *= c;
}

// clip_grad_norm's scale with the norm on the device: gate = (loss, sum of squares); the host's maths
// (coef = max_norm / (sqrt(sum) + 1e-6), applied when < 1 and finite) in the same double operations.
template <typename T>
__global__ void scale_many_clipped_kernel(TensorBlocks tb, TensorPointers<1> ptrs, double max_norm,
                                          const double* __restrict__ gate) {
  if (!isfinite(gate[0])) return;
  const double norm = sqrt(gate[1]);
  const double coef = max_norm / (norm + 1e-6);
  if (!(coef < 1) || !isfinite(norm)) return;
  const T c = T(coef);
  const BlockRange r = block_range(tb, kElemsPerBlock);
  T* p = static_cast<T*>(ptrs.p[0][r.t]);
  for (int64_t i = r.lo + threadIdx.x; i < r.hi; i += blockDim.x) p[i] *= c;
}

std::vector<TensorGroup> plan(const std::vector<const Tensor*>& ts, int64_t per_block) {
  std::vector<int64_t> sizes;
  std::vector<int> kinds;
  for (const Tensor* t : ts) {
    sizes.push_back(t->numel());
    kinds.push_back(static_cast<int>(t->dtype()));
  }
  return plan_tensor_groups(sizes, kinds, per_block);
}

// f(group, pointers, T{}) for every group of gs with blocks: one multi-tensor launch each.
template <typename F>
void for_each_group(const std::vector<Tensor>& gs, int64_t per_block, const char* what, F&& f) {
  std::vector<const Tensor*> ts;
  for (const Tensor& g : gs) ts.push_back(&g);
  for (const TensorGroup& grp : plan(ts, per_block)) {
    if (grp.tb.blocks() == 0) continue;
    TensorPointers<1> ptrs;
    for (size_t i = grp.begin; i < grp.end; ++i) ptrs.p[0][i - grp.begin] = gs[i].device_ptr();
    dispatch_float(gs[grp.begin].dtype(), what, [&]<typename T>() { f(grp, ptrs, T{}); });
    check_launch(what);
  }
}

std::atomic<int> g_multi_tensor{-1};  // -1: not read from the environment yet

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

bool multi_tensor() {
  int v = g_multi_tensor.load();
  if (v < 0) {
    const char* env = std::getenv("SEQLAB_CUDA_MULTI_TENSOR");
    const std::string s = env ? env : "";
    SEQLAB_CHECK(s.empty() || s == "0" || s == "1", "environment variable SEQLAB_CUDA_MULTI_TENSOR = '", s,
                 "': expected 0 (one launch per tensor) or 1 (multi-tensor launches)");
    v = s == "0" ? 0 : 1;
    g_multi_tensor.store(v);
  }
  return v == 1;
}

void set_multi_tensor(bool on) { g_multi_tensor.store(on ? 1 : 0); }

void adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, double b1c, double b2, double b2c, double eps,
                 double step_size, double bc2s, double l2, double shrink, bool decay) {
  const int64_t n = p.numel();
  dispatch_float(p.dtype(), "Adam", [&]<typename T>() {
    const AdamScalars<T> s{T(b1c), T(b2), T(b2c), T(eps), T(step_size), T(bc2s), T(l2), T(shrink), decay};
    adam_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(n, ptr<T>(p), ptr<T>(g), ptr<T>(m), ptr<T>(v), s);
  });
  check_launch("adam_update");
}

namespace {
// f(group, pointers) for each multi-tensor group of an Adam update (p, g, m, v).
template <typename F>
void for_each_adam_group(const std::vector<AdamTensors>& ts, F&& f) {
  std::vector<const Tensor*> ps;
  for (const AdamTensors& a : ts) ps.push_back(a.p);
  for (const TensorGroup& grp : plan(ps, kElemsPerBlock)) {
    if (grp.tb.blocks() == 0) continue;
    TensorPointers<4> ptrs;
    for (size_t i = grp.begin; i < grp.end; ++i) {
      const AdamTensors& a = ts[i];
      const int k = static_cast<int>(i - grp.begin);
      ptrs.p[0][k] = a.p->device_ptr();
      ptrs.p[1][k] = a.g->device_ptr();
      ptrs.p[2][k] = a.m->device_ptr();
      ptrs.p[3][k] = a.v->device_ptr();
    }
    dispatch_float(ts[grp.begin].p->dtype(), "Adam", [&]<typename T>() { f(grp, ptrs, T{}); });
    check_launch("adam_update_many");
  }
}
}  // namespace

void adam_update_many(const std::vector<AdamTensors>& ts, double b1c, double b2, double b2c, double eps,
                      double step_size, double bc2s, double l2, double shrink, bool decay) {
  for_each_adam_group(ts, [&]<typename T>(const TensorGroup& grp, const TensorPointers<4>& ptrs, T) {
    const AdamScalars<T> s{T(b1c), T(b2), T(b2c), T(eps), T(step_size), T(bc2s), T(l2), T(shrink), decay};
    adam_many_kernel<T><<<static_cast<unsigned>(grp.tb.blocks()), kThreads, 0, stream()>>>(grp.tb, ptrs, s);
  });
}

void adam_update_many_gated(const std::vector<AdamTensors>& ts, const double* scalars, const double* gate) {
  SEQLAB_CHECK(multi_tensor(), "the device-gated Adam step needs multi-tensor launches (SEQLAB_CUDA_MULTI_TENSOR=1)");
  for_each_adam_group(ts, [&]<typename T>(const TensorGroup& grp, const TensorPointers<4>& ptrs, T) {
    adam_many_gated_kernel<T><<<static_cast<unsigned>(grp.tb.blocks()), kThreads, 0, stream()>>>(grp.tb, ptrs,
                                                                                                  scalars, gate);
  });
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

void sum_of_squares_into(const std::vector<Tensor>& gs, double* out) {
  int64_t total = 0;
  for (const Tensor& g : gs) total += (g.numel() + kChunk - 1) / kChunk;
  if (total == 0) return memset_zero(out, sizeof(double));
  Tensor partial = empty({total}, DType::f64);
  if (multi_tensor()) {
    for_each_group(gs, kChunk, "clip_grad_norm (partials, multi-tensor)",
                   [&]<typename T>(const TensorGroup& grp, const TensorPointers<1>& ptrs, T) {
                     sq_partials_many<T><<<static_cast<unsigned>(grp.tb.blocks()), kThreads, 0, stream()>>>(
                         grp.tb, ptrs, ptr<double>(partial) + grp.block_offset);
                   });
  } else {
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
  }
  sum_in_order<<<1, 1, 0, stream()>>>(ptr<double>(partial), total, out);
  check_launch("clip_grad_norm (sum)");
}

double sum_of_squares(const std::vector<Tensor>& gs) {
  int64_t total = 0;
  for (const Tensor& g : gs) total += (g.numel() + kChunk - 1) / kChunk;
  if (total == 0) return 0;
  Tensor out = empty({}, DType::f64);
  sum_of_squares_into(gs, ptr<double>(out));
  return out.item();
}

void scale_all(const std::vector<Tensor>& gs, double c) {
  if (multi_tensor()) {
    for_each_group(gs, kElemsPerBlock, "clip_grad_norm (scale, multi-tensor)",
                   [&]<typename T>(const TensorGroup& grp, const TensorPointers<1>& ptrs, T) {
                     scale_many_kernel<T><<<static_cast<unsigned>(grp.tb.blocks()), kThreads, 0, stream()>>>(
                         grp.tb, ptrs, T(c));
                   });
    return;
  }
  for (const Tensor& g : gs) {
    const int64_t n = g.numel();
    dispatch_float(g.dtype(), "clip_grad_norm", [&]<typename T>() {
      scale_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(ptr<T>(g), n, static_cast<T>(c));
    });
    check_launch("clip_grad_norm (scale)");
  }
}

void scale_all_clipped(const std::vector<Tensor>& gs, double max_norm, const double* gate) {
  SEQLAB_CHECK(multi_tensor(), "the device-gated clip needs multi-tensor launches (SEQLAB_CUDA_MULTI_TENSOR=1)");
  for_each_group(gs, kElemsPerBlock, "clip_grad_norm (scale on the device)",
                 [&]<typename T>(const TensorGroup& grp, const TensorPointers<1>& ptrs, T) {
                   scale_many_clipped_kernel<T><<<static_cast<unsigned>(grp.tb.blocks()), kThreads, 0, stream()>>>(
                       grp.tb, ptrs, max_norm, gate);
                 });
}

}  // namespace seqlab::cuda
