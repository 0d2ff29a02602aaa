// The long causal convolution of S4D, S4 and LSSL (Gu et al. 2022; state-spaces/s4 fftconv) as one
// fused op with a hand-written backward, plus the slow composite reference built from primitive ops
// that the tests compare it against.
#pragma once
#include "core/tensor.h"

namespace seqlab {

/// y = K * u along time, per channel: u (B, T, D), K (D, T) causal, or (2, D, T) where K[1] adds the
/// anti-causal part y[t] += sum_j K[1, d, j] u[t + 1 + j] (s4.py's bidirectional layout).
/// float32 through FFTs (LaneFFT, core/kernels/fft.h), float64 through direct loops.
Tensor causal_conv_fft(const Tensor& u, const Tensor& K);
/// Composite reference of causal_conv_fft: a sum over lags of shifted inputs times one kernel column.
Tensor causal_conv_reference(const Tensor& u, const Tensor& K);

}  // namespace seqlab
