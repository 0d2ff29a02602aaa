// S4D ops (Gu et al. 2022, state-spaces/s4 models/s4/s4d.py): the SSM convolution kernel, a fused
// op with a hand-written backward, plus the slow composite reference built from primitive ops that
// the tests compare it against. The long convolution with the kernel is autograd/ops/long_conv.h.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab {

/// K[s, d, l] = 2 Re(sum_m C'[s, d, m] exp(dtA[d, m] l)), C' = C (exp(dtA) - 1) / A (ZOH), dtA = A dt,
/// A = -exp(log_A_real) + i A_imag, dt = exp(log_dt). log_dt (D), log_A_real, A_imag (D, M),
/// C (D, M, 2) -> K (D, T); C (2, D, M, 2) -> K (2, D, T) (forward and backward-in-time kernels).
Tensor s4d_kernel(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                  int64_t T);
/// Composite reference of s4d_kernel from primitive ops (real arithmetic on real/imag parts).
Tensor s4d_kernel_reference(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                            int64_t T);

}  // namespace seqlab
