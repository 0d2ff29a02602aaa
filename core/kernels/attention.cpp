// Fused attention kernels (FlashAttention-2 on the CPU). Each (batch, head) is a contiguous
// (T, Dh) matrix; work is cut into query tiles of kBr rows and key tiles of kBc keys, every tile
// product is one single-threaded CBLAS GEMM. Forward: online softmax per row (running max m and
// sum l, the output accumulator rescaled by exp(m_old - m_new)), then lse = m + log(l). Backward:
// P = exp(S - lse) recomputed per tile, dV += P^T dO, dP = dO V^T, dS = P * (dP - D) with
// D = rowsum(dO * O), dK += scale dS^T Q, dQ += scale dS K.
#include "core/kernels/attention.h"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "core/kernels/matmul.h"
#include "core/parallel.h"

namespace seqlab::kernels {
namespace {

// Query rows and keys per tile: a 64 x 64 score tile (16 KB in float) stays in L1/L2 next to its
// Q, K and V slices, and the GEMMs are large enough that the BLAS call overhead is small.
constexpr int64_t kBr = 64;
constexpr int64_t kBc = 64;



// exp(x) for float without branches, so loops over a tile row vectorise (AVX2: 8 lanes); std::exp
// does not, and with Dh = 16 the exponentials would otherwise cost as much as the GEMMs. Cephes
// expf: x = n ln2 + r, |r| <= ln2 / 2, degree-6 polynomial, about 1 ulp. Inputs here are <= 0
// (scores minus the row max or the logsumexp); below -87 it returns exp(-87) ~ 1.6e-38 instead of
// a subnormal, negligible next to the row max's exp(0) = 1 in every sum.
inline float exp_branchless(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);  // floor() would not vectorise
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  return e * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}

// x[c] = exp(x[c] - shift) for c < n.
inline void exp_shifted(double* x, int64_t n, double shift) {
  for (int64_t c = 0; c < n; ++c) x[c] = std::exp(x[c] - shift);
}
inline void exp_shifted(float* x, int64_t n, float shift) {
  for (int64_t c = 0; c < n; ++c) x[c] = exp_branchless(x[c] - shift);
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

Dims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  SEQLAB_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": expected q, k, v of shape (B, H, T, Dh), got ",
               to_string(q.shape()), ", ", to_string(k.shape()), ", ", to_string(v.shape()));
  SEQLAB_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), op, ": q, k, v must share one dtype");
  SEQLAB_CHECK(k.shape() == v.shape(), op, ": k ", to_string(k.shape()), " and v ", to_string(v.shape()),
               " must have the same shape");
  SEQLAB_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3), op, ": q ",
               to_string(q.shape()), " and k ", to_string(k.shape()), " must agree in B, H and Dh");
  Dims d;
  d.BH = q.size(0) * q.size(1);
  d.Tq = q.size(2);
  d.Tk = k.size(2);
  d.Dh = q.size(3);
  d.kv_head_stride = d.Tk * d.Dh;
  d.causal = causal;
  SEQLAB_CHECK(d.Dh > 0, op, ": head width Dh must be positive");
  SEQLAB_CHECK(d.Tk > 0 || d.Tq == 0, op, ": no keys for ", d.Tq, " queries");
  SEQLAB_CHECK(!causal || d.Tk >= d.Tq, op, ": causal attention needs Tk >= Tq, got Tq = ", d.Tq, ", Tk = ", d.Tk);
  return d;
}

}  // namespace

AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  Dims d = check_qkv("attention", q, k, v, causal);
  AttentionForward f{Tensor::empty(q.shape(), q.dtype()),
                     Tensor::empty({q.size(0), q.size(1), q.size(2)}, q.dtype())};
  dispatch_float(q.dtype(), "attention", [&]<typename T>() {
    forward_all<T>(q.data<T>(), k.data<T>(), v.data<T>(), f.out.data<T>(), f.lse.data<T>(), d);
  });
  return f;
}

std::array<Tensor, 3> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const Tensor& out, const Tensor& lse, bool causal) {
  Dims d = check_qkv("attention backward", q, k, v, causal);
  SEQLAB_CHECK(dout.shape() == q.shape() && dout.dtype() == q.dtype(), "attention backward: dout ",
               to_string(dout.shape()), " must match the output ", to_string(q.shape()));
  Tensor dq = Tensor::empty(q.shape(), q.dtype());
  Tensor dk = Tensor::empty(k.shape(), k.dtype());
  Tensor dv = Tensor::empty(v.shape(), v.dtype());
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
  SEQLAB_CHECK(k_cache.dim() == 4 && len >= 1 && len <= k_cache.size(2), "attention_forward_cached: len ", len,
               " outside the cache of shape ", to_string(k_cache.shape()));
  Dims d = check_qkv("attention_forward_cached", q, k_cache, v_cache, false);
  d.Tk = len;
  d.causal = true;
  SEQLAB_CHECK(d.Tk >= d.Tq, "attention_forward_cached: ", d.Tq, " queries but only ", d.Tk, " cached keys");
  d.kv_head_stride = k_cache.size(2) * d.Dh;
  Tensor out = Tensor::empty(q.shape(), q.dtype());
  Tensor lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, q.dtype());
  dispatch_float(q.dtype(), "attention_forward_cached", [&]<typename T>() {
    forward_all<T>(q.data<T>(), k_cache.data<T>(), v_cache.data<T>(), out.data<T>(), lse.data<T>(), d);
  });
  return out;
}

}  // namespace seqlab::kernels

namespace seqlab::kernels {

std::vector<Tensor> split_heads(const Tensor& x, int64_t n, int64_t H) {
  SEQLAB_CHECK(x.dim() == 3 && n > 0 && H > 0 && x.size(2) % (n * H) == 0, "split_heads: cannot read ",
               to_string(x.shape()), " as (B, T, ", n, ", ", H, ", Dh)");
  const int64_t B = x.size(0), T = x.size(1), Dh = x.size(2) / (n * H);
  std::vector<Tensor> parts;
  for (int64_t p = 0; p < n; ++p) parts.push_back(Tensor::empty({B, H, T, Dh}, x.dtype()));
  dispatch_float(x.dtype(), "split_heads", [&]<typename T_>() {
    const T_* src = x.data<T_>();
    std::vector<T_*> dst;
    for (auto& p : parts) dst.push_back(p.data<T_>());
    parallel_for(0, B * T, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t bt = r0; bt < r1; ++bt) {
        const int64_t b = bt / T, t = bt % T;
        const T_* row = src + bt * n * H * Dh;
        for (int64_t p = 0; p < n; ++p)
          for (int64_t h = 0; h < H; ++h)
            std::copy(row + (p * H + h) * Dh, row + (p * H + h + 1) * Dh, dst[p] + ((b * H + h) * T + t) * Dh);
      }
    });
  });
  return parts;
}

Tensor merge_heads(const std::vector<Tensor>& parts) {
  SEQLAB_CHECK(!parts.empty() && parts[0].dim() == 4, "merge_heads: expected tensors of shape (B, H, T, Dh)");
  const Shape& s0 = parts[0].shape();
  for (const auto& p : parts)
    SEQLAB_CHECK(p.shape() == s0 && p.dtype() == parts[0].dtype(), "merge_heads: parts differ in shape or dtype");
  const int64_t n = static_cast<int64_t>(parts.size()), B = s0[0], H = s0[1], T = s0[2], Dh = s0[3];
  Tensor y = Tensor::empty({B, T, n * H * Dh}, parts[0].dtype());
  dispatch_float(y.dtype(), "merge_heads", [&]<typename T_>() {
    T_* dst = y.data<T_>();
    std::vector<const T_*> src;
    for (const auto& p : parts) src.push_back(p.data<T_>());
    parallel_for(0, B * T, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t bt = r0; bt < r1; ++bt) {
        const int64_t b = bt / T, t = bt % T;
        T_* row = dst + bt * n * H * Dh;
        for (int64_t p = 0; p < n; ++p)
          for (int64_t h = 0; h < H; ++h) {
            const T_* s = src[p] + ((b * H + h) * T + t) * Dh;
            std::copy(s, s + Dh, row + (p * H + h) * Dh);
          }
      }
    });
  });
  return y;
}

Tensor add_positions_forward(const Tensor& x, const Tensor& table, int64_t offset) {
  SEQLAB_CHECK(x.dim() == 3 && table.dim() == 2 && table.size(1) == x.size(2), "add_positions: x ",
               to_string(x.shape()), " and table ", to_string(table.shape()), " must be (B, T, D) and (L, D)");
  SEQLAB_CHECK(x.dtype() == table.dtype(), "add_positions: x and table must share one dtype");
  SEQLAB_CHECK(offset >= 0 && offset + x.size(1) <= table.size(0), "add_positions: positions ", offset, "..",
               offset + x.size(1) - 1, " exceed the table's ", table.size(0), " rows");
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "add_positions", [&]<typename T_>() {
    const T_ *px = x.data<T_>(), *pt = table.data<T_>() + offset * D;
    T_* py = y.data<T_>();
    parallel_for(0, B * T, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t bt = r0; bt < r1; ++bt) {
        const T_* tr = pt + (bt % T) * D;
        for (int64_t e = 0; e < D; ++e) py[bt * D + e] = px[bt * D + e] + tr[e];
      }
    });
  });
  return y;
}

Tensor add_positions_backward_table(const Tensor& dy, const Shape& table_shape, int64_t offset) {
  const int64_t B = dy.size(0), T = dy.size(1), D = dy.size(2);
  Tensor dt = Tensor::zeros(table_shape, dy.dtype());
  dispatch_float(dy.dtype(), "add_positions backward", [&]<typename T_>() {
    const T_* pdy = dy.data<T_>();
    T_* pdt = dt.data<T_>() + offset * D;
    parallel_for(0, T, 16, [&](int64_t t0, int64_t t1) {  // each position sums its batch in order
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t b = 0; b < B; ++b)
          for (int64_t e = 0; e < D; ++e) pdt[t * D + e] += pdy[(b * T + t) * D + e];
    });
  });
  return dt;
}

}  // namespace seqlab::kernels
