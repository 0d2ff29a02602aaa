// The long causal convolution of S4D, S4 and LSSL (Gu et al. 2022; state-spaces/s4
// models/s4/s4d.py fftconv): y = K * u per channel along time with a kernel as long as the sequence,
// causal or two-sided, by FFTs (float) or direct loops (double, and the reference), with backwards.
// Glossary: B batch, T time, D channels, S kernel directions (1 or 2).
#pragma once
#include "core/tensor.h"

namespace seqlab::kernels {

struct ConvGrads {
  Tensor du, dK;
};
/// y[b, t, d] = sum_{j<=t} K[0, d, j] u[b, t-j, d] (+ sum_{j<T-1-t} K[1, d, j] u[b, t+1+j, d] when K is
/// (2, D, T): the anti-causal half, s4.py's bidirectional layout). u (B, T, D), K (D, T) or (2, D, T).
/// float32: LaneFFT transforms (16 channels each) of a 2,3,5-smooth length >= 2T - 1; float64: the direct loops.
Tensor causal_conv_forward(const Tensor& u, const Tensor& K);
/// du = correlate(dy, K), dK = sum over batch of correlate(dy, u); undefined when not needed.
ConvGrads causal_conv_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K);

/// The same convolution by direct O(T^2) loops, any float dtype (the reference for the FFT path).
Tensor causal_conv_direct_forward(const Tensor& u, const Tensor& K);
ConvGrads causal_conv_direct_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K);
/// The FFT path, float32 only.
Tensor causal_conv_fft_forward(const Tensor& u, const Tensor& K);
ConvGrads causal_conv_fft_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K);

}  // namespace seqlab::kernels
