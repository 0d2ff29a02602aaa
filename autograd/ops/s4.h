// LSSL and S4 kernel ops (Gu et al. 2021; Gu, Goel, Ré 2022): each one fused op with a hand-written
// backward (core/kernels/s4). The long convolution is causal_conv_fft (autograd/ops/long_conv).
#pragma once
#include <cstdint>
#include <memory>

#include "core/kernels/hippo.h"
#include "core/tensor.h"

namespace seqlab {

/// K[d, l] = C[d] dA^l dB with the bilinear-discretised fixed (HiPPO) A, B and dt = exp(log_dt[d]).
/// log_dt (D), C (D, N) -> K (D, T). Differentiable in log_dt and C.
Tensor lssl_kernel(const Tensor& log_dt, const Tensor& C, std::shared_ptr<const kernels::HippoLegs> hippo,
                   int64_t T);
/// S4 (DPLR) kernel by the truncated generating function: log_dt (D), log_A_real, A_imag (D, M),
/// P, B, C (D, M, 2) (re, im) -> K (D, T). Differentiable in every input.
Tensor s4_kernel(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                 const Tensor& B, const Tensor& C, int64_t T);

}  // namespace seqlab
