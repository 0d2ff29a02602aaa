// Fused attention kernels (FlashAttention-2 on the CPU). Forward: online softmax per row (running
// max m and sum l, the output accumulator rescaled by exp(m_old - m_new)), then lse = m + log(l).
// Backward: P = exp(S - lse) recomputed per tile, dV += P^T dO, dP = dO V^T, dS = P * (dP - D) with
// D = rowsum(dO * O), dK += scale dS^T Q, dQ += scale dS K.
// Two implementations of the same loops: float with Dh a multiple of 16 (every head width the
// standard models use) runs explicit vector code of kW lanes, one register of the ISA path this copy
// is compiled for (core/kernels/isa_target.h: 16 on AVX-512, 8 on AVX2, 4 on SSE2): blocks of kR
// query rows against K^T and V^T packed once per head, so every score vector is kW keys x one row
// and the exponentials run kW at a time (vmath::exp_nonpositive_of); kR and the keys per dK/dV pass
// fit the path's register file (rows_per_block, keys_per_pass). Tiny CBLAS
// calls on 64 x 64 x 16 tiles spent most of their time packing and in edge kernels (the profile of
// issue 5). Double (gradchecks) and other head widths keep the tile loops on single-threaded GEMMs.
// The vector kernels also read q, k, v straight from the packed in-projection (B, T, 3, H, Dh) and
// write the output as (B, T, H Dh) (attention_packed_*), so the layer needs no head-split copies.
#include "core/kernels/attention.h"


#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/kernels/attention_check.h"
#include "core/kernels/matmul.h"
#include "core/kernels/vmath.h"
#include "core/parallel.h"
#include "core/kernels/isa_target.h"  // last: the ISA of everything below

namespace seqlab::kernels::SEQLAB_ISA_NS {
namespace {

// Query rows and keys per tile: a 64 x 64 score tile (16 KB in float) stays in L1/L2 next to its
// Q, K and V slices, and the GEMMs are large enough that the BLAS call overhead is small.
constexpr int64_t kBr = 64;
constexpr int64_t kBc = 64;



// x[c] = exp(x[c] - shift) for c < n.
inline void exp_shifted(double* x, int64_t n, double shift) {
  for (int64_t c = 0; c < n; ++c) x[c] = std::exp(x[c] - shift);
}
inline void exp_shifted(float* x, int64_t n, float shift) {
  // vmath's branch-free exp vectorises (std::exp does not); with Dh = 16 the exponentials would
  // otherwise cost as much as the GEMMs.
  for (int64_t c = 0; c < n; ++c) x[c] = vmath::exp_nonpositive_of(x[c] - shift);
}

// Max and sum of a row with 8 independent accumulators in a fixed pattern: a single running value
// is a chain of dependent adds (4 cycles each) that cost as much as the whole tile GEMM; eight
// lanes vectorise and keep the result independent of threads (the order is fixed).
template <typename T>
T row_max(const T* x, int64_t n, T init) {
  T acc[8];
  std::fill(acc, acc + 8, init);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int u = 0; u < 8; ++u) acc[u] = std::max(acc[u], x[c + u]);
  for (; c < n; ++c) acc[0] = std::max(acc[0], x[c]);
  return std::max({acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]});
}
template <typename T>
T row_sum(const T* x, int64_t n) {
  T acc[8] = {};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int u = 0; u < 8; ++u) acc[u] += x[c + u];
  for (; c < n; ++c) acc[0] += x[c];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

struct Dims {
  int64_t BH = 0, Tq = 0, Tk = 0, Dh = 0;
  int64_t kv_head_stride = 0;  // elements between heads of k and v (Tk * Dh, or cap * Dh for a cache)
  bool causal = false;
  int64_t off() const { return Tk - Tq; }  // query i sees keys j <= i + off when causal
  int64_t visible_end(int64_t i) const { return causal ? std::min(Tk, i + off() + 1) : Tk; }
};

// Per-chunk workspace for forward: one score tile and the running max / sum of each row.
template <typename T>
struct FwdScratch {
  std::vector<T> s, m, l;
  FwdScratch() : s(kBr * kBc), m(kBr), l(kBr) {}
};

// Query rows [i0, i1) of one head: q, o (Tq, Dh); k, v (Tk, Dh) (rows Dh apart); lse (Tq).
template <typename T>
void forward_tile(const T* q, const T* k, const T* v, T* o, T* lse, int64_t i0, int64_t i1, const Dims& d,
                  FwdScratch<T>& w) {
  const int64_t Dh = d.Dh, rows = i1 - i0;
  const T scale = T(1) / std::sqrt(static_cast<T>(Dh));
  T* s = w.s.data();
  T* m = w.m.data();
  T* l = w.l.data();
  std::fill(o + i0 * Dh, o + i1 * Dh, T(0));
  std::fill(m, m + rows, -std::numeric_limits<T>::infinity());
  std::fill(l, l + rows, T(0));
  const int64_t j_end = d.visible_end(i1 - 1);  // keys past the last row's horizon are masked for every row
  for (int64_t j0 = 0; j0 < j_end; j0 += kBc) {
    const int64_t cols = std::min(kBc, j_end - j0);
    gemm_serial(false, true, rows, cols, Dh, scale, q + i0 * Dh, Dh, k + j0 * Dh, Dh, T(0), s, cols);
    for (int64_t r = 0; r < rows; ++r) {
      T* sr = s + r * cols;
      const int64_t vis = std::clamp<int64_t>(d.visible_end(i0 + r) - j0, 0, cols);
      if (vis == 0) {  // this row sees nothing of the tile: it adds nothing and keeps its max
        std::fill(sr, sr + cols, T(0));
        continue;
      }
      const T mx = row_max(sr, vis, m[r]);
      exp_shifted(sr, vis, mx);
      const T sum = row_sum(sr, vis);
      std::fill(sr + vis, sr + cols, T(0));
      const T alpha = std::exp(m[r] - mx);  // 0 on the first visible tile (m = -inf)
      l[r] = l[r] * alpha + sum;
      m[r] = mx;
      if (alpha != T(1)) {
        T* orow = o + (i0 + r) * Dh;
        for (int64_t e = 0; e < Dh; ++e) orow[e] *= alpha;
      }
    }
    gemm_serial(false, false, rows, Dh, cols, T(1), s, cols, v + j0 * Dh, Dh, T(1), o + i0 * Dh, Dh);
  }
  for (int64_t r = 0; r < rows; ++r) {
    T* orow = o + (i0 + r) * Dh;
    const T inv = T(1) / l[r];
    for (int64_t e = 0; e < Dh; ++e) orow[e] *= inv;
    lse[i0 + r] = m[r] + std::log(l[r]);
  }
}

// Forward over every (head, query tile), parallel; each task writes its own rows of o and lse.
template <typename T>
void forward_all(const T* q, const T* k, const T* v, T* o, T* lse, const Dims& d) {
  const int64_t n_tiles = (d.Tq + kBr - 1) / kBr;
  parallel_for(0, d.BH * n_tiles, 1, [&](int64_t t0, int64_t t1) {
    FwdScratch<T> w;  // once per chunk, never inside the tile loops
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / n_tiles, i0 = (t % n_tiles) * kBr;
      forward_tile(q + bh * d.Tq * d.Dh, k + bh * d.kv_head_stride, v + bh * d.kv_head_stride,
                   o + bh * d.Tq * d.Dh, lse + bh * d.Tq, i0, std::min(d.Tq, i0 + kBr), d, w);
    }
  });
}

// Backward of one head; dq, dk, dv (zeroed here) belong to this task alone.
template <typename T>
void backward_head(const T* dout, const T* q, const T* k, const T* v, const T* o, const T* lse, T* dq, T* dk,
                   T* dv, const Dims& d, std::vector<T>& s, std::vector<T>& dp, std::vector<T>& drow) {
  const int64_t Dh = d.Dh, Tq = d.Tq, Tk = d.Tk;
  const T scale = T(1) / std::sqrt(static_cast<T>(Dh));
  std::fill(dq, dq + Tq * Dh, T(0));
  std::fill(dk, dk + Tk * Dh, T(0));
  std::fill(dv, dv + Tk * Dh, T(0));
  for (int64_t i = 0; i < Tq; ++i) {  // D_i = rowsum(dO * O) = sum_j P_ij dP_ij
    T acc = 0;
    for (int64_t e = 0; e < Dh; ++e) acc += dout[i * Dh + e] * o[i * Dh + e];
    drow[static_cast<size_t>(i)] = acc;
  }
  for (int64_t j0 = 0; j0 < Tk; j0 += kBc) {
    const int64_t cols = std::min(kBc, Tk - j0);
    // The first query that sees key j0 (causal: i + off >= j0); earlier tiles are fully masked.
    const int64_t i_start = d.causal ? std::max<int64_t>(0, j0 - d.off()) : 0;
    for (int64_t i0 = i_start; i0 < Tq; i0 += kBr) {
      const int64_t rows = std::min(kBr, Tq - i0);
      T* P = s.data();
      T* dS = dp.data();
      gemm_serial(false, true, rows, cols, Dh, scale, q + i0 * Dh, Dh, k + j0 * Dh, Dh, T(0), P, cols);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t vis = std::clamp<int64_t>(d.visible_end(i0 + r) - j0, 0, cols);
        T* pr = P + r * cols;
        const T lr = lse[i0 + r];
        exp_shifted(pr, vis, lr);
        std::fill(pr + vis, pr + cols, T(0));
      }
      // dV_j += P^T dO_i
      gemm_serial(true, false, cols, Dh, rows, T(1), P, cols, dout + i0 * Dh, Dh, T(1), dv + j0 * Dh, Dh);
      // dP = dO_i V_j^T;  dS = P * (dP - D_i)
      gemm_serial(false, true, rows, cols, Dh, T(1), dout + i0 * Dh, Dh, v + j0 * Dh, Dh, T(0), dS, cols);
      for (int64_t r = 0; r < rows; ++r) {
        const T dr = drow[static_cast<size_t>(i0 + r)];
        T* pr = P + r * cols;
        T* gr = dS + r * cols;
        for (int64_t c = 0; c < cols; ++c) gr[c] = pr[c] * (gr[c] - dr);
      }
      // dK_j += scale dS^T Q_i;  dQ_i += scale dS K_j
      gemm_serial(true, false, cols, Dh, rows, scale, dS, cols, q + i0 * Dh, Dh, T(1), dk + j0 * Dh, Dh);
      gemm_serial(false, false, rows, Dh, cols, scale, dS, cols, k + j0 * Dh, Dh, T(1), dq + i0 * Dh, Dh);
    }
  }
}

// ---- float, Dh = kW NV: explicit vector loops, kW lanes (one register of this ISA path) ---------

constexpr int kW = kIsaLanes;
using VF = VecF;  // loads and stores by load_lanes / store_lanes: head rows are only 4-byte aligned
using VI = vmath::IntVec<VF>;

// vmath's splat, not isa_target's splat_lanes: GCC schedules these kernels differently with the
// other one (the same operations in another order; see splat_lanes), and this keeps their code.
[[gnu::always_inline]] inline VF splat(float v) { return vmath::splat<VF>(v); }
[[gnu::always_inline]] inline VF vmax(VF a, VF b) { return a > b ? a : b; }
// Horizontal max and sum in a fixed tree order (deterministic, independent of threads).
[[gnu::always_inline]] inline float hmax(VF x) { return vmath::reduce_max(x); }
[[gnu::always_inline]] inline float hsum(VF x) { return vmath::reduce_add(x); }
// Lane numbers 0 .. kW - 1 (masks of the keys past a row's visible end). Read from a constant
// array in the kernels: a vector global would need a static initialiser, and that one would run
// this path's instructions at program start on every CPU.
alignas(64) constexpr int32_t kLaneIdx[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
[[gnu::always_inline]] inline VI lanes() {
  VI v;
  std::memcpy(&v, kLaneIdx, sizeof v);
  return v;
}

// Register blocking per path and head width (NV vectors per head row). AVX-512 (32 registers):
// kR = 8 query rows and 8 keys per dK/dV pass. AVX2 and SSE2 (16 registers): the accumulators of
// a micro-block (kR x NV in the forward's O += P V, 2 x keys x NV in the backward's dK/dV pass)
// stay at 12 or fewer, so nothing spills.
template <int NV>
constexpr int rows_per_block() {
  if (kW == 16) return 8;
  return NV <= 1 ? 8 : NV == 2 ? 4 : NV <= 4 ? 2 : 1;
}
// Register blocks of rows per dK/dV pass: 1 on AVX-512 (kR = 8 already), 4 elsewhere (16 rows).
template <int NV>
constexpr int row_blocks_per_pass() {
  return kW == 16 ? 1 : std::max(1, 16 / rows_per_block<NV>());
}
template <int NV>
constexpr int keys_per_pass() {
  if (kW == 16) return 8;
  return NV <= 1 ? 4 : NV <= 3 ? 2 : 1;
}


// Where head (b, h) of q, k, v (and of their gradients) and of the output lives: x's rows of head
// (b, h) start at b * x_b + h * x_h and are ld apart. Heads split into (B, H, T, Dh) tensors:
// H = 1 (bh counts heads), ld = Dh. The packed in-projection (B, T, 3, H, Dh): ld = 3 H Dh for
// q, k, v and H Dh for the output, so no split or merge copy is needed.
struct Layout {
  int64_t H = 1;
  int64_t ldq = 0, ldo = 0;            // row strides of q, k, v (and grads) and of out, dout
  int64_t q_b = 0, q_h = 0, kv_b = 0, kv_h = 0, o_b = 0, o_h = 0;
  int64_t q(int64_t bh) const { return bh / H * q_b + bh % H * q_h; }
  int64_t kv(int64_t bh) const { return bh / H * kv_b + bh % H * kv_h; }
  int64_t o(int64_t bh) const { return bh / H * o_b + bh % H * o_h; }
};

Layout split_layout(const Dims& d) {
  Layout l;
  l.ldq = l.ldo = d.Dh;
  l.q_b = l.o_b = d.Tq * d.Dh;
  l.kv_b = d.kv_head_stride;
  return l;
}

Layout packed_layout(int64_t T, int64_t H, int64_t Dh) {
  Layout l;
  l.H = H;
  l.ldq = 3 * H * Dh;
  l.ldo = H * Dh;
  l.q_b = l.kv_b = T * 3 * H * Dh;
  l.o_b = T * H * Dh;
  l.q_h = l.kv_h = l.o_h = Dh;
  return l;
}

constexpr int64_t kFwdC = 128;   // keys per forward block (one max / rescale per row and block)
constexpr int64_t kBwdC = 64;    // keys per backward tile (its dK, dV rows stay in L1)

inline int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

// kt (Dh, ld) = x^T for x (rows, Dh) with rows ldx apart, columns rows .. ld - 1 zero (ld = round16).
void pack_transposed(const float* x, int64_t ldx, int64_t rows, int64_t Dh, float* kt, int64_t ld) {
  for (int64_t e = 0; e < Dh; ++e) {
    float* dst = kt + e * ld;
    for (int64_t j = 0; j < rows; ++j) dst[j] = x[j * ldx + e];
    std::fill(dst + rows, dst + ld, 0.0f);
  }
}

// Query rows [i0, i0 + rows), rows <= kR, of one head against keys [0, visible end): kt is K^T
// packed (Dh, ldkt); q and v rows are ldq apart, o rows ldo. Rows past `rows` repeat the last
// row and are not stored.
template <int NV>
void forward_rows_vec(const float* q, const float* kt, int64_t ldkt, const float* v, float* o, float* lse, int64_t i0,
                      int64_t rows, const Dims& d, int64_t ldq, int64_t ldo) {
  constexpr int Dh = kW * NV;
  constexpr int kR = rows_per_block<NV>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  alignas(64) float qs[kR][Dh];
  alignas(64) float p[kR][kFwdC];
  int64_t vend[kR];
  for (int r = 0; r < kR; ++r) {
    const int64_t i = i0 + std::min<int64_t>(r, rows - 1);
    for (int e = 0; e < Dh; ++e) qs[r][e] = q[i * ldq + e] * scale;
    vend[r] = d.visible_end(i);
  }
  VF oacc[kR][NV] = {};
  VF lacc[kR] = {};
  float m[kR];
  std::fill(m, m + kR, kNegInf);
  const int64_t j_end = vend[kR - 1];  // the visible end grows with the row
  for (int64_t j0 = 0; j0 < j_end; j0 += kFwdC) {
    const int64_t cols = std::min(kFwdC, j_end - j0), ng = (cols + kW - 1) / kW;
    const int64_t all_see = vend[0] - j0;  // keys j0 .. j0 + all_see - 1 are visible to every row
    VF mx[kR];
    for (int r = 0; r < kR; ++r) mx[r] = splat(kNegInf);
    for (int64_t g = 0; g < ng; ++g) {  // S = (scale q) K^T, kW keys x kR rows per pass; row maxima
      VF acc[kR] = {};
      const float* kg = kt + j0 + kW * g;
      for (int e = 0; e < Dh; ++e) {
        const VF kv = load_lanes(kg + e * ldkt);
        for (int r = 0; r < kR; ++r) acc[r] += qs[r][e] * kv;
      }
      if (kW * (g + 1) > all_see)  // masked keys (causal, or past the end) become -inf
        for (int r = 0; r < kR; ++r)
          acc[r] = lanes() < static_cast<int32_t>(vend[r] - j0 - kW * g) ? acc[r] : splat(kNegInf);
      for (int r = 0; r < kR; ++r) {
        store_lanes(&p[r][kW * g], acc[r]);
        mx[r] = vmax(mx[r], acc[r]);
      }
    }
    for (int r = 0; r < kR; ++r) {  // online softmax: new max, rescale, exponentials
      const float m_new = std::max(m[r], hmax(mx[r]));
      const float shift = m_new == kNegInf ? 0.0f : m_new;
      const float alpha = vmath::exp_of(m[r] - shift);  // 0 on the first block (m = -inf)
      VF sum = {};
      for (int64_t g = 0; g < ng; ++g) {
        const VF e = vmath::exp_nonpositive_of(load_lanes(&p[r][kW * g]) - shift);  // masked: exp(-inf) = 0
        store_lanes(&p[r][kW * g], e);
        sum += e;
      }
      lacc[r] = lacc[r] * alpha + sum;
      for (int u = 0; u < NV; ++u) oacc[r][u] *= alpha;
      m[r] = m_new;
    }
    for (int64_t j = 0; j < cols; ++j) {  // O += P V
      VF vv[NV];
      for (int u = 0; u < NV; ++u) vv[u] = load_lanes(v + (j0 + j) * ldq + kW * u);
      for (int r = 0; r < kR; ++r)
        for (int u = 0; u < NV; ++u) oacc[r][u] += p[r][j] * vv[u];
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float l = hsum(lacc[r]), inv = 1.0f / l;
    for (int u = 0; u < NV; ++u) store_lanes(o + (i0 + r) * ldo + kW * u, oacc[r][u] * inv);
    lse[i0 + r] = m[r] + std::log(l);
  }
}

// Forward over (head, query chunk) tasks; each packs its head's K^T once and writes its own rows.
template <int NV>
void forward_all_vec(const float* q, const float* k, const float* v, float* o, float* lse, const Dims& d,
                     const Layout& lay) {
  constexpr int Dh = kW * NV;
  constexpr int kR = rows_per_block<NV>();
  // Whole heads per task when there are enough of them; otherwise query chunks (each row's result
  // does not depend on the chunking, so neither does the output).
  const int64_t per_head =
      std::max<int64_t>(1, std::min<int64_t>(32 / std::max<int64_t>(d.BH, 1), (d.Tq + 63) / 64));
  const int64_t chunk = (d.Tq + per_head - 1) / per_head;
  const int64_t ldkt = round16(d.Tk);
  parallel_for(0, d.BH * per_head, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> kt(static_cast<size_t>(Dh * ldkt));  // once per chunk of tasks
    int64_t packed = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / per_head, r0 = (t % per_head) * chunk, r1 = std::min(d.Tq, r0 + chunk);
      if (packed != bh) {
        pack_transposed(k + lay.kv(bh), lay.ldq, d.Tk, Dh, kt.data(), ldkt);
        packed = bh;
      }
      for (int64_t i0 = r0; i0 < r1; i0 += kR)
        forward_rows_vec<NV>(q + lay.q(bh), kt.data(), ldkt, v + lay.kv(bh), o + lay.o(bh), lse + bh * d.Tq, i0,
                             std::min<int64_t>(kR, r1 - i0), d, lay.ldq, lay.ldo);
    }
  });
}

// Per-task workspace of the backward: K^T, V^T and scale K packed, D, and one tile's dK, dV rows.
struct BwdScratchVec {
  std::vector<float> kt, vt, ks, drow, dkt, dvt;
  BwdScratchVec(int64_t Dh, int64_t ld, int64_t Tq)
      : kt(static_cast<size_t>(Dh * ld)), vt(kt.size()), ks(kt.size()), drow(static_cast<size_t>(Tq)),
        dkt(static_cast<size_t>(kBwdC * Dh)), dvt(dkt.size()) {}
};

// Backward of one head; dq, dk, dv belong to this task alone. Key tiles outside, blocks of kR query
// rows inside: the tile's dK and dV accumulate in L1 and each block's dQ rows are read and
// written once per tile. The order of every sum depends only on the sizes.
// Rows of q, k, v, dq, dk, dv are ldq apart, rows of o and dout ldo apart.
template <int NV>
void backward_head_vec(const float* dout, const float* q, const float* k, const float* v, const float* o,
                       const float* lse, float* dq, float* dk, float* dv, const Dims& d, int64_t ldq, int64_t ldo,
                       BwdScratchVec& w) {
  constexpr int Dh = kW * NV;
  constexpr int kR = rows_per_block<NV>(), kJ = keys_per_pass<NV>();
  const int64_t Tq = d.Tq, Tk = d.Tk, ld = round16(Tk);
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  float *kt = w.kt.data(), *vt = w.vt.data(), *ks = w.ks.data(), *drow = w.drow.data();
  pack_transposed(k, ldq, Tk, Dh, kt, ld);
  pack_transposed(v, ldq, Tk, Dh, vt, ld);
  for (int64_t j = 0; j < Tk; ++j)
    for (int u = 0; u < NV; ++u) store_lanes(ks + j * Dh + kW * u, load_lanes(k + j * ldq + kW * u) * scale);
  std::fill(ks + Tk * Dh, ks + ld * Dh, 0.0f);
  for (int64_t i = 0; i < Tq; ++i) {  // D_i = rowsum(dO * O) = sum_j P_ij dP_ij
    VF acc = {};
    for (int u = 0; u < NV; ++u) acc += load_lanes(dout + i * ldo + kW * u) * load_lanes(o + i * ldo + kW * u);
    drow[i] = hsum(acc);
  }
  for (int64_t i = 0; i < Tq; ++i) std::fill(dq + i * ldq, dq + i * ldq + Dh, 0.0f);
  // S and dP in register blocks of kR rows; P and dS of kRB = kR x kSub rows kept in L1, so that each
  // pass over the tile's dK, dV accumulators (loaded and stored per pass) serves kRB rows.
  constexpr int kRB = kR * row_blocks_per_pass<NV>();
  alignas(64) float qs[kRB][Dh], dob[kRB][Dh];
  alignas(64) float P[kRB][kBwdC], dS[kRB][kBwdC];
  float lse_r[kR], d_r[kR];
  int32_t vis[kR];
  for (int64_t j0 = 0; j0 < Tk; j0 += kBwdC) {
    const int64_t cols = std::min(kBwdC, Tk - j0), ng = (cols + kW - 1) / kW, nj = kW * ng;
    float *dkt = w.dkt.data(), *dvt = w.dvt.data();  // rows of the tile, Dh floats each
    std::fill(w.dkt.begin(), w.dkt.end(), 0.0f);
    std::fill(w.dvt.begin(), w.dvt.end(), 0.0f);
    // The first query that sees key j0 (causal: i + off >= j0); earlier blocks are fully masked.
    const int64_t i_start = d.causal ? std::max<int64_t>(0, j0 - d.off()) / kR * kR : 0;
    for (int64_t i0 = i_start; i0 < Tq; i0 += kRB) {
      const int64_t rows_b = std::min<int64_t>(kRB, Tq - i0);
      for (int64_t sb = 0; sb < rows_b; sb += kR) {
        const int64_t rows = std::min<int64_t>(kR, rows_b - sb);
        for (int r = 0; r < kR; ++r) {  // rows past `rows` repeat the last one, fully masked
          const int64_t i = i0 + sb + std::min<int64_t>(r, rows - 1);
          for (int e = 0; e < Dh; ++e) {
            qs[sb + r][e] = q[i * ldq + e] * scale;
            dob[sb + r][e] = dout[i * ldo + e];
          }
          lse_r[r] = lse[i];
          d_r[r] = drow[i];
          vis[r] = r < rows ? static_cast<int32_t>(std::clamp<int64_t>(d.visible_end(i) - j0, 0, cols)) : 0;
        }
        for (int64_t g = 0; g < ng; ++g) {  // S = (scale q) K^T and dP = dO V^T, kW keys x kR rows
          VF as[kR] = {}, ap[kR] = {};
          const float* kg = kt + j0 + kW * g;
          const float* vg = vt + j0 + kW * g;
          for (int e = 0; e < Dh; ++e) {
            const VF kv = load_lanes(kg + e * ld), vv = load_lanes(vg + e * ld);
            for (int r = 0; r < kR; ++r) {
              as[r] += qs[sb + r][e] * kv;
              ap[r] += dob[sb + r][e] * vv;
            }
          }
          for (int r = 0; r < kR; ++r) {  // P = exp(S - lse) (0 where masked), dS = P (dP - D)
            const VF e = vmath::exp_nonpositive_of(as[r] - lse_r[r]);
            const VF pr = lanes() < vis[r] - static_cast<int32_t>(kW * g) ? e : splat(0.0f);
            store_lanes(&P[sb + r][kW * g], pr);
            store_lanes(&dS[sb + r][kW * g], pr * (ap[r] - d_r[r]));
          }
        }
      }
      // dV_j += sum_r P_rj dO_r, dK_j += sum_r dS_rj (scale q_r): kJ keys at a time, rows in order
      for (int64_t jb = 0; jb < nj; jb += kJ) {
        VF av[kJ][NV], ak[kJ][NV];
        for (int u = 0; u < kJ; ++u)
          for (int t = 0; t < NV; ++t) {
            av[u][t] = load_lanes(dvt + (jb + u) * Dh + kW * t);
            ak[u][t] = load_lanes(dkt + (jb + u) * Dh + kW * t);
          }
        for (int64_t r = 0; r < rows_b; ++r) {
          VF dor[NV], qr[NV];
          for (int t = 0; t < NV; ++t) {
            dor[t] = load_lanes(&dob[r][kW * t]);
            qr[t] = load_lanes(&qs[r][kW * t]);
          }
          const float* pr = &P[r][jb];  // one base pointer per row: kJ broadcasts at fixed offsets
          const float* sr = &dS[r][jb];
          for (int u = 0; u < kJ; ++u)
            for (int t = 0; t < NV; ++t) {
              av[u][t] += pr[u] * dor[t];
              ak[u][t] += sr[u] * qr[t];
            }
        }
        for (int u = 0; u < kJ; ++u)
          for (int t = 0; t < NV; ++t) {
            store_lanes(dvt + (jb + u) * Dh + kW * t, av[u][t]);
            store_lanes(dkt + (jb + u) * Dh + kW * t, ak[u][t]);
          }
      }
      // dQ_r += sum_j dS_rj (scale k_j): kR rows at once, keys in order
      for (int64_t sb = 0; sb < rows_b; sb += kR) {
        const int64_t rows = std::min<int64_t>(kR, rows_b - sb);
        VF aq[kR][NV];
        for (int r = 0; r < kR; ++r)
          for (int t = 0; t < NV; ++t)
            aq[r][t] = r < rows ? load_lanes(dq + (i0 + sb + r) * ldq + kW * t) : splat(0.0f);
        for (int64_t j = 0; j < cols; ++j) {
          VF kr[NV];
          for (int t = 0; t < NV; ++t) kr[t] = load_lanes(ks + (j0 + j) * Dh + kW * t);
          for (int r = 0; r < kR; ++r)
            for (int t = 0; t < NV; ++t) aq[r][t] += dS[sb + r][j] * kr[t];
        }
        for (int64_t r = 0; r < rows; ++r)
          for (int t = 0; t < NV; ++t) store_lanes(dq + (i0 + sb + r) * ldq + kW * t, aq[r][t]);
      }
    }
    for (int64_t j = 0; j < cols; ++j)
      for (int t = 0; t < NV; ++t) {
        store_lanes(dk + (j0 + j) * ldq + kW * t, load_lanes(dkt + j * Dh + kW * t));
        store_lanes(dv + (j0 + j) * ldq + kW * t, load_lanes(dvt + j * Dh + kW * t));
      }
  }
}

template <int NV>
void backward_all_vec(const float* dout, const float* q, const float* k, const float* v, const float* o,
                      const float* lse, float* dq, float* dk, float* dv, const Dims& d, const Layout& lay) {
  constexpr int Dh = kW * NV;
  parallel_for(0, d.BH, 1, [&](int64_t h0, int64_t h1) {
    BwdScratchVec w(Dh, round16(d.Tk), d.Tq);  // once per chunk of heads
    for (int64_t h = h0; h < h1; ++h)
      backward_head_vec<NV>(dout + lay.o(h), q + lay.q(h), k + lay.kv(h), v + lay.kv(h), o + lay.o(h),
                            lse + h * d.Tq, dq + lay.q(h), dk + lay.kv(h), dv + lay.kv(h), d, lay.ldq, lay.ldo, w);
  });
}

// Dh / kW when the vector kernels cover this head width (float, Dh in 16, 32, 48, 64), else 0.
int vec_width(DType dt, int64_t Dh) {
  return dt == DType::f32 && Dh % 16 == 0 && Dh >= 16 && Dh <= 64 ? static_cast<int>(Dh / kW) : 0;
}

template <typename F>
void with_nv(int nv, F&& f) {
  switch (nv * kW) {
    case 16: f(std::integral_constant<int, 16 / kW>{}); break;
    case 32: f(std::integral_constant<int, 32 / kW>{}); break;
    case 48: f(std::integral_constant<int, 48 / kW>{}); break;
    default: f(std::integral_constant<int, 64 / kW>{}); break;
  }
}

// The checks (attention_check.h), then the sizes.
Dims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  check_attention_qkv(op, q, k, v, causal);
  Dims d;
  d.BH = q.size(0) * q.size(1);
  d.Tq = q.size(2);
  d.Tk = k.size(2);
  d.Dh = q.size(3);
  d.kv_head_stride = d.Tk * d.Dh;
  d.causal = causal;
  return d;
}

}  // namespace

AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  Dims d = check_qkv("attention", q, k, v, causal);
  AttentionForward f{Tensor::empty(q.shape(), q.dtype()),
                     Tensor::empty({q.size(0), q.size(1), q.size(2)}, q.dtype())};
  if (const int nv = vec_width(q.dtype(), d.Dh)) {
    with_nv(nv, [&](auto NV) {
      forward_all_vec<decltype(NV)::value>(q.data<float>(), k.data<float>(), v.data<float>(), f.out.data<float>(),
                            f.lse.data<float>(), d, split_layout(d));
    });
    return f;
  }
  dispatch_float(q.dtype(), "attention", [&]<typename T>() {
    forward_all<T>(q.data<T>(), k.data<T>(), v.data<T>(), f.out.data<T>(), f.lse.data<T>(), d);
  });
  return f;
}

std::array<Tensor, 3> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const Tensor& out, const Tensor& lse, bool causal) {
  Dims d = check_qkv("attention backward", q, k, v, causal);
  check_attention_dout(dout, q);
  Tensor dq = Tensor::empty(q.shape(), q.dtype());
  Tensor dk = Tensor::empty(k.shape(), k.dtype());
  Tensor dv = Tensor::empty(v.shape(), v.dtype());
  if (const int nv = vec_width(q.dtype(), d.Dh)) {
    with_nv(nv, [&](auto NV) {
      backward_all_vec<decltype(NV)::value>(dout.data<float>(), q.data<float>(), k.data<float>(), v.data<float>(),
                             out.data<float>(), lse.data<float>(), dq.data<float>(), dk.data<float>(),
                             dv.data<float>(), d, split_layout(d));
    });
    return {dq, dk, dv};
  }
  dispatch_float(q.dtype(), "attention backward", [&]<typename T>() {
    const T *pdo = dout.data<T>(), *pq = q.data<T>(), *pk = k.data<T>(), *pv = v.data<T>(), *po = out.data<T>(),
            *pl = lse.data<T>();
    T *pdq = dq.data<T>(), *pdk = dk.data<T>(), *pdv = dv.data<T>();
    const int64_t qs = d.Tq * d.Dh, ks = d.Tk * d.Dh;
    parallel_for(0, d.BH, 1, [&](int64_t h0, int64_t h1) {
      std::vector<T> s(kBr * kBc), dp(kBr * kBc), drow(static_cast<size_t>(d.Tq));
      for (int64_t h = h0; h < h1; ++h)
        backward_head(pdo + h * qs, pq + h * qs, pk + h * ks, pv + h * ks, po + h * qs, pl + h * d.Tq,
                      pdq + h * qs, pdk + h * ks, pdv + h * ks, d, s, dp, drow);
    });
  });
  return {dq, dk, dv};
}

Tensor attention_forward_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t len) {
  check_attention_cache(k_cache, len);
  Dims d = check_qkv("attention_forward_cached", q, k_cache, v_cache, false);
  d.Tk = len;
  d.causal = true;
  SEQLAB_CHECK(d.Tk >= d.Tq, "attention_forward_cached: ", d.Tq, " queries but only ", d.Tk, " cached keys");
  d.kv_head_stride = k_cache.size(2) * d.Dh;
  Tensor out = Tensor::empty(q.shape(), q.dtype());
  Tensor lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, q.dtype());
  if (const int nv = vec_width(q.dtype(), d.Dh)) {
    with_nv(nv, [&](auto NV) {
      forward_all_vec<decltype(NV)::value>(q.data<float>(), k_cache.data<float>(), v_cache.data<float>(), out.data<float>(),
                            lse.data<float>(), d, split_layout(d));
    });
    return out;
  }
  dispatch_float(q.dtype(), "attention_forward_cached", [&]<typename T>() {
    forward_all<T>(q.data<T>(), k_cache.data<T>(), v_cache.data<T>(), out.data<T>(), lse.data<T>(), d);
  });
  return out;
}

namespace {
Dims check_packed(const char* op, const Tensor& qkv, int64_t H, bool causal) {
  check_attention_packed(op, qkv, H);
  Dims d;
  d.BH = qkv.size(0) * H;
  d.Tq = d.Tk = qkv.size(1);
  d.Dh = qkv.size(2) / (3 * H);
  d.kv_head_stride = d.Tk * d.Dh;
  d.causal = causal;
  return d;
}
}  // namespace

AttentionForward attention_packed_forward(const Tensor& qkv, int64_t H, bool causal) {
  Dims d = check_packed("attention_packed", qkv, H, causal);
  const int64_t B = qkv.size(0), T = qkv.size(1), D = H * d.Dh;
  if (const int nv = vec_width(qkv.dtype(), d.Dh)) {
    AttentionForward f{Tensor::empty({B, T, D}, qkv.dtype()), Tensor::empty({B, H, T}, qkv.dtype())};
    const float* p = qkv.data<float>();
    with_nv(nv, [&](auto NV) {
      forward_all_vec<decltype(NV)::value>(p, p + D, p + 2 * D, f.out.data<float>(), f.lse.data<float>(), d,
                                           packed_layout(T, H, d.Dh));
    });
    return f;
  }
  std::vector<Tensor> parts = split_heads(qkv, 3, H);
  AttentionForward f = attention_forward(parts[0], parts[1], parts[2], causal);
  return {merge_heads({f.out}), f.lse};
}

Tensor attention_packed_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int64_t H,
                                 bool causal) {
  Dims d = check_packed("attention_packed backward", qkv, H, causal);
  const int64_t T = qkv.size(1), D = H * d.Dh;
  check_attention_packed_dout(dout, out, qkv, H);
  if (const int nv = vec_width(qkv.dtype(), d.Dh)) {
    Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype());
    const float* p = qkv.data<float>();
    float* g = dqkv.data<float>();
    with_nv(nv, [&](auto NV) {
      backward_all_vec<decltype(NV)::value>(dout.data<float>(), p, p + D, p + 2 * D, out.data<float>(),
                                            lse.data<float>(), g, g + D, g + 2 * D, d, packed_layout(T, H, d.Dh));
    });
    return dqkv;
  }
  std::vector<Tensor> parts = split_heads(qkv, 3, H);
  std::array<Tensor, 3> g = attention_backward(split_heads(dout, 1, H)[0], parts[0], parts[1], parts[2],
                                               split_heads(out, 1, H)[0], lse, causal);
  return merge_heads({g[0], g[1], g[2]});
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
