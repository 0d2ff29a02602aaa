// Norms, dropout, losses and the embedding lookup on the device (core/cuda/nn.h). Row statistics run
// one warp per row with butterfly (xor-shuffle) sums in double: every lane ends with the same bits, and
// the order is fixed by the lane layout. Column sums (norm weight / bias gradients): row tiles summed
// by 32 x 8 blocks in a fixed order, then the tiles in order (core/cuda/column_reduce.cuh). Loss
// means: per-block tree partials, then the partials in order. Nothing uses atomics.
#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>

#include "core/cuda/column_reduce.cuh"
#include "core/cuda/common.cuh"
#include "core/cuda/nn.h"
#include "core/kernels/loss_check.h"
#include "core/kernels/norm_check.h"

namespace seqlab::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;  // rows per block in the warp-per-row kernels
constexpr unsigned kFull = 0xffffffffu;

unsigned row_blocks(int64_t rows) {
  int64_t b = (rows + kWarps - 1) / kWarps;
  return static_cast<unsigned>(std::clamp<int64_t>(b, 1, 65535 * 8));
}

__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ inline double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Warp-per-row loop: every lane of a warp sees the same rows (the shuffles need the whole warp).
#define SEQLAB_WARP_ROWS(r, R)                                                                          \
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < (R); \
       r += static_cast<int64_t>(gridDim.x) * (blockDim.x / 32))

// ---------------------------------------------------------------------------------------------------
// LayerNorm / RMSNorm

template <typename T, bool kCenter>
__global__ void norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                    T* __restrict__ y, double* __restrict__ mean, double* __restrict__ rstd,
                                    int64_t R, int64_t D, double eps) {
  const int lane = threadIdx.x & 31;
  SEQLAB_WARP_ROWS(r, R) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    double m = 0;
    if (kCenter) {
      double s = 0;
      for (int64_t j = lane; j < D; j += 32) s += static_cast<double>(xr[j]);
      m = warp_sum(s) / static_cast<double>(D);
    }
    double ss = 0;
    for (int64_t j = lane; j < D; j += 32) {
      const double c = static_cast<double>(xr[j]) - m;
      ss += c * c;
    }
    ss = warp_sum(ss);
    const double rs = 1.0 / sqrt(ss / static_cast<double>(D) + eps);
    if (lane == 0) {
      if (kCenter) mean[r] = m;
      rstd[r] = rs;
    }
    const T tm = static_cast<T>(m), ts = static_cast<T>(rs);
    for (int64_t j = lane; j < D; j += 32) {
      T v = (xr[j] - tm) * ts;
      if (w) v *= w[j];
      if (b) v += b[j];
      yr[j] = v;
    }
  }
}

// dx = rstd * (g - mean(g) - xh * mean(g * xh)), g = dy * w, xh = (x - mean) * rstd; a warp per row.
template <typename T, bool kCenter>
__global__ void norm_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                               const double* __restrict__ mean, const double* __restrict__ rstd, T* __restrict__ dx,
                               int64_t R, int64_t D) {
  const int lane = threadIdx.x & 31;
  SEQLAB_WARP_ROWS(r, R) {
    const T* xr = x + r * D;
    const T* gr = dy + r * D;
    const double m = kCenter ? mean[r] : 0.0, s = rstd[r];
    double sg = 0, sgx = 0;
    for (int64_t j = lane; j < D; j += 32) {
      const double gw = w ? static_cast<double>(gr[j]) * static_cast<double>(w[j]) : static_cast<double>(gr[j]);
      sg += gw;
      sgx += gw * (static_cast<double>(xr[j]) - m) * s;
    }
    sg = kCenter ? warp_sum(sg) : 0.0;
    sgx = warp_sum(sgx);
    const T mg = kCenter ? static_cast<T>(sg / static_cast<double>(D)) : T(0);
    const T mgx = static_cast<T>(sgx / static_cast<double>(D));
    const T tm = static_cast<T>(m), ts = static_cast<T>(s);
    T* dxr = dx + r * D;
    for (int64_t j = lane; j < D; j += 32) {
      const T gj = w ? gr[j] * w[j] : gr[j];
      const T xh = (xr[j] - tm) * ts;
      dxr[j] = ts * (gj - mg - xh * mgx);
    }
  }
}

// Row r's terms of the norm's weight and bias gradients at column j: dy * xh and dy, in double.
template <typename T>
struct NormGradTerms {
  const T* __restrict__ dy;
  const T* __restrict__ x;  // null when dw is not wanted
  const double* __restrict__ mean;  // null for RMSNorm
  const double* __restrict__ rstd;
  int64_t D;
  __device__ void operator()(int64_t r, int64_t j, double* acc) const {
    const double g = static_cast<double>(dy[r * D + j]);
    if (x) acc[0] += g * (static_cast<double>(x[r * D + j]) - (mean ? mean[r] : 0.0)) * rstd[r];
    acc[1] += g;
  }
};

template <bool kCenter>
kernels::NormForward norm_forward(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  const kernels::NormRows rows = kernels::check_norm(op, x, w, b);
  const int64_t D = rows.D, R = rows.R;
  kernels::NormForward f;
  f.y = empty(x.shape(), x.dtype());
  if (kCenter) f.mean = empty({R}, DType::f64);
  f.rstd = empty({R}, DType::f64);
  dispatch_float(x.dtype(), op, [&]<typename T>() {
    if (R == 0) return;
    norm_forward_kernel<T, kCenter><<<row_blocks(R), kThreads, 0, stream()>>>(
        ptr<T>(x), w.defined() ? ptr<T>(w) : nullptr, b.defined() ? ptr<T>(b) : nullptr, ptr<T>(f.y),
        kCenter ? ptr<double>(f.mean) : nullptr, ptr<double>(f.rstd), R, D, eps);
    check_launch(op);
  });
  return f;
}

template <bool kCenter>
std::array<Tensor, 3> norm_backward(const char* op, const Tensor& dy, const Tensor& x, const Tensor& w,
                                    const Tensor& mean, const Tensor& rstd, bool need_dx, bool need_dw,
                                    bool need_db) {
  const kernels::NormRows rows = kernels::check_norm_backward(op, dy, x);
  const int64_t D = rows.D, R = rows.R;
  std::array<Tensor, 3> g;
  dispatch_float(x.dtype(), op, [&]<typename T>() {
    const double* pm = kCenter ? ptr<double>(mean) : nullptr;
    const double* pr = rstd.defined() ? ptr<double>(rstd) : nullptr;
    const T* pw = w.defined() ? ptr<T>(w) : nullptr;
    if (need_dx) {
      g[0] = empty(x.shape(), x.dtype());
      if (R > 0) {
        norm_dx_kernel<T, kCenter><<<row_blocks(R), kThreads, 0, stream()>>>(ptr<T>(dy), ptr<T>(x), pw, pm, pr,
                                                                            ptr<T>(g[0]), R, D);
        check_launch(op);
      }
    }
    if (!need_dw && !need_db) return;
    // Partials per row tile (core/cuda/column_reduce.cuh), then the tiles added in order.
    const int64_t n_tiles = column_tiles(R);
    Tensor pdw = need_dw ? empty({n_tiles, D}, DType::f64) : Tensor();
    Tensor pdb = need_db ? empty({n_tiles, D}, DType::f64) : Tensor();
    if (D > 0) {
      column_tile_partials<2><<<column_tile_grid(R, D), dim3(kColX, kColY), 0, stream()>>>(
          R, D, column_tile_rows(R), NormGradTerms<T>{ptr<T>(dy), need_dw ? ptr<T>(x) : nullptr, pm, pr, D},
          need_dw ? ptr<double>(pdw) : nullptr, need_db ? ptr<double>(pdb) : nullptr);
      check_launch(op);
    }
    auto reduce = [&](const Tensor& part) {
      Tensor out = empty({D}, x.dtype());
      sum_partials_into<T>(part, n_tiles, D, ptr<T>(out), op);
      return out;
    };
    if (need_dw) g[1] = reduce(pdw);
    if (need_db) g[2] = reduce(pdb);
  });
  return g;
}

// ---------------------------------------------------------------------------------------------------
// Dropout: Philox4x32-10

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

__host__ __device__ inline void philox(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
  }
}

__host__ __device__ inline double uniform_of(uint64_t seed, uint64_t i) {
  uint32_t c[4] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), 0u, 0u};
  philox(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const uint64_t bits = (static_cast<uint64_t>(c[0] >> 5) << 26) | (c[1] >> 6);  // 27 + 26 = 53 bits
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);
}

// The seed is `seed`, or *seed_at when given (a CUDA graph's replay fills it: runtime.h, capture_seed).
template <typename T>
__global__ void dropout_kernel(T* __restrict__ m, int64_t n, uint64_t seed, const uint64_t* __restrict__ seed_at,
                               double p, T keep) {
  const uint64_t s = seed_at ? *seed_at : seed;
  SEQLAB_CUDA_LOOP(i, n) m[i] = uniform_of(s, static_cast<uint64_t>(i)) < p ? T(0) : keep;
}

template <typename T>
__global__ void mul_kernel(const T* __restrict__ x, const T* __restrict__ m, T* __restrict__ y, int64_t n) {
  SEQLAB_CUDA_LOOP(i, n) y[i] = x[i] * m[i];
}

// ---------------------------------------------------------------------------------------------------
// Losses

constexpr int64_t kChunk = 16384;  // elements per partial sum (core/kernels/loss.cpp's value)

template <typename T>
__device__ inline double point_value(kernels::PointLoss kind, T d, T delta) {
  switch (kind) {
    case kernels::PointLoss::mse: return static_cast<double>(d) * static_cast<double>(d);
    case kernels::PointLoss::l1: return fabs(static_cast<double>(d));
    case kernels::PointLoss::huber: {
      const double a = fabs(static_cast<double>(d)), dl = static_cast<double>(delta);
      return a < dl ? 0.5 * a * a : dl * (a - 0.5 * dl);
    }
  }
  return 0;
}

template <typename T>
__device__ inline T point_grad(kernels::PointLoss kind, T d, T delta) {
  switch (kind) {
    case kernels::PointLoss::mse: return T(2) * d;
    case kernels::PointLoss::l1: return d > T(0) ? T(1) : d < T(0) ? T(-1) : T(0);
    case kernels::PointLoss::huber: return d < -delta ? -delta : delta < d ? delta : d;  // std::clamp
  }
  return T(0);
}

// A fixed tree over the block's threads (blockDim.x == kThreads); the result in s[0].
__device__ inline void block_tree_sum(double* s) {
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
}

// partial[blk] = sum of l(pred - target) over elements [blk * kChunk, (blk + 1) * kChunk).
template <typename T>
__global__ void point_partials_kernel(kernels::PointLoss kind, const T* __restrict__ p, const T* __restrict__ t,
                                      int64_t n, T delta, double* __restrict__ partial) {
  __shared__ double s[kThreads];
  const int64_t lo = static_cast<int64_t>(blockIdx.x) * kChunk, hi = min(n, lo + kChunk);
  double acc = 0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) acc += point_value<T>(kind, p[i] - t[i], delta);
  s[threadIdx.x] = acc;
  __syncthreads();
  block_tree_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

// out = sum of the partials in order / n (NaN for n = 0, as PyTorch and the CPU).
template <typename T>
__global__ void point_mean_kernel(const double* __restrict__ partial, int64_t n_partials, int64_t n,
                                  T* __restrict__ out) {
  double s = 0;
  for (int64_t i = 0; i < n_partials; ++i) s += partial[i];
  out[0] = static_cast<T>(n > 0 ? s / static_cast<double>(n) : nan(""));
}

template <typename T>
__global__ void point_backward_kernel(kernels::PointLoss kind, const double* __restrict__ dy,
                                      const T* __restrict__ p, const T* __restrict__ t, int64_t n, T delta,
                                      T* __restrict__ gp, T* __restrict__ gt) {
  const T scale = static_cast<T>(dy[0] / static_cast<double>(n > 1 ? n : 1));
  SEQLAB_CUDA_LOOP(i, n) {
    const T v = scale * point_grad<T>(kind, p[i] - t[i], delta);
    if (gp) gp[i] = v;
    if (gt) gt[i] = -v;
  }
}

// One block: out[0] = ids not equal to `ignore` (when use_ignore), out[1] = the first position whose id
// (not ignored) is outside [0, V) or -1, out[2] = that id.
constexpr int kScanThreads = 1024;
__global__ void scan_ids_kernel(const int32_t* __restrict__ ids, int64_t n, int64_t V, int ignore, bool use_ignore,
                                long long* __restrict__ out) {
  __shared__ long long s_cnt[kScanThreads], s_bad[kScanThreads];
  long long cnt = 0, bad = LLONG_MAX;
  for (int64_t i = threadIdx.x; i < n; i += kScanThreads) {
    const int32_t v = ids[i];
    if (use_ignore && v == ignore) continue;
    if (v < 0 || v >= V) bad = min(bad, static_cast<long long>(i));
    else ++cnt;
  }
  s_cnt[threadIdx.x] = cnt;
  s_bad[threadIdx.x] = bad;
  __syncthreads();
  for (int w = kScanThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) {
      s_cnt[threadIdx.x] += s_cnt[threadIdx.x + w];
      s_bad[threadIdx.x] = min(s_bad[threadIdx.x], s_bad[threadIdx.x + w]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[0] = s_cnt[0];
    out[1] = s_bad[0] == LLONG_MAX ? -1 : s_bad[0];
    out[2] = s_bad[0] == LLONG_MAX ? 0 : ids[s_bad[0]];
  }
}

struct IdScan {
  long long count = 0, bad = -1, value = 0;
};

// Runs scan_ids_kernel and copies its three numbers back (waits for the stream).
IdScan scan_ids(const Tensor& ids, int64_t V, int ignore, bool use_ignore) {
  IdScan r;
  if (ids.numel() == 0) return r;
  Tensor out = empty({6}, DType::i32);  // three int64
  scan_ids_kernel<<<1, kScanThreads, 0, stream()>>>(ptr<int32_t>(ids), ids.numel(), V, ignore, use_ignore,
                                                    reinterpret_cast<long long*>(ptr<int32_t>(out)));
  check_launch("index check");
  long long h[3];
  copy_d2h(h, out.device_ptr(), sizeof h);
  r.count = h[0];
  r.bad = h[1];
  r.value = h[2];
  return r;
}

// lse[i] = log-sum-exp of row i (double); term[i] = lse[i] - x[i, t_i], 0 for an ignored row. A warp per row.
template <typename T>
__global__ void ce_rows_kernel(const T* __restrict__ x, const int32_t* __restrict__ tg, int64_t N, int64_t V,
                               int ignore, double* __restrict__ lse, double* __restrict__ term) {
  const int lane = threadIdx.x & 31;
  SEQLAB_WARP_ROWS(i, N) {
    const T* xi = x + i * V;
    double m = -INFINITY;
    for (int64_t j = lane; j < V; j += 32) m = fmax(m, static_cast<double>(xi[j]));
    m = warp_max(m);
    double e = 0;
    for (int64_t j = lane; j < V; j += 32) e += exp(static_cast<double>(xi[j]) - m);
    e = warp_sum(e);
    if (lane == 0) {
      const double l = m + log(e);
      lse[i] = l;
      term[i] = tg[i] != ignore ? l - static_cast<double>(xi[tg[i]]) : 0.0;
    }
  }
}

// One block: loss = (sum of term, strided per thread in order, then a fixed tree) / count; 0 when count = 0.
template <typename T>
__global__ void ce_mean_kernel(const double* __restrict__ term, int64_t N, long long count, T* __restrict__ out) {
  __shared__ double s[kThreads];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) acc += term[i];
  s[threadIdx.x] = acc;
  __syncthreads();
  block_tree_sum(s);
  if (threadIdx.x == 0) out[0] = static_cast<T>(count > 0 ? s[0] / static_cast<double>(count) : 0.0);
}

template <typename T>
__global__ void ce_backward_kernel(const double* __restrict__ dy, const T* __restrict__ x,
                                   const int32_t* __restrict__ tg, const double* __restrict__ lse, int64_t N,
                                   int64_t V, long long count, int ignore, T* __restrict__ dx) {
  const double scale = count > 0 ? dy[0] / static_cast<double>(count) : 0.0;
  SEQLAB_CUDA_LOOP(k, N * V) {
    const int64_t i = k / V, j = k % V;
    const int32_t t = tg[i];
    if (t == ignore) {
      dx[k] = T(0);
      continue;
    }
    const double p = exp(static_cast<double>(x[k]) - lse[i]);
    dx[k] = static_cast<T>(j == t ? scale * (p - 1.0) : scale * p);
  }
}

// dy as float64 on the device (item()'s value, exactly).
Tensor as_f64(const Tensor& t) { return t.dtype() == DType::f64 ? t : t.to(DType::f64); }

// ---------------------------------------------------------------------------------------------------
// Embedding

template <typename U>
__global__ void gather_rows_kernel(const U* __restrict__ w, const int32_t* __restrict__ ids, U* __restrict__ y,
                                   int64_t n, int64_t D) {
  SEQLAB_CUDA_LOOP(k, n * D) y[k] = w[static_cast<int64_t>(ids[k / D]) * D + k % D];
}

// dw[v, :] = sum of dy[i, :] over positions i with ids[i] == v, in position order. A block per row v
// (grid-stride): each pass compacts the matching positions among the next kThreads ids in order
// (warp ballots, warps in order), then each thread adds those rows into its columns.
template <typename T>
__global__ void embedding_backward_kernel(const T* __restrict__ dy, const int32_t* __restrict__ ids, int64_t n,
                                          int64_t V, int64_t D, T* __restrict__ dw) {
  __shared__ int64_t pos[kThreads];
  __shared__ int warp_count[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  for (int64_t v = blockIdx.x; v < V; v += gridDim.x) {
    T* row = dw + v * D;
    for (int64_t base = 0; base < n; base += kThreads) {
      const int64_t i = base + threadIdx.x;
      const bool match = i < n && ids[i] == v;
      const unsigned ballot = __ballot_sync(kFull, match);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int offset = 0, total = 0;
      for (int w = 0; w < kWarps; ++w) {
        if (w < warp) offset += warp_count[w];
        total += warp_count[w];
      }
      if (match) pos[offset + __popc(ballot & ((1u << lane) - 1u))] = i;
      __syncthreads();
      if (total > 0)
        for (int64_t d = threadIdx.x; d < D; d += kThreads) {
          T acc = row[d];
          for (int k = 0; k < total; ++k) acc += dy[pos[k] * D + d];
          row[d] = acc;
        }
      __syncthreads();  // pos and warp_count are rewritten by the next pass
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------

kernels::NormForward layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  return norm_forward<true>("layer_norm", x, w, b, eps);
}

std::array<Tensor, 3> layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                                          const Tensor& rstd, bool need_dx, bool need_dw, bool need_db) {
  return norm_backward<true>("layer_norm", dy, x, w, mean, rstd, need_dx, need_dw, need_db);
}

kernels::NormForward rms_norm_forward(const Tensor& x, const Tensor& w, double eps) {
  return norm_forward<false>("rms_norm", x, w, Tensor(), eps);
}

std::array<Tensor, 2> rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                        bool need_dx, bool need_dw) {
  auto g = norm_backward<false>("rms_norm", dy, x, w, Tensor(), rstd, need_dx, need_dw, false);
  return {g[0], g[1]};
}

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
  philox(counter.data(), key[0], key[1]);
  return counter;
}

double philox_uniform(uint64_t seed, uint64_t index) { return uniform_of(seed, index); }

Tensor dropout_mask(const Shape& shape, DType dtype, double p, Generator& gen) {
  SEQLAB_CHECK(p >= 0 && p <= 1, "dropout: p must be in [0, 1], got ", p);
  Tensor mask = empty(shape, dtype);
  // one draw per call, whatever the size; in a CUDA graph capture, each replay draws it
  const uint64_t* seed_at = capturing() ? capture_seed(gen) : nullptr;
  const uint64_t seed = seed_at ? 0 : gen.next_u64();
  dispatch_float(dtype, "dropout", [&]<typename T>() {
    const T keep = p < 1 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
    const int64_t n = mask.numel();
    if (n == 0) return;
    dropout_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(ptr<T>(mask), n, seed, seed_at, p, keep);
    check_launch("dropout");
  });
  return mask;
}

Tensor apply_mask(const Tensor& x, const Tensor& mask) {
  SEQLAB_CHECK(x.shape() == mask.shape() && x.dtype() == mask.dtype(), "dropout: mask of shape ",
               to_string(mask.shape()), " for a tensor of shape ", to_string(x.shape()));
  Tensor y = empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "dropout", [&]<typename T>() {
    const int64_t n = x.numel();
    if (n == 0) return;
    mul_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(ptr<T>(x), ptr<T>(mask), ptr<T>(y), n);
    check_launch("dropout");
  });
  return y;
}

Tensor point_loss_forward(kernels::PointLoss kind, const Tensor& pred, const Tensor& target, double delta,
                          const char* op) {
  kernels::check_point_loss(kind, pred, target, delta, op);
  Tensor out = empty({}, pred.dtype());
  dispatch_float(pred.dtype(), op, [&]<typename T>() {
    const int64_t n = pred.numel(), n_partials = (n + kChunk - 1) / kChunk;
    Tensor partial = empty({std::max<int64_t>(n_partials, 1)}, DType::f64);
    if (n_partials > 0) {
      point_partials_kernel<T><<<static_cast<unsigned>(n_partials), kThreads, 0, stream()>>>(
          kind, ptr<T>(pred), ptr<T>(target), n, static_cast<T>(delta), ptr<double>(partial));
      check_launch(op);
    }
    point_mean_kernel<T><<<1, 1, 0, stream()>>>(ptr<double>(partial), n_partials, n, ptr<T>(out));
    check_launch(op);
  });
  return out;
}

std::array<Tensor, 2> point_loss_backward(kernels::PointLoss kind, const Tensor& dy, const Tensor& pred,
                                          const Tensor& target, double delta, bool need_pred, bool need_target) {
  std::array<Tensor, 2> g;
  if (!need_pred && !need_target) return g;
  if (need_pred) g[0] = empty(pred.shape(), pred.dtype());
  if (need_target) g[1] = empty(pred.shape(), pred.dtype());
  dispatch_float(pred.dtype(), "loss backward", [&]<typename T>() {
    const int64_t n = pred.numel();
    if (n == 0) return;
    Tensor d = as_f64(dy);
    point_backward_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(
        kind, ptr<double>(d), ptr<T>(pred), ptr<T>(target), n, static_cast<T>(delta),
        need_pred ? ptr<T>(g[0]) : nullptr, need_target ? ptr<T>(g[1]) : nullptr);
    check_launch("loss backward");
  });
  return g;
}

kernels::CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets, int ignore_index) {
  kernels::check_cross_entropy(logits, targets);
  const int64_t N = logits.size(0), V = logits.size(1);
  kernels::CrossEntropyForward r;
  const IdScan scan = scan_ids(targets, V, ignore_index, true);
  SEQLAB_CHECK(scan.bad < 0, "cross_entropy: target ", scan.value, " at row ", scan.bad,
               " is out of range for V = ", V, " classes (expected 0 <= target < ", V, " or ignore_index ",
               ignore_index, ")");
  r.count = scan.count;
  r.lse = empty({N}, DType::f64);
  r.loss = empty({}, logits.dtype());
  dispatch_float(logits.dtype(), "cross_entropy", [&]<typename T>() {
    Tensor term = empty({std::max<int64_t>(N, 1)}, DType::f64);
    if (N > 0) {
      ce_rows_kernel<T><<<row_blocks(N), kThreads, 0, stream()>>>(ptr<T>(logits), ptr<int32_t>(targets), N, V,
                                                                  ignore_index, ptr<double>(r.lse),
                                                                  ptr<double>(term));
      check_launch("cross_entropy");
    }
    ce_mean_kernel<T><<<1, kThreads, 0, stream()>>>(ptr<double>(term), N, r.count, ptr<T>(r.loss));
    check_launch("cross_entropy");
  });
  return r;
}

Tensor cross_entropy_backward(const Tensor& dy, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t count, int ignore_index) {
  const int64_t N = logits.size(0), V = logits.size(1);
  Tensor dx = empty(logits.shape(), logits.dtype());
  dispatch_float(logits.dtype(), "cross_entropy", [&]<typename T>() {
    if (N * V == 0) return;
    Tensor d = as_f64(dy);
    ce_backward_kernel<T><<<blocks_for(N * V, kThreads), kThreads, 0, stream()>>>(
        ptr<double>(d), ptr<T>(logits), ptr<int32_t>(targets), ptr<double>(lse), N, V, count, ignore_index,
        ptr<T>(dx));
    check_launch("cross_entropy backward");
  });
  return dx;
}

Tensor embedding_forward(const Tensor& weight, const Tensor& ids) {
  SEQLAB_CHECK(weight.dim() == 2, "embedding: weight must be (V, D), got ", to_string(weight.shape()));
  SEQLAB_CHECK(ids.dtype() == DType::i32, "embedding: ids must be int32, got ", dtype_name(ids.dtype()));
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  const IdScan scan = scan_ids(ids, V, 0, false);
  SEQLAB_CHECK(scan.bad < 0, "embedding: id ", scan.value, " at position ", scan.bad, " outside [0, ", V, ")");
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor y = empty(out_shape, weight.dtype());
  if (n * D == 0) return y;
  SEQLAB_CHECK(weight.device() == Device::cuda, "embedding: weight on ", device_name(weight.device()));
  const int32_t* pid = ptr<int32_t>(ids);
  if (dtype_size(weight.dtype()) == 8)
    gather_rows_kernel<uint64_t><<<blocks_for(n * D, kThreads), kThreads, 0, stream()>>>(
        static_cast<const uint64_t*>(weight.device_ptr()), pid, static_cast<uint64_t*>(y.device_ptr()), n, D);
  else
    gather_rows_kernel<uint32_t><<<blocks_for(n * D, kThreads), kThreads, 0, stream()>>>(
        static_cast<const uint32_t*>(weight.device_ptr()), pid, static_cast<uint32_t*>(y.device_ptr()), n, D);
  check_launch("embedding");
  return y;
}

Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t V, int64_t D) {
  SEQLAB_CHECK(dy.numel() == ids.numel() * D, "embedding backward: gradient of shape ", to_string(dy.shape()),
               " for ", ids.numel(), " ids of ", D, " values");
  Tensor dw = zeros({V, D}, dy.dtype());
  dispatch_float(dy.dtype(), "embedding backward", [&]<typename T>() {
    const int64_t n = ids.numel();
    if (n == 0 || V * D == 0) return;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(V, 65535 * 8));
    embedding_backward_kernel<T><<<grid, kThreads, 0, stream()>>>(ptr<T>(dy), ptr<int32_t>(ids), n, V, D,
                                                                  ptr<T>(dw));
    check_launch("embedding backward");
  });
  return dw;
}

}  // namespace seqlab::cuda
