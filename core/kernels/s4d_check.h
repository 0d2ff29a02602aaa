// The argument checks of the S4D kernels (core/kernels/s4d.h), defined once in s4d.cpp and called by
// the CPU loops and their CUDA twins (core/cuda/ssm.cu) alike, so both raise the same errors.
// Glossary: D channels, M conjugate pairs, S kernel directions (1 or 2), B batch.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// The sizes of the S4D kernel parameters.
struct S4DKernelDims {
  int64_t D, M, S;
};
/// Checks log_dt (D), log_A_real and A_imag (D, M), C (D, M, 2) or (S, D, M, 2) of one dtype; op names the caller.
S4DKernelDims check_s4d_kernel_params(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag,
                                      const Tensor& C, const char* op);
/// s4d_step's checks: the kernel parameters, C (D, M, 2), x_t (B, D) and state (B, D, M, 2) of x_t's dtype.
S4DKernelDims check_s4d_step(const Tensor& u_t, const Tensor& state, const Tensor& log_dt, const Tensor& log_A_real,
                             const Tensor& A_imag, const Tensor& C);

}  // namespace seqlab::kernels
