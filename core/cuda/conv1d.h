// CUDA twins of core/kernels/conv1d.h (causal depthwise conv1d, SiLU optionally fused): same
// signatures, same shapes, same maths, device tensors in and out. Plain C++: included by
// core/kernels/conv1d_dispatch.cpp.
#pragma once
#include <array>

#include "core/tensor.h"

namespace seqlab::cuda {

/// y (B, T, C) from x (B, T, C), w (C, K), bias (C) or undefined: one thread per output.
Tensor causal_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu);
/// {dx, dw, dbias} (dbias undefined without bias); dw, dbias through per-row-tile partials summed
/// in tile order by a second kernel (no atomics: bit-reproducible).
std::array<Tensor, 3> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                             const Tensor& bias, bool silu);
/// One step: buf (B, C, K-1) shifted in place; x_t (B, C) -> y_t (B, C).
Tensor causal_conv1d_step(Tensor& buf, const Tensor& x_t, const Tensor& w, const Tensor& bias, bool silu);

}  // namespace seqlab::cuda
