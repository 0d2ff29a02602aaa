// The argument checks of the long causal convolution (core/kernels/long_conv.h), defined once in
// long_conv.cpp and called by the CPU loops and their CUDA twins (core/cuda/long_conv.cu) alike, so both
// raise the same errors. Glossary: B batch, T time, D channels, S kernel directions (1 or 2).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// Checks u (B, T, D) and K (D, T) or (S, D, T) with S in {1, 2}, of u's dtype; returns S. op names the caller.
int64_t check_causal_conv(const Tensor& u, const Tensor& K, const char* op);
/// The FFT path's dtype check: u must be float32.
void check_causal_conv_fft(const Tensor& u);

}  // namespace seqlab::kernels
