// Causal depthwise 1-D convolution over time, the short conv of Mamba's block (mamba_simple.py:
// nn.Conv1d(groups=channels, padding=K-1) truncated to the first T outputs), with SiLU optionally fused:
//   y[b, t, c] = act(bias[c] + sum_{k<K} w[c, k] * x[b, t - (K-1) + k, c]),  x[b, s < 0, c] = 0.
// Glossary: B batch, T time, C channels, K kernel width. Layout (B, T, C): channels contiguous.
#pragma once
#include <array>

#include "core/tensor.h"

namespace seqlab::kernels {

/// y (B, T, C) from x (B, T, C), w (C, K), bias (C) or undefined; silu applies SiLU to the result.
Tensor causal_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu);
/// {dx, dw, dbias} (dbias undefined without bias). Recomputes the pre-activation; parallel over
/// (batch row, time tile) with per-tile dw, dbias partials summed in a fixed order, so results do
/// not depend on threads.
std::array<Tensor, 3> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                             const Tensor& bias, bool silu);
/// One step: buf (B, C, K-1) holds the last K-1 inputs (oldest first) and is shifted in place;
/// x_t (B, C) -> y_t (B, C).
Tensor causal_conv1d_step(Tensor& buf, const Tensor& x_t, const Tensor& w, const Tensor& bias, bool silu);

}  // namespace seqlab::kernels
