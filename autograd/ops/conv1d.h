// Causal depthwise conv1d over time as one autograd op (Mamba's short convolution), SiLU optionally
// fused; and its composite reference from primitive ops for the tests.
#pragma once
#include "core/tensor.h"

namespace seqlab {

/// x (B, T, C), w (C, K), bias (C) or undefined -> (B, T, C); causal (left padding K-1); silu fuses SiLU.
Tensor causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu = false);
/// The same from slice/concat/mul/add (a shifted copy of x per tap); slow, for tests.
Tensor causal_conv1d_reference(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu = false);

}  // namespace seqlab
