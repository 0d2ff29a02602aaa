// CUDA twins of core/kernels/attention.h (same names, shapes, checks and maths); the CPU functions
// call these when their inputs live on the device. Outputs are device tensors. The fused kernels are
// FlashAttention-2 tiles (core/cuda/attention.cu): no (Tq, Tk) matrix is ever kept in device memory.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "core/kernels/attention.h"
#include "core/tensor.h"

namespace seqlab::cuda {

/// The head widths the fused kernels take: Dh <= kAttentionMaxHeadDim.
inline constexpr int64_t kAttentionMaxHeadDim = 128;

kernels::AttentionForward attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool causal);
std::array<Tensor, 3> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const Tensor& out, const Tensor& lse, bool causal);
Tensor attention_forward_cached(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, int64_t len);
kernels::AttentionForward attention_packed_forward(const Tensor& qkv, int64_t H, bool causal);
Tensor attention_packed_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse, int64_t H,
                                 bool causal);
std::vector<Tensor> split_heads(const Tensor& x, int64_t n, int64_t H);
Tensor merge_heads(const std::vector<Tensor>& parts);
Tensor add_positions_forward(const Tensor& x, const Tensor& table, int64_t offset);
Tensor add_positions_backward_table(const Tensor& dy, const Shape& table_shape, int64_t offset);

/// KV-cache copy of the transformer's step mode: dst[b, h, dst_row0 + t, :] = src[b, h, t, :] for
/// t < rows; src (B, H, Ts, Dh) and dst (B, H, Td, Dh) on the device, one dtype.
void kv_cache_copy(const Tensor& src, const Tensor& dst, int64_t rows, int64_t dst_row0);

}  // namespace seqlab::cuda
