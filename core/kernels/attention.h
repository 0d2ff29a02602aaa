// Fused scaled dot-product attention on the CPU, the FlashAttention way (Dao et al. 2022; Dao 2023,
// "FlashAttention-2"): softmax(q k^T / sqrt(Dh) [+ causal mask]) v over key tiles with an online
// softmax, so no (T, T) matrix is ever kept. Forward stores the output and the per-row logsumexp;
// backward recomputes the probabilities tile by tile (dS = P * (dP - D), D = rowsum(dO * O)).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace seqlab::kernels {

/// What attention_forward returns: the output (B, H, Tq, Dh) and the logsumexp of each score row (B, H, Tq).
struct AttentionForward {
  Tensor out;
  Tensor lse;
};

/// q (B, H, Tq, Dh), k and v (B, H, Tk, Dh). Causal masks key j for query i when j > i + (Tk - Tq)
/// (bottom-right aligned, so one new query attends to every cached key); causal needs Tk >= Tq.
AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal);

/// {dq, dk, dv} from dout and what forward kept (q, k, v, out, lse); parallel over (B, H) pairs,
/// each task owning its dq, dk and dv slices, so the result is deterministic.
std::array<Tensor, 3> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const Tensor& out, const Tensor& lse, bool causal);

/// Decoding step: q (B, H, Tq, Dh) against the first `len` rows of key/value caches (B, H, cap, Dh),
/// causal (bottom-right aligned). No gradient; used by the transformer's KV-cache step mode.
Tensor attention_forward_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t len);

/// Attention straight on the packed in-projection: qkv (B, T, 3 H Dh), read as (B, T, 3, H, Dh)
/// (q, k, v blocks, heads in order) -> out (B, T, H Dh) with the heads side by side, and lse (B, H, T).
/// The same as merge_heads(attention_forward(split_heads(qkv, 3, H)...)) without the copies.
AttentionForward attention_packed_forward(const Tensor& qkv, int64_t H, bool causal);
/// dqkv (B, T, 3 H Dh) of attention_packed_forward from dout (B, T, H Dh) and what forward kept.
Tensor attention_packed_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int64_t H,
                                 bool causal);

/// Splits x (B, T, n * H * Dh), read as (B, T, n, H, Dh), into n tensors (B, H, T, Dh) (q, k, v for n = 3).
std::vector<Tensor> split_heads(const Tensor& x, int64_t n, int64_t H);
/// The inverse of split_heads: n tensors (B, H, T, Dh) -> (B, T, n * H * Dh).
Tensor merge_heads(const std::vector<Tensor>& parts);

/// y (B, T, D) = x + table[offset : offset + T], table (L, D).
Tensor add_positions_forward(const Tensor& x, const Tensor& table, int64_t offset);
/// dtable (L, D) of add_positions: rows offset .. offset + T - 1 get sum over B of dy, the rest zero.
Tensor add_positions_backward_table(const Tensor& dy, const Shape& table_shape, int64_t offset);

}  // namespace seqlab::kernels
