// S4D loops (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space
// Models"; state-spaces/s4 models/s4/s4d.py): the SSM convolution kernel by a Vandermonde product
// and its hand-written backward, the fused output path (skip + GELU, GLU) and one recurrent step.
// The long convolution with the kernel is core/kernels/long_conv.h.
// Glossary: B batch, T time, D channels, M = N/2 conjugate pairs, S kernel directions (1 or 2).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// K[s, d, l] = 2 Re(sum_m C'[s, d, m] exp(dtA[d, m] l)), C' = C (exp(dtA) - 1) / A, dtA = A dt,
/// A = -exp(log_A_real) + i A_imag, dt = exp(log_dt). log_dt (D), log_A_real and A_imag (D, M),
/// C (D, M, 2) or (S, D, M, 2) (real, imag). Returns K of shape C.shape[:-2] + (T).
Tensor s4d_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                          int64_t T);

struct S4DKernelGrads {
  Tensor dlog_dt, dlog_A_real, dA_imag, dC;
};
/// Gradients of sum(dK * K) w.r.t. every kernel parameter (recomputes the Vandermonde powers).
S4DKernelGrads s4d_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& log_A_real,
                                   const Tensor& A_imag, const Tensor& C);

/// S4D's output path around the convolution y, fused into single passes over (B, T, D):
/// pre = y + u * D_skip, h = gelu(pre) (exact erf GELU). Returns {h, pre}; pre is what backward reads.
struct SkipGelu {
  Tensor h, pre;
};
SkipGelu s4d_skip_gelu_forward(const Tensor& y, const Tensor& u, const Tensor& D_skip);
/// Backward of the skip: du += dpre * D_skip in place (du may be undefined: then it is created when
/// need_u), returns dD_skip = sum over (b, t) of dpre * u (fixed row chunks summed in order), or an
/// undefined tensor when !need_D.
Tensor s4d_skip_backward(Tensor& du, const Tensor& dpre, const Tensor& u, const Tensor& D_skip, bool need_u,
                         bool need_D);
/// GLU over the last axis: z (..., 2D) -> a * sigmoid(b), a = z[..., :D], b = z[..., D:].
Tensor glu_forward(const Tensor& z);
/// dz = [dout sigmoid(b), dout a sigmoid(b) (1 - sigmoid(b))].
Tensor glu_backward(const Tensor& dout, const Tensor& z);

/// One recurrent step (B = 1 in the SSM): s = exp(dtA) s + (exp(dtA) - 1) / A * u_t,
/// y_t = 2 Re(sum_m C s) + D_skip u_t. u_t (B, D); state (B, D, M, 2) updated in place; C (D, M, 2).
Tensor s4d_step_forward(const Tensor& u_t, const Tensor& state, const Tensor& log_dt, const Tensor& log_A_real,
                        const Tensor& A_imag, const Tensor& C, const Tensor& D_skip);

}  // namespace seqlab::kernels
