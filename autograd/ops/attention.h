// Fused scaled dot-product attention (FlashAttention-style, core/kernels/attention) and its slow
// composite reference built from primitive ops, which the tests compare against.
#pragma once
#include <vector>

#include "autograd/node.h"
#include "core/kernels/attention.h"
#include "core/tensor.h"

namespace seqlab {

/// softmax(q k^T / sqrt(Dh) [+ causal mask]) v; q (B, H, Tq, Dh), k and v (B, H, Tk, Dh) -> (B, H, Tq, Dh).
/// Causal masks key j for query i when j > i + Tk - Tq. Backward keeps q, k, v, the output and the
/// row logsumexp (B, H, Tq): never a (Tq, Tk) matrix.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal);

/// The same result from primitive ops (matmul, scale, add a -1e30 mask, softmax, matmul); keeps the
/// (B, H, Tq, Tk) probabilities. For tests only.
Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, bool causal);

/// Multi-head attention on the packed in-projection: qkv (B, T, 3 H Dh), read as (B, T, 3, H, Dh),
/// -> (B, T, H Dh), heads side by side; equal to merge_heads(attention(split_heads(qkv, 3, H)...))
/// but reads q, k, v and writes the output and dqkv in place, with no head-split copies.
// Defined here (inline) next to attention(): the same maths, one layout.
// o = P v per head (see attention);  dqkv = the per-head dq, dk, dv written back into the packed layout
inline Tensor attention_packed(const Tensor& qkv, int64_t H, bool causal) {
  kernels::AttentionForward f = kernels::attention_packed_forward(qkv, H, causal);
  return record("attention_packed", f.out, {qkv},
                [qkv = qkv.detach(), out = f.out.detach(), lse = f.lse, H, causal](const Tensor& dout) {
                  return grads{kernels::attention_packed_backward(dout, qkv, out, lse, H, causal)};
                });
}

/// x (B, T, n * H * Dh), read as (B, T, n, H, Dh) -> n tensors (B, H, T, Dh): the heads of q, k, v.
std::vector<Tensor> split_heads(const Tensor& x, int64_t n, int64_t H);
/// o (B, H, T, Dh) -> (B, T, H * Dh), heads side by side.
Tensor merge_heads(const Tensor& o);
/// x (B, T, D) + table[offset : offset + T] with table (L, D), broadcast over B.
Tensor add_positions(const Tensor& x, const Tensor& table, int64_t offset = 0);

}  // namespace seqlab
