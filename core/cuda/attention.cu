// Fused attention on the device, FlashAttention-2 style (Dao 2023), the twins of core/kernels/attention.cpp.
//
// Forward: one thread block per (batch * head, query tile of BR rows). The block's Q tile (scaled by
// 1/sqrt(Dh)) stays in shared memory; K and V tiles of BC keys are staged through shared memory in
// turn; each thread owns 4 query rows x BC/16 keys of the score tile and 4 rows x 4 NG output
// columns, and keeps the online softmax (running max m, running sum l, output rescaled by
// exp(m_old - m_new)) in registers. The row max and sum are reduced over the 16 threads of a row
// with xor shuffles (a fixed tree: every lane ends with the same bits). lse = m + log(l).
//
// Backward, without atomics: D_i = rowsum(dO * O) (one warp per row), then
//   dK/dV kernel: one block per (batch * head, key tile), looping over the query tiles that see it:
//     P^T = exp(S^T - lse), dV += P^T dO, dP^T = V dO^T, dS^T = P^T * (dP^T - D), dK += dS^T (scale Q);
//   dQ kernel: one block per (batch * head, query tile), looping over the visible key tiles:
//     P = exp(S - lse), dS = P * (dP - D), dQ += dS K, dQ *= scale at the end.
// Both recompute P from lse tile by tile; every sum runs in an order fixed by the sizes alone, so a
// run is bit-identical to itself. Memory: O(B H T Dh); no (Tq, Tk) buffer ever exists.
//
// Tiles: float BR = BC = 64 (256 threads), double BR = BC = 32 (128 threads); head width Dh <= W with
// W = 16, 32, 64 or 128 chosen at run time, a template parameter (rows padded in shared memory to W + 4,
// so the 16-byte row reads of 8 threads hit distinct banks). In the P V-like products a row's 16
// threads split the output columns and, for W < 64, the summed index too (see mm_nn). Accumulation
// in the input's type (float32 or float64). Every layout (heads split (B, H, T, Dh), the packed
// in-projection (B, T, 3, H, Dh), a KV cache (B, H, cap, Dh)) is a base pointer plus (batch, head, row)
// strides.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "core/cuda/attention.h"
#include "core/cuda/common.cuh"
#include "core/kernels/attention_check.h"

namespace seqlab::cuda {
namespace {

// Where the rows of head (b, h) live: base + b * sb + h * sh + row * ld.
struct Strides {
  int64_t sb = 0, sh = 0, ld = 0;
};

struct Geo {
  int64_t BH = 0, H = 1, Tq = 0, Tk = 0;
  int Dh = 0, Dp = 0;  // head width, and rounded up to a multiple of 4 (the zero-padded columns)
  bool causal = false;
  double scale = 1;
  Strides q, kv, o;  // q (and dq), k and v (and dk, dv), out (and dout)
  __host__ __device__ int64_t off() const { return Tk - Tq; }
};

template <typename T>
__device__ __forceinline__ T dexp(T x);
template <>
__device__ __forceinline__ float dexp(float x) { return expf(x); }
template <>
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// Four consecutive elements of shared memory (16-byte aligned for float, 32 for double).
__device__ __forceinline__ void ld4(const float* p, float (&o)[4]) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  o[0] = v.x;
  o[1] = v.y;
  o[2] = v.z;
  o[3] = v.w;
}
__device__ __forceinline__ void ld4(const double* p, double (&o)[4]) {
  const double2 a = *reinterpret_cast<const double2*>(p), b = *reinterpret_cast<const double2*>(p + 2);
  o[0] = a.x;
  o[1] = a.y;
  o[2] = b.x;
  o[3] = b.y;
}

// Max and sum over the 16 lanes of a half warp (the threads of one row): xor butterflies, so every
// lane holds the same value (a + b and b + a round alike).
template <typename T>
__device__ __forceinline__ T max16(T v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}
template <typename T>
__device__ __forceinline__ T sum16(T v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ bool visible(const Geo& g, int64_t i, int64_t j) {
  return i < g.Tq && j < g.Tk && (!g.causal || j <= i + g.off());
}

// Shared tile s (rows x LD) = rows of g (ldg apart) times mul, zero past rows_valid and past Dh (up to
// the compile-time width W: the matrix products run over W columns).
template <typename T, int LD, int W>
__device__ __forceinline__ void load_rows(T* s, const T* __restrict__ g, int64_t ldg, int64_t rows_valid, int rows,
                                          int Dh, T mul) {
  const int n = rows * W;
  for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
    const int r = idx / W, e = idx - r * W;
    s[r * LD + e] = (r < rows_valid && e < Dh) ? g[r * ldg + e] * mul : T(0);
  }
}

// acc[r][c] += sum_e A[ty*4 + r][e] * B[tx + 16 c][e] over the Dp (multiple of 4, <= W) columns.
template <typename T, int LD, int CPT, int W>
__device__ __forceinline__ void mm_nt(T (&acc)[4][CPT], const T* A, const T* B, int ty, int tx, int Dp) {
  const T* a = A + ty * 4 * LD;
  const T* b = B + tx * LD;
#pragma unroll(W <= 32 ? W / 4 : 2)
  for (int e = 0; e < W; e += 4) {
    if (e >= Dp) break;  // the zero padding between Dp and W
    T av[4][4], bv[CPT][4];
#pragma unroll
    for (int r = 0; r < 4; ++r) ld4(a + r * LD + e, av[r]);
#pragma unroll
    for (int c = 0; c < CPT; ++c) ld4(b + c * 16 * LD + e, bv[c]);
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < CPT; ++c) acc[r][c] += av[r][u] * bv[c][u];
  }
}

// The output columns of the P B products: NCT = min(16, W / 4) threads of a row's 16 cover the W
// columns 4 at a time (column group cg = tx % NCT); the KS = 16 / NCT thread sets (ks = tx / NCT) split
// the summed index j in interleaved chunks of 4 and keep partial sums, added once at the end by
// reduce_splits (a fixed xor tree: bit-identical reruns). So a narrow head (W = 16, 32) keeps all 16
// threads of a row busy instead of W / 4 of them.
template <int W>
constexpr int ncols_threads() {
  return W / 4 < 16 ? W / 4 : 16;
}

// acc[r][4 g + u] += sum_{j in this thread's chunks, j < NJ} P[ty*4 + r][j] * B[j][cg*4 + 64 g + u], for the
// column groups below Dp (the others are left alone).
template <typename T, int LDP, int LD, int NG, int NJ, int NCT>
__device__ __forceinline__ void mm_nn(T (&acc)[4][4 * NG], const T* P, const T* B, int ty, int tx, int Dp) {
  constexpr int KS = 16 / NCT;
  static_assert(NJ % (4 * KS) == 0, "mm_nn: the j chunks must split evenly");
  const int cg = tx % NCT, ks = tx / NCT;
  const T* p = P + ty * 4 * LDP;
  bool act[NG];
#pragma unroll
  for (int g = 0; g < NG; ++g) act[g] = cg * 4 + 64 * g < Dp;
#pragma unroll(KS > 1 ? 4 : 2)
  for (int it = 0; it < NJ / (4 * KS); ++it) {
    const int j = 4 * (ks + KS * it);
    T pv[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r) ld4(p + r * LDP + j, pv[r]);
#pragma unroll
    for (int jj = 0; jj < 4; ++jj)
#pragma unroll
      for (int g = 0; g < NG; ++g) {
        if (!act[g]) continue;
        T bv[4];
        ld4(B + (j + jj) * LD + cg * 4 + 64 * g, bv);
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int u = 0; u < 4; ++u) acc[r][4 * g + u] += pv[r][jj] * bv[u];
      }
  }
}

// Sums the KS partial accumulators of mm_nn over the lanes of one column group (xor offsets NCT .. 8):
// every lane of the group ends with the same bits.
template <typename T, int NG, int NCT>
__device__ __forceinline__ void reduce_splits(T (&acc)[4][4 * NG]) {
#pragma unroll
  for (int o = NCT; o < 16; o <<= 1)
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int u = 0; u < 4 * NG; ++u) acc[r][u] += __shfl_xor_sync(0xffffffffu, acc[r][u], o);
}

// Tile sizes per scalar type: rows per query tile = keys per key tile.
template <typename T>
constexpr int tile_rows() {
  return std::is_same_v<T, float> ? 64 : 32;
}
template <typename T, int W>
constexpr size_t fwd_smem() {
  constexpr int BR = tile_rows<T>(), LD = W + 4, LDP = BR + 4;
  return (3 * BR * LD + BR * LDP) * sizeof(T);
}
template <typename T, int W>
constexpr size_t dkdv_smem() {
  constexpr int BR = tile_rows<T>(), LD = W + 4, LDP = BR + 4;
  return (4 * BR * LD + 2 * BR * LDP) * sizeof(T);
}
template <typename T, int W>
constexpr size_t dq_smem() {
  constexpr int BR = tile_rows<T>(), LD = W + 4, LDP = BR + 4;
  return (4 * BR * LD + BR * LDP) * sizeof(T);
}

// The last key (exclusive) any of query rows [i0, i0 + BR) sees.
__device__ __forceinline__ int64_t keys_end(const Geo& g, int64_t i0, int BR) {
  if (!g.causal) return g.Tk;
  const int64_t last = min(i0 + BR, g.Tq) - 1;
  return min(g.Tk, last + g.off() + 1);
}

// ---- forward -------------------------------------------------------------------------------------

template <typename T, int W>
__global__ void __launch_bounds__(tile_rows<T>() * 4)
    fwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o,
               T* __restrict__ lse, Geo g) {
  constexpr int BR = tile_rows<T>(), BC = BR, CPT = BC / 16, NG = (W + 63) / 64,
                LD = W + 4, NCT = ncols_threads<W>(), LDP = BC + 4;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + BR * LD;
  T* sV = sK + BC * LD;
  T* sP = sV + BC * LD;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t n_tiles = (g.Tq + BR - 1) / BR;
  const int64_t bh = blockIdx.x % g.BH, tile = n_tiles - 1 - blockIdx.x / g.BH;  // the longest rows first
  const int64_t b = bh / g.H, h = bh % g.H, i0 = tile * BR;
  const T* qh = q + b * g.q.sb + h * g.q.sh;
  const T* kh = k + b * g.kv.sb + h * g.kv.sh;
  const T* vh = v + b * g.kv.sb + h * g.kv.sh;
  T* oh = o + b * g.o.sb + h * g.o.sh;
  load_rows<T, LD, W>(sQ, qh + i0 * g.q.ld, g.q.ld, g.Tq - i0, BR, g.Dh, static_cast<T>(g.scale));

  T acc[4][4 * NG];
  T m[4], l[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    m[r] = neg_inf<T>();
    l[r] = 0;
#pragma unroll
    for (int u = 0; u < 4 * NG; ++u) acc[r][u] = 0;
  }
  const int64_t j_end = keys_end(g, i0, BR);
  for (int64_t j0 = 0; j0 < j_end; j0 += BC) {
    __syncthreads();  // the previous tile's readers of sK, sV, sP are done
    load_rows<T, LD, W>(sK, kh + j0 * g.kv.ld, g.kv.ld, g.Tk - j0, BC, g.Dh, T(1));
    load_rows<T, LD, W>(sV, vh + j0 * g.kv.ld, g.kv.ld, g.Tk - j0, BC, g.Dh, T(1));
    __syncthreads();
    T s[4][CPT];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) s[r][c] = 0;
    mm_nt<T, LD, CPT, W>(s, sQ, sK, ty, tx, g.Dp);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t i = i0 + ty * 4 + r;
      T mx = neg_inf<T>();
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        if (!visible(g, i, j0 + tx + 16 * c)) s[r][c] = neg_inf<T>();
        mx = s[r][c] > mx ? s[r][c] : mx;
      }
      mx = max16(mx);
      const T m_new = mx > m[r] ? mx : m[r];
      const T shift = m_new == neg_inf<T>() ? T(0) : m_new;
      const T alpha = dexp(m[r] - shift);  // 0 on the first visible tile (m = -inf)
      T sum = 0;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        const T p = dexp(s[r][c] - shift);  // masked: exp(-inf) = 0
        sP[(ty * 4 + r) * LDP + tx + 16 * c] = p;
        sum += p;
      }
      l[r] = l[r] * alpha + sum;  // this thread's columns; summed over the row at the end
#pragma unroll
      for (int u = 0; u < 4 * NG; ++u) acc[r][u] *= alpha;
      m[r] = m_new;
    }
    __syncthreads();
    mm_nn<T, LDP, LD, NG, BC, NCT>(acc, sP, sV, ty, tx, g.Dp);
  }
  reduce_splits<T, NG, NCT>(acc);
  const int cg = tx % NCT;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const T lsum = sum16(l[r]);
    const int64_t i = i0 + ty * 4 + r;
    if (i >= g.Tq) continue;
    const T inv = T(1) / lsum;
#pragma unroll
    for (int gg = 0; gg < NG; ++gg)
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int d = cg * 4 + 64 * gg + u;
        if (tx < NCT && d < g.Dh) oh[i * g.o.ld + d] = acc[r][4 * gg + u] * inv;
      }
    if (tx == 0) lse[bh * g.Tq + i] = m[r] + dlog(lsum);
  }
}

// ---- backward --------------------------------------------------------------------------------------

// drow[bh * Tq + i] = sum_e dout[i][e] * out[i][e]: one warp per row, a fixed shuffle tree.
template <typename T>
__global__ void rowdot_kernel(const T* __restrict__ dout, const T* __restrict__ o, T* __restrict__ drow, Geo g) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; row < g.BH * g.Tq;
       row += warps) {
    const int64_t bh = row / g.Tq, i = row % g.Tq, b = bh / g.H, h = bh % g.H;
    const int64_t base = b * g.o.sb + h * g.o.sh + i * g.o.ld;
    T acc = 0;
    for (int e = lane; e < g.Dh; e += 32) acc += dout[base + e] * o[base + e];
#pragma unroll
    for (int w = 16; w > 0; w >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, w);
    if (lane == 0) drow[row] = acc;
  }
}

template <typename T, int W>
__global__ void __launch_bounds__(tile_rows<T>() * 4)
    dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                const T* __restrict__ dout, const T* __restrict__ lse, const T* __restrict__ drow,
                T* __restrict__ dk, T* __restrict__ dv, Geo g) {
  constexpr int BR = tile_rows<T>(), BC = BR, CPT = BR / 16, NG = (W + 63) / 64,
                LD = W + 4, NCT = ncols_threads<W>(), LDP = BR + 4;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + BC * LD;
  T* sQ = sV + BC * LD;
  T* sdO = sQ + BR * LD;
  T* sPT = sdO + BR * LD;  // (BC keys, BR queries)
  T* sdST = sPT + BC * LDP;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t bh = blockIdx.x % g.BH, jt = blockIdx.x / g.BH;  // the keys seen by most queries first
  const int64_t b = bh / g.H, h = bh % g.H, j0 = jt * BC;
  const T* qh = q + b * g.q.sb + h * g.q.sh;
  const T* kh = k + b * g.kv.sb + h * g.kv.sh;
  const T* vh = v + b * g.kv.sb + h * g.kv.sh;
  const T* doh = dout + b * g.o.sb + h * g.o.sh;
  const T* lh = lse + bh * g.Tq;
  const T* dh = drow + bh * g.Tq;
  const T scale = static_cast<T>(g.scale);
  load_rows<T, LD, W>(sK, kh + j0 * g.kv.ld, g.kv.ld, g.Tk - j0, BC, g.Dh, T(1));
  load_rows<T, LD, W>(sV, vh + j0 * g.kv.ld, g.kv.ld, g.Tk - j0, BC, g.Dh, T(1));

  T adk[4][4 * NG], adv[4][4 * NG];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int u = 0; u < 4 * NG; ++u) adk[r][u] = adv[r][u] = 0;
  // The first query that sees key j0 (causal: i + off >= j0); earlier tiles are fully masked.
  int64_t i_start = g.causal ? max(int64_t{0}, j0 - g.off()) : 0;
  i_start = i_start / BR * BR;
  for (int64_t i0 = i_start; i0 < g.Tq; i0 += BR) {
    __syncthreads();  // the previous tile's readers of sQ, sdO, sPT, sdST are done
    load_rows<T, LD, W>(sQ, qh + i0 * g.q.ld, g.q.ld, g.Tq - i0, BR, g.Dh, scale);
    load_rows<T, LD, W>(sdO, doh + i0 * g.o.ld, g.o.ld, g.Tq - i0, BR, g.Dh, T(1));
    __syncthreads();
    T st[4][CPT], dpt[4][CPT];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) st[r][c] = dpt[r][c] = 0;
    mm_nt<T, LD, CPT, W>(st, sK, sQ, ty, tx, g.Dp);   // S^T = K (scale Q)^T
    mm_nt<T, LD, CPT, W>(dpt, sV, sdO, ty, tx, g.Dp);  // dP^T = V dO^T
    T lq[CPT], dq[CPT];
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
      const int64_t i = i0 + tx + 16 * c;
      lq[c] = i < g.Tq ? lh[i] : T(0);
      dq[c] = i < g.Tq ? dh[i] : T(0);
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        T p = 0, ds = 0;
        if (visible(g, i0 + tx + 16 * c, j0 + ty * 4 + r)) {
          p = dexp(st[r][c] - lq[c]);
          ds = p * (dpt[r][c] - dq[c]);
        }
        sPT[(ty * 4 + r) * LDP + tx + 16 * c] = p;
        sdST[(ty * 4 + r) * LDP + tx + 16 * c] = ds;
      }
    __syncthreads();
    mm_nn<T, LDP, LD, NG, BR, NCT>(adv, sPT, sdO, ty, tx, g.Dp);  // dV += P^T dO
    mm_nn<T, LDP, LD, NG, BR, NCT>(adk, sdST, sQ, ty, tx, g.Dp);  // dK += dS^T (scale Q)
  }
  reduce_splits<T, NG, NCT>(adk);
  reduce_splits<T, NG, NCT>(adv);
  const int cg = tx % NCT;
  T* dkh = dk + b * g.kv.sb + h * g.kv.sh;
  T* dvh = dv + b * g.kv.sb + h * g.kv.sh;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t j = j0 + ty * 4 + r;
    if (j >= g.Tk) continue;
#pragma unroll
    for (int gg = 0; gg < NG; ++gg)
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int d = cg * 4 + 64 * gg + u;
        if (tx < NCT && d < g.Dh) {
          dkh[j * g.kv.ld + d] = adk[r][4 * gg + u];
          dvh[j * g.kv.ld + d] = adv[r][4 * gg + u];
        }
      }
  }
}

template <typename T, int W>
__global__ void __launch_bounds__(tile_rows<T>() * 4)
    dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
              const T* __restrict__ lse, const T* __restrict__ drow, T* __restrict__ dq, Geo g) {
  constexpr int BR = tile_rows<T>(), BC = BR, CPT = BC / 16, NG = (W + 63) / 64,
                LD = W + 4, NCT = ncols_threads<W>(), LDP = BC + 4;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sdO = sQ + BR * LD;
  T* sK = sdO + BR * LD;
  T* sV = sK + BC * LD;
  T* sdS = sV + BC * LD;  // (BR queries, BC keys)
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t n_tiles = (g.Tq + BR - 1) / BR;
  const int64_t bh = blockIdx.x % g.BH, tile = n_tiles - 1 - blockIdx.x / g.BH;
  const int64_t b = bh / g.H, h = bh % g.H, i0 = tile * BR;
  const T* qh = q + b * g.q.sb + h * g.q.sh;
  const T* kh = k + b * g.kv.sb + h * g.kv.sh;
  const T* vh = v + b * g.kv.sb + h * g.kv.sh;
  const T* doh = dout + b * g.o.sb + h * g.o.sh;
  const T scale = static_cast<T>(g.scale);
  load_rows<T, LD, W>(sQ, qh + i0 * g.q.ld, g.q.ld, g.Tq - i0, BR, g.Dh, scale);
  load_rows<T, LD, W>(sdO, doh + i0 * g.o.ld, g.o.ld, g.Tq - i0, BR, g.Dh, T(1));
  T lr[4], dr[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t i = i0 + ty * 4 + r;
    lr[r] = i < g.Tq ? lse[bh * g.Tq + i] : T(0);
    dr[r] = i < g.Tq ? drow[bh * g.Tq + i] : T(0);
  }
  T adq[4][4 * NG];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int u = 0; u < 4 * NG; ++u) adq[r][u] = 0;
  const int64_t j_end = keys_end(g, i0, BR);
  for (int64_t j0 = 0; j0 < j_end; j0 += BC) {
    __syncthreads();
    load_rows<T, LD, W>(sK, kh + j0 * g.kv.ld, g.kv.ld, g.Tk - j0, BC, g.Dh, T(1));
    load_rows<T, LD, W>(sV, vh + j0 * g.kv.ld, g.kv.ld, g.Tk - j0, BC, g.Dh, T(1));
    __syncthreads();
    T s[4][CPT], dp[4][CPT];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) s[r][c] = dp[r][c] = 0;
    mm_nt<T, LD, CPT, W>(s, sQ, sK, ty, tx, g.Dp);    // S = (scale Q) K^T
    mm_nt<T, LD, CPT, W>(dp, sdO, sV, ty, tx, g.Dp);  // dP = dO V^T
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        T ds = 0;
        if (visible(g, i0 + ty * 4 + r, j0 + tx + 16 * c)) ds = dexp(s[r][c] - lr[r]) * (dp[r][c] - dr[r]);
        sdS[(ty * 4 + r) * LDP + tx + 16 * c] = ds;
      }
    __syncthreads();
    mm_nn<T, LDP, LD, NG, BC, NCT>(adq, sdS, sK, ty, tx, g.Dp);  // dQ += dS K
  }
  reduce_splits<T, NG, NCT>(adq);
  const int cg = tx % NCT;
  T* dqh = dq + b * g.q.sb + h * g.q.sh;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t i = i0 + ty * 4 + r;
    if (i >= g.Tq) continue;
#pragma unroll
    for (int gg = 0; gg < NG; ++gg)
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int d = cg * 4 + 64 * gg + u;
        if (tx < NCT && d < g.Dh) dqh[i * g.q.ld + d] = adq[r][4 * gg + u] * scale;
      }
  }
}

// ---- launches --------------------------------------------------------------------------------------

// Opts a kernel into `bytes` of dynamic shared memory (above the default 48 KB), once per kernel.
template <typename K>
void allow_smem(K kernel, size_t bytes) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
        "cudaFuncSetAttribute (attention shared memory)");
}

unsigned grid_of(int64_t blocks, const char* what) {
  SEQLAB_CHECK(blocks < (int64_t{1} << 31), what, ": ", blocks, " thread blocks exceed the grid limit");
  return static_cast<unsigned>(blocks);
}

// The compile-time width W (16, 32, 64 or 128) the kernels are built for: the smallest W >= Dh. The
// products' loops over W unroll fully; columns between Dh and W are zero in shared memory and skipped.
template <typename F>
void with_width(int Dh, F&& f) {
  if (Dh <= 16)
    f.template operator()<16>();
  else if (Dh <= 32)
    f.template operator()<32>();
  else if (Dh <= 64)
    f.template operator()<64>();
  else
    f.template operator()<128>();
}

template <typename T>
void launch_forward(const T* q, const T* k, const T* v, T* o, T* lse, const Geo& g) {
  constexpr int BR = tile_rows<T>();
  const int64_t blocks = (g.Tq + BR - 1) / BR * g.BH;
  if (blocks == 0) return;
  with_width(g.Dh, [&]<int W>() {
    constexpr size_t smem = fwd_smem<T, W>();
    static const bool once = (allow_smem(fwd_kernel<T, W>, smem), true);
    (void)once;
    fwd_kernel<T, W><<<grid_of(blocks, "attention"), BR * 4, smem, stream()>>>(q, k, v, o, lse, g);
    check_launch("attention forward kernel");
  });
}

template <typename T>
void launch_backward(const T* dout, const T* q, const T* k, const T* v, const T* o, const T* lse, T* dq, T* dk,
                     T* dv, const Geo& g) {
  constexpr int BR = tile_rows<T>();
  Tensor drow = empty({std::max<int64_t>(1, g.BH * g.Tq)}, dtype_of<T>());
  T* pd = ptr<T>(drow);
  if (g.BH * g.Tq > 0) {
    rowdot_kernel<T><<<blocks_for(g.BH * g.Tq * 32, 256), 256, 0, stream()>>>(dout, o, pd, g);
    check_launch("attention backward rowsum kernel");
  }
  with_width(g.Dh, [&]<int W>() {
    const int64_t kv_blocks = (g.Tk + BR - 1) / BR * g.BH;
    if (kv_blocks > 0) {
      constexpr size_t smem = dkdv_smem<T, W>();
      static const bool once = (allow_smem(dkdv_kernel<T, W>, smem), true);
      (void)once;
      dkdv_kernel<T, W><<<grid_of(kv_blocks, "attention backward"), BR * 4, smem, stream()>>>(q, k, v, dout, lse,
                                                                                                   pd, dk, dv, g);
      check_launch("attention backward dk/dv kernel");
    }
    const int64_t q_blocks = (g.Tq + BR - 1) / BR * g.BH;
    if (q_blocks > 0) {
      constexpr size_t smem = dq_smem<T, W>();
      static const bool once = (allow_smem(dq_kernel<T, W>, smem), true);
      (void)once;
      dq_kernel<T, W><<<grid_of(q_blocks, "attention backward"), BR * 4, smem, stream()>>>(q, k, v, dout, lse, pd,
                                                                                               dq, g);
      check_launch("attention backward dq kernel");
    }
  });
}

// ---- checks (the CPU's, core/kernels/attention.cpp, plus the device's head-width limit) --------------

void check_head_width(const char* op, int64_t Dh) {
  SEQLAB_CHECK(Dh <= kAttentionMaxHeadDim, op, ": head width Dh = ", Dh, " exceeds the CUDA kernels' maximum of ",
               kAttentionMaxHeadDim);
}

Geo make_geo(int64_t BH, int64_t H, int64_t Tq, int64_t Tk, int64_t Dh, bool causal) {
  Geo g;
  g.BH = BH;
  g.H = H;
  g.Tq = Tq;
  g.Tk = Tk;
  g.Dh = static_cast<int>(Dh);
  g.Dp = static_cast<int>((Dh + 3) / 4 * 4);
  g.causal = causal;
  g.scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  return g;
}

// Heads split: q, out (B, H, Tq, Dh); k, v (B, H, cap, Dh) with Tk <= cap rows used.
Geo split_geo(const Tensor& q, int64_t Tk, int64_t cap, bool causal) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Dh = q.size(3);
  Geo g = make_geo(B * H, H, Tq, Tk, Dh, causal);
  g.q = g.o = Strides{H * Tq * Dh, Tq * Dh, Dh};
  g.kv = Strides{H * cap * Dh, cap * Dh, Dh};
  return g;
}

// The packed in-projection (B, T, 3, H, Dh) and the output (B, T, H, Dh).
Geo packed_geo(int64_t B, int64_t T, int64_t H, int64_t Dh, bool causal) {
  Geo g = make_geo(B * H, H, T, T, Dh, causal);
  g.q = g.kv = Strides{T * 3 * H * Dh, Dh, 3 * H * Dh};
  g.o = Strides{T * H * Dh, Dh, H * Dh};
  return g;
}

// The CPU's checks (core/kernels/attention_check.h), then the device's head-width limit.
void check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  kernels::check_attention_qkv(op, q, k, v, causal);
  check_head_width(op, q.size(3));
}

void check_packed(const char* op, const Tensor& qkv, int64_t H) {
  kernels::check_attention_packed(op, qkv, H);
  check_head_width(op, qkv.size(2) / (3 * H));
}

// The saved forward results the backward reads (device safety: the CPU reads them unchecked).
void check_saved(const char* op, const Tensor& out, const Tensor& lse, const Shape& out_shape, const Shape& lse_shape,
                 DType dt) {
  SEQLAB_CHECK(out.shape() == out_shape && out.dtype() == dt, op, ": out ", to_string(out.shape()), " must be ",
               dtype_name(dt), " ", to_string(out_shape));
  SEQLAB_CHECK(lse.shape() == lse_shape && lse.dtype() == dt, op, ": lse ", to_string(lse.shape()), " must be ",
               dtype_name(dt), " ", to_string(lse_shape));
}

// ---- copies ------------------------------------------------------------------------------------------

// Part p of x (B, T, n, H, Dh) -> y (B, H, T, Dh).
template <typename T>
__global__ void split_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t B, int64_t Tn, int64_t n, int64_t p,
                             int64_t H, int64_t Dh) {
  const int64_t total = B * H * Tn * Dh;
  SEQLAB_CUDA_LOOP(idx, total) {
    const int64_t e = idx % Dh, r = idx / Dh, t = r % Tn, bh = r / Tn, h = bh % H, b = bh / H;
    y[idx] = x[((b * Tn + t) * n + p) * H * Dh + h * Dh + e];
  }
}

// y (B, T, n, H, Dh) part p <- x (B, H, T, Dh).
template <typename T>
__global__ void merge_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t B, int64_t Tn, int64_t n, int64_t p,
                             int64_t H, int64_t Dh) {
  const int64_t total = B * Tn * H * Dh;
  SEQLAB_CUDA_LOOP(idx, total) {  // over y's part-p elements in y's order: coalesced writes
    const int64_t e = idx % Dh, r = idx / Dh, h = r % H, bt = r / H, t = bt % Tn, b = bt / Tn;
    y[(bt * n + p) * H * Dh + h * Dh + e] = x[((b * H + h) * Tn + t) * Dh + e];
  }
}

template <typename T>
__global__ void add_positions_kernel(const T* __restrict__ x, const T* __restrict__ table, T* __restrict__ y,
                                     int64_t total, int64_t Tn, int64_t D) {
  SEQLAB_CUDA_LOOP(idx, total) {
    const int64_t e = idx % D, t = (idx / D) % Tn;
    y[idx] = x[idx] + table[t * D + e];
  }
}

// dt[t][e] = sum over b, in order, of dy[b][t][e] (the CPU's order: bit-identical).
template <typename T>
__global__ void positions_table_kernel(const T* __restrict__ dy, T* __restrict__ dt, int64_t B, int64_t Tn,
                                       int64_t D) {
  SEQLAB_CUDA_LOOP(idx, Tn * D) {
    T acc = 0;
    for (int64_t b = 0; b < B; ++b) acc += dy[b * Tn * D + idx];
    dt[idx] = acc;
  }
}

template <typename T>
__global__ void cache_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t BH, int64_t Ts, int64_t Td,
                                  int64_t rows, int64_t row0, int64_t Dh) {
  SEQLAB_CUDA_LOOP(idx, BH * rows * Dh) {
    const int64_t e = idx % Dh, r = idx / Dh, t = r % rows, bh = r / rows;
    dst[(bh * Td + row0 + t) * Dh + e] = src[(bh * Ts + t) * Dh + e];
  }
}

}  // namespace

// ---- public functions ----------------------------------------------------------------------------------

kernels::AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  check_qkv("attention", q, k, v, causal);
  const Geo g = split_geo(q, k.size(2), k.size(2), causal);
  kernels::AttentionForward f{empty(q.shape(), q.dtype()), empty({q.size(0), q.size(1), q.size(2)}, q.dtype())};
  dispatch_float(q.dtype(), "attention", [&]<typename T>() {
    launch_forward<T>(ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(f.out), ptr<T>(f.lse), g);
  });
  return f;
}

std::array<Tensor, 3> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const Tensor& out, const Tensor& lse, bool causal) {
  check_qkv("attention backward", q, k, v, causal);
  kernels::check_attention_dout(dout, q);
  check_saved("attention backward", out, lse, q.shape(), {q.size(0), q.size(1), q.size(2)}, q.dtype());
  const Geo g = split_geo(q, k.size(2), k.size(2), causal);
  Tensor dq = empty(q.shape(), q.dtype()), dk = empty(k.shape(), k.dtype()), dv = empty(v.shape(), v.dtype());
  dispatch_float(q.dtype(), "attention backward", [&]<typename T>() {
    launch_backward<T>(ptr<T>(dout), ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(out), ptr<T>(lse), ptr<T>(dq),
                       ptr<T>(dk), ptr<T>(dv), g);
  });
  return {dq, dk, dv};
}

Tensor attention_forward_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t len) {
  kernels::check_attention_cache(k_cache, len);
  check_qkv("attention_forward_cached", q, k_cache, v_cache, false);
  SEQLAB_CHECK(len >= q.size(2), "attention_forward_cached: ", q.size(2), " queries but only ", len, " cached keys");
  const Geo g = split_geo(q, len, k_cache.size(2), true);
  Tensor out = empty(q.shape(), q.dtype());
  Tensor lse = empty({q.size(0), q.size(1), q.size(2)}, q.dtype());
  dispatch_float(q.dtype(), "attention_forward_cached", [&]<typename T>() {
    launch_forward<T>(ptr<T>(q), ptr<T>(k_cache), ptr<T>(v_cache), ptr<T>(out), ptr<T>(lse), g);
  });
  return out;
}

kernels::AttentionForward attention_packed_forward(const Tensor& qkv, int64_t H, bool causal) {
  check_packed("attention_packed", qkv, H);
  const int64_t B = qkv.size(0), T = qkv.size(1), Dh = qkv.size(2) / (3 * H), D = H * Dh;
  const Geo g = packed_geo(B, T, H, Dh, causal);
  kernels::AttentionForward f{empty({B, T, D}, qkv.dtype()), empty({B, H, T}, qkv.dtype())};
  dispatch_float(qkv.dtype(), "split_heads", [&]<typename T_>() {
    const T_* p = ptr<T_>(qkv);
    launch_forward<T_>(p, p + D, p + 2 * D, ptr<T_>(f.out), ptr<T_>(f.lse), g);
  });
  return f;
}

Tensor attention_packed_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int64_t H,
                                 bool causal) {
  check_packed("attention_packed backward", qkv, H);
  const int64_t B = qkv.size(0), T = qkv.size(1), Dh = qkv.size(2) / (3 * H), D = H * Dh;
  kernels::check_attention_packed_dout(dout, out, qkv, H);
  check_saved("attention_packed backward", out, lse, {B, T, D}, {B, H, T}, qkv.dtype());
  const Geo g = packed_geo(B, T, H, Dh, causal);
  Tensor dqkv = empty(qkv.shape(), qkv.dtype());
  dispatch_float(qkv.dtype(), "split_heads", [&]<typename T_>() {
    const T_* p = ptr<T_>(qkv);
    T_* d = ptr<T_>(dqkv);
    launch_backward<T_>(ptr<T_>(dout), p, p + D, p + 2 * D, ptr<T_>(out), ptr<T_>(lse), d, d + D, d + 2 * D, g);
  });
  return dqkv;
}

std::vector<Tensor> split_heads(const Tensor& x, int64_t n, int64_t H) {
  SEQLAB_CHECK(x.dim() == 3 && n > 0 && H > 0 && x.size(2) % (n * H) == 0, "split_heads: cannot read ",
               to_string(x.shape()), " as (B, T, ", n, ", ", H, ", Dh)");
  const int64_t B = x.size(0), T = x.size(1), Dh = x.size(2) / (n * H);
  std::vector<Tensor> parts;
  for (int64_t p = 0; p < n; ++p) parts.push_back(empty({B, H, T, Dh}, x.dtype()));
  dispatch_float(x.dtype(), "split_heads", [&]<typename T_>() {
    const int64_t total = B * H * T * Dh;
    if (total == 0) return;
    for (int64_t p = 0; p < n; ++p) {
      split_kernel<T_><<<blocks_for(total), 256, 0, stream()>>>(ptr<T_>(x), ptr<T_>(parts[p]), B, T, n, p, H, Dh);
      check_launch("split_heads kernel");
    }
  });
  return parts;
}

Tensor merge_heads(const std::vector<Tensor>& parts) {
  SEQLAB_CHECK(!parts.empty() && parts[0].dim() == 4, "merge_heads: expected tensors of shape (B, H, T, Dh)");
  const Shape& s0 = parts[0].shape();
  for (const auto& p : parts)
    SEQLAB_CHECK(p.shape() == s0 && p.dtype() == parts[0].dtype(), "merge_heads: parts differ in shape or dtype");
  const int64_t n = static_cast<int64_t>(parts.size()), B = s0[0], H = s0[1], T = s0[2], Dh = s0[3];
  Tensor y = empty({B, T, n * H * Dh}, parts[0].dtype());
  dispatch_float(y.dtype(), "merge_heads", [&]<typename T_>() {
    const int64_t total = B * T * H * Dh;
    if (total == 0) return;
    for (int64_t p = 0; p < n; ++p) {
      merge_kernel<T_><<<blocks_for(total), 256, 0, stream()>>>(ptr<T_>(parts[p]), ptr<T_>(y), B, T, n, p, H, Dh);
      check_launch("merge_heads kernel");
    }
  });
  return y;
}

Tensor add_positions_forward(const Tensor& x, const Tensor& table, int64_t offset) {
  SEQLAB_CHECK(x.dim() == 3 && table.dim() == 2 && table.size(1) == x.size(2), "add_positions: x ",
               to_string(x.shape()), " and table ", to_string(table.shape()), " must be (B, T, D) and (L, D)");
  SEQLAB_CHECK(x.dtype() == table.dtype(), "add_positions: x and table must share one dtype");
  SEQLAB_CHECK(offset >= 0 && offset + x.size(1) <= table.size(0), "add_positions: positions ", offset, "..",
               offset + x.size(1) - 1, " exceed the table's ", table.size(0), " rows");
  const int64_t T = x.size(1), D = x.size(2);
  Tensor y = empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "add_positions", [&]<typename T_>() {
    const int64_t total = x.numel();
    if (total == 0) return;
    add_positions_kernel<T_><<<blocks_for(total), 256, 0, stream()>>>(ptr<T_>(x), ptr<T_>(table) + offset * D,
                                                                      ptr<T_>(y), total, T, D);
    check_launch("add_positions kernel");
  });
  return y;
}

Tensor add_positions_backward_table(const Tensor& dy, const Shape& table_shape, int64_t offset) {
  SEQLAB_CHECK(dy.dim() == 3 && table_shape.size() == 2 && table_shape[1] == dy.size(2) && offset >= 0 &&
                   offset + dy.size(1) <= table_shape[0],
               "add_positions backward: dy ", to_string(dy.shape()), " at offset ", offset, " does not fit the table ",
               to_string(table_shape));
  const int64_t B = dy.size(0), T = dy.size(1), D = dy.size(2);
  Tensor dt = zeros(table_shape, dy.dtype());
  dispatch_float(dy.dtype(), "add_positions backward", [&]<typename T_>() {
    if (T * D == 0) return;
    positions_table_kernel<T_><<<blocks_for(T * D), 256, 0, stream()>>>(ptr<T_>(dy), ptr<T_>(dt) + offset * D, B, T,
                                                                        D);
    check_launch("add_positions backward kernel");
  });
  return dt;
}

void kv_cache_copy(const Tensor& src, const Tensor& dst, int64_t rows, int64_t dst_row0) {
  SEQLAB_CHECK(src.dim() == 4 && dst.dim() == 4 && src.size(0) == dst.size(0) && src.size(1) == dst.size(1) &&
                   src.size(3) == dst.size(3) && src.dtype() == dst.dtype(),
               "kv_cache_copy: src ", to_string(src.shape()), " and dst ", to_string(dst.shape()),
               " must be (B, H, T, Dh) of one dtype");
  SEQLAB_CHECK(rows >= 0 && rows <= src.size(2) && dst_row0 >= 0 && dst_row0 + rows <= dst.size(2),
               "kv_cache_copy: rows ", dst_row0, "..", dst_row0 + rows - 1, " outside ", to_string(dst.shape()));
  const int64_t BH = src.size(0) * src.size(1), Dh = src.size(3);
  dispatch_float(src.dtype(), "kv_cache_copy", [&]<typename T_>() {
    if (BH * rows * Dh == 0) return;
    cache_copy_kernel<T_><<<blocks_for(BH * rows * Dh), 256, 0, stream()>>>(
        ptr<T_>(src), ptr<T_>(dst), BH, src.size(2), dst.size(2), rows, dst_row0, Dh);
    check_launch("kv_cache_copy kernel");
  });
}

}  // namespace seqlab::cuda
