// S4D ops (Gu et al. 2022, state-spaces/s4 models/s4/s4d.py): the SSM convolution kernel and the
// layer's output path (convolution + skip + GELU, and GLU), each one fused op with a hand-written
// backward, plus the slow composite references built from primitive ops that the tests compare them
// against. The long convolution alone is autograd/ops/long_conv.h.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab {

/// K[s, d, l] = 2 Re(sum_m C'[s, d, m] exp(dtA[d, m] l)), C' = C (exp(dtA) - 1) / A (ZOH), dtA = A dt,
/// A = -exp(log_A_real) + i A_imag, dt = exp(log_dt). log_dt (D), log_A_real, A_imag (D, M),
/// C (D, M, 2) -> K (D, T); C (2, D, M, 2) -> K (2, D, T) (forward and backward-in-time kernels).
Tensor s4d_kernel(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                  int64_t T);
/// h = gelu(causal_conv_fft(x, K) + x ⊙ D_skip) in one node: x (B, T, D), K (D, T) or (2, D, T), D_skip (D).
Tensor conv_skip_gelu(const Tensor& x, const Tensor& K, const Tensor& D_skip);
/// GLU over the last axis: z (..., 2D) -> a ⊙ sigmoid(b), a = z[..., :D], b = z[..., D:], in one node.
Tensor glu(const Tensor& z);

/// Composite reference of s4d_kernel from primitive ops (real arithmetic on real/imag parts).
Tensor s4d_kernel_reference(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                            int64_t T);
/// Composite reference of conv_skip_gelu: causal_conv_fft, mul, add and gelu.
Tensor conv_skip_gelu_reference(const Tensor& x, const Tensor& K, const Tensor& D_skip);
/// Composite reference of glu: two slices, sigmoid and mul.
Tensor glu_reference(const Tensor& z);

}  // namespace seqlab
