// LSSL and S4 loops (Gu et al. 2021, "Combining Recurrent, Convolutional, and Continuous-time Models
// with Linear State-Space Layers"; Gu, Goel, Ré 2022, "Efficiently Modeling Long Sequences with
// Structured State Spaces", Algorithm 1): the LSSL kernel from powers of the dense bilinear-discretised
// HiPPO matrix, the S4 kernel from the DPLR generating function at the roots of unity (Cauchy kernel +
// Woodbury), their hand-written backwards, dense discretisations and one recurrent step of each.
// Glossary: B batch, T time (= L, the kernel length), D channels, N state size, M = N/2 pairs.
#pragma once
#include <cstdint>

#include "core/kernels/hippo.h"
#include "core/tensor.h"

namespace seqlab::kernels {

// ---- LSSL: fixed A (N, N), B (N) (HiPPO-LegS), learnable log_dt (D), C (D, N)

/// K[d, l] = C[d] dA^l dB, dA = (I - dt/2 A)^-1 (I + dt/2 A), dB = (I - dt/2 A)^-1 dt B, dt = exp(log_dt[d]).
Tensor lssl_kernel_forward(const Tensor& log_dt, const Tensor& C, const HippoLegs& hippo, int64_t T);
struct LsslKernelGrads {
  Tensor dlog_dt, dC;
};
/// Gradients of sum(dK * K): dC by recomputing the powers, dlog_dt by forward-mode (tangent) propagation.
LsslKernelGrads lssl_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& C, const HippoLegs& hippo);

struct Discretised {
  Tensor dA, dB;  // LSSL: (D, N, N), (D, N); S4: complex (D, N, N, 2), (D, N, 2) over all N states
};
/// The dense bilinear discretisation per channel, in log_dt's dtype.
Discretised lssl_discretise(const Tensor& log_dt, const HippoLegs& hippo);
/// x = dA x + dB u_t; y_t = C x + D_skip u_t. u_t (B, D), state (B, D, N) updated in place.
Tensor lssl_step_forward(const Tensor& u_t, const Tensor& state, const Discretised& disc, const Tensor& C,
                         const Tensor& D_skip);

// ---- S4: per channel Lambda = -exp(log_A_real) + i A_imag (D, M), P, B, C (D, M, 2) complex (re, im).
// The model is the full N = 2M state system with conjugate-symmetric vectors [x; conj x]:
// A = diag(Lambda, conj Lambda) - [P; conj P][P; conj P]^*, so every output is real.

/// K[d, l] = C dA^l dB (l < T), computed as irfft of k(z) = C~ (I - z dA)^-1 dB at z = exp(-2 pi i k / T),
/// C~ = C (I - dA^T), with (I - z dA)^-1 dB = 2/(1+z) (g(z) - A)^-1 B, g(z) = 2/dt (1-z)/(1+z).
Tensor s4_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                         const Tensor& B, const Tensor& C, int64_t T);
struct S4KernelGrads {
  Tensor dlog_dt, dlog_A_real, dA_imag, dP, dB, dC;
};
/// Gradients of sum(dK * K) w.r.t. every parameter (reverse mode over the complex forward, recomputed).
S4KernelGrads s4_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& log_A_real,
                                 const Tensor& A_imag, const Tensor& P, const Tensor& B, const Tensor& C);
/// Dense discretisation of the full N-state DPLR system: dA (D, N, N, 2), dB (D, N, 2) (float64 inside).
Discretised s4_discretise(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                          const Tensor& B);
/// The S4 kernel from the dense discretised matrices, K[d, l] = Re(C_full dA^l dB) (the reference).
Tensor s4_kernel_dense(const Discretised& disc, const Tensor& C, int64_t T);
/// x = dA x + dB u_t (complex, all N states), y_t = Re(C_full x) + D_skip u_t. state (B, D, N, 2).
Tensor s4_step_forward(const Tensor& u_t, const Tensor& state, const Discretised& disc, const Tensor& C,
                       const Tensor& D_skip);

}  // namespace seqlab::kernels
