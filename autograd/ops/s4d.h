// S4D ops (Gu et al. 2022, state-spaces/s4 models/s4/s4d.py): the SSM convolution kernel and the
// long causal convolution, each one fused op with a hand-written backward, plus the slow composite
// references built from primitive ops that the tests compare them against.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab {

/// K[s, d, l] = 2 Re(sum_m C'[s, d, m] exp(dtA[d, m] l)), C' = C (exp(dtA) - 1) / A (ZOH), dtA = A dt,
/// A = -exp(log_A_real) + i A_imag, dt = exp(log_dt). log_dt (D), log_A_real, A_imag (D, M),
/// C (D, M, 2) -> K (D, T); C (2, D, M, 2) -> K (2, D, T) (forward and backward-in-time kernels).
Tensor s4d_kernel(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                  int64_t T);
/// y = K * u along time, per channel: u (B, T, D), K (D, T) causal, or (2, D, T) where K[1] adds the
/// anti-causal part y[t] += sum_j K[1, d, j] u[t + 1 + j] (s4.py's bidirectional layout).
/// float32 through FFTs (LaneFFT, core/kernels/fft.h), float64 through direct loops.
Tensor causal_conv_fft(const Tensor& u, const Tensor& K);

/// Composite reference of s4d_kernel from primitive ops (real arithmetic on real/imag parts).
Tensor s4d_kernel_reference(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                            int64_t T);
/// Composite reference of causal_conv_fft: a sum over lags of shifted inputs times one kernel column.
Tensor causal_conv_reference(const Tensor& u, const Tensor& K);

}  // namespace seqlab
