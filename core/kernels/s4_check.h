// The argument checks of the LSSL and S4 kernels (core/kernels/s4.h), defined once in s4.cpp and called
// by the CPU loops and their CUDA twins (core/cuda/ssm.cu) alike, so both raise the same errors.
// Glossary: B batch, D channels, N state size, M = N/2 pairs.
#pragma once
#include <vector>

#include "core/kernels/hippo.h"
#include "core/tensor.h"

namespace seqlab::kernels {

/// Checks log_dt (D) and C (D, N) of one dtype, N = hippo.N; op names the caller.
void check_lssl_params(const Tensor& log_dt, const Tensor& C, const HippoLegs& hippo, const char* op);
/// lssl_step's checks: x_t (B, D) and state (B, D, N) of x_t's dtype, D and N read from C (D, N).
void check_lssl_step(const Tensor& u_t, const Tensor& state, const Tensor& C);
/// Checks log_dt (D), log_A_real and A_imag (D, M) and each of cplx (D, M, 2), of one dtype; op names the caller.
void check_s4_params(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag,
                     const std::vector<const Tensor*>& cplx, const char* op);
/// s4_step's checks: x_t (B, D) and state (B, D, N, 2) of x_t's dtype, N = 2 M, D and M read from C (D, M, 2).
void check_s4_step(const Tensor& u_t, const Tensor& state, const Tensor& C);

}  // namespace seqlab::kernels
