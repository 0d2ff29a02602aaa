// The public attention entry points (attention.h): the fused kernels of attention.cpp run on the
// ISA path in use; the head split/merge and position-table copies below need no vector code. Inputs
// on the device go to the CUDA twins (core/cuda/attention.h).
#include <algorithm>
#include <vector>

#include "core/cuda/attention.h"
#include "core/device.h"
#include "core/kernels/attention.h"
#include "core/kernels/attention_check.h"
#include "core/kernels/isa_dispatch.h"
#include "core/parallel.h"

namespace seqlab::kernels {

SEQLAB_ISA_DECLARE(AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal))
SEQLAB_ISA_DECLARE(std::array<Tensor, 3> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                                            const Tensor& v, const Tensor& out, const Tensor& lse,
                                                            bool causal))
SEQLAB_ISA_DECLARE(Tensor attention_forward_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                                   int64_t len))
SEQLAB_ISA_DECLARE(AttentionForward attention_packed_forward(const Tensor& qkv, int64_t H, bool causal))
SEQLAB_ISA_DECLARE(Tensor attention_packed_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                                    const Tensor& lse, int64_t H, bool causal))

// ---------------------------------------------------------------------------------------------
// Checks (attention_check.h), shared by every ISA path and the CUDA twins

void check_attention_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  SEQLAB_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": expected q, k, v of shape (B, H, T, Dh), got ",
               to_string(q.shape()), ", ", to_string(k.shape()), ", ", to_string(v.shape()));
  SEQLAB_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), op, ": q, k, v must share one dtype");
  SEQLAB_CHECK(k.shape() == v.shape(), op, ": k ", to_string(k.shape()), " and v ", to_string(v.shape()),
               " must have the same shape");
  SEQLAB_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3), op, ": q ",
               to_string(q.shape()), " and k ", to_string(k.shape()), " must agree in B, H and Dh");
  const int64_t Tq = q.size(2), Tk = k.size(2), Dh = q.size(3);
  SEQLAB_CHECK(Dh > 0, op, ": head width Dh must be positive");
  SEQLAB_CHECK(Tk > 0 || Tq == 0, op, ": no keys for ", Tq, " queries");
  SEQLAB_CHECK(!causal || Tk >= Tq, op, ": causal attention needs Tk >= Tq, got Tq = ", Tq, ", Tk = ", Tk);
}

void check_attention_dout(const Tensor& dout, const Tensor& q) {
  SEQLAB_CHECK(dout.shape() == q.shape() && dout.dtype() == q.dtype(), "attention backward: dout ",
               to_string(dout.shape()), " must match the output ", to_string(q.shape()));
}

void check_attention_cache(const Tensor& k_cache, int64_t len) {
  SEQLAB_CHECK(k_cache.dim() == 4 && len >= 1 && len <= k_cache.size(2), "attention_forward_cached: len ", len,
               " outside the cache of shape ", to_string(k_cache.shape()));
}

void check_attention_packed(const char* op, const Tensor& qkv, int64_t H) {
  SEQLAB_CHECK(qkv.dim() == 3 && H > 0 && qkv.size(2) % (3 * H) == 0 && qkv.size(2) > 0, op, ": cannot read ",
               to_string(qkv.shape()), " as (B, T, 3, ", H, ", Dh)");
}

void check_attention_packed_dout(const Tensor& dout, const Tensor& out, const Tensor& qkv, int64_t H) {
  const int64_t B = qkv.size(0), T = qkv.size(1), D = H * (qkv.size(2) / (3 * H));
  SEQLAB_CHECK(dout.shape() == Shape({B, T, D}) && out.shape() == dout.shape() && dout.dtype() == qkv.dtype(),
               "attention_packed backward: dout ", to_string(dout.shape()), " and out ", to_string(out.shape()),
               " must be (", B, ", ", T, ", ", D, ")");
}

// ---------------------------------------------------------------------------------------------
// Entry points

AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  if constexpr (kCuda) if (on_cuda("attention", q, k, v)) return cuda::attention_forward(q, k, v, causal);
  SEQLAB_ISA_CALL(attention_forward, q, k, v, causal);
}

std::array<Tensor, 3> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const Tensor& out, const Tensor& lse, bool causal) {
  if constexpr (kCuda)
    if (on_cuda("attention backward", dout, q, k, v, out, lse))
      return cuda::attention_backward(dout, q, k, v, out, lse, causal);
  SEQLAB_ISA_CALL(attention_backward, dout, q, k, v, out, lse, causal);
}

Tensor attention_forward_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t len) {
  if constexpr (kCuda)
    if (on_cuda("attention_forward_cached", q, k_cache, v_cache))
      return cuda::attention_forward_cached(q, k_cache, v_cache, len);
  SEQLAB_ISA_CALL(attention_forward_cached, q, k_cache, v_cache, len);
}

AttentionForward attention_packed_forward(const Tensor& qkv, int64_t H, bool causal) {
  if constexpr (kCuda) if (on_cuda("attention_packed", qkv)) return cuda::attention_packed_forward(qkv, H, causal);
  SEQLAB_ISA_CALL(attention_packed_forward, qkv, H, causal);
}

Tensor attention_packed_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int64_t H,
                                 bool causal) {
  if constexpr (kCuda)
    if (on_cuda("attention_packed backward", dout, qkv, out, lse))
      return cuda::attention_packed_backward(dout, qkv, out, lse, H, causal);
  SEQLAB_ISA_CALL(attention_packed_backward, dout, qkv, out, lse, H, causal);
}

std::vector<Tensor> split_heads(const Tensor& x, int64_t n, int64_t H) {
  if constexpr (kCuda) if (on_cuda("split_heads", x)) return cuda::split_heads(x, n, H);
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
  if constexpr (kCuda) if (on_cuda("merge_heads", parts)) return cuda::merge_heads(parts);
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
  if constexpr (kCuda) if (on_cuda("add_positions", x, table)) return cuda::add_positions_forward(x, table, offset);
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
  if constexpr (kCuda)
    if (on_cuda("add_positions backward", dy)) return cuda::add_positions_backward_table(dy, table_shape, offset);
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
