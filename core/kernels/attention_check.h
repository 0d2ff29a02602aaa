// The argument checks of the fused attention kernels (core/kernels/attention.h), defined once in
// attention_dispatch.cpp (outside the ISA paths) and called by every ISA path of attention.cpp and by
// the CUDA twins (core/cuda/attention.cu), so all of them raise the same errors. Each check is one step
// so that a twin can add its own (the device's head-width limit) at the same place in the order.
// Glossary: B batch, H heads, Tq / Tk query / key positions, Dh head width.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// Checks q (B, H, Tq, Dh), k and v (B, H, Tk, Dh) of one dtype, Dh > 0, keys for any query and Tk >= Tq
/// when causal; op names the caller.
void check_attention_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, bool causal);
/// attention_backward's check of dout against q (same shape and dtype).
void check_attention_dout(const Tensor& dout, const Tensor& q);
/// attention_forward_cached's check of the cache: k_cache (B, H, cap, Dh) with 1 <= len <= cap.
void check_attention_cache(const Tensor& k_cache, int64_t len);
/// Checks that qkv (B, T, 3 H Dh) reads as (B, T, 3, H, Dh) with Dh > 0; op names the caller.
void check_attention_packed(const char* op, const Tensor& qkv, int64_t H);
/// attention_packed_backward's check of dout and out: (B, T, H Dh), qkv's dtype.
void check_attention_packed_dout(const Tensor& dout, const Tensor& out, const Tensor& qkv, int64_t H);

}  // namespace seqlab::kernels
