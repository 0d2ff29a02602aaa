// S4D, S4 (DPLR) and LSSL on the device: the twins of core/kernels/s4d.h and core/kernels/s4.h (same
// names, shapes, checks and maths; arithmetic in double inside whatever the tensor dtype, as on the
// CPU). The HiPPO matrices (core/kernels/hippo.h) are built on the host and uploaded per call.
// s4_discretise and s4_kernel_dense (a per-channel dense N x N inverse and the reference kernel; sizes
// independent of the batch) copy their small inputs to the host, run the CPU code and upload the result.
#pragma once
#include <cstdint>

#include "core/kernels/hippo.h"
#include "core/kernels/s4.h"
#include "core/kernels/s4d.h"
#include "core/tensor.h"

namespace seqlab::cuda {

// ---- S4D (core/kernels/s4d.h)
Tensor s4d_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                          int64_t T);
kernels::S4DKernelGrads s4d_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& log_A_real,
                                            const Tensor& A_imag, const Tensor& C);
kernels::SkipGelu s4d_skip_gelu_forward(const Tensor& y, const Tensor& u, const Tensor& D_skip);
Tensor s4d_skip_backward(Tensor& du, const Tensor& dpre, const Tensor& u, const Tensor& D_skip, bool need_u,
                         bool need_D);
Tensor glu_forward(const Tensor& z);
Tensor glu_backward(const Tensor& dout, const Tensor& z);
Tensor s4d_step_forward(const Tensor& u_t, const Tensor& state, const Tensor& log_dt, const Tensor& log_A_real,
                        const Tensor& A_imag, const Tensor& C, const Tensor& D_skip);

// ---- LSSL (core/kernels/s4.h)
Tensor lssl_kernel_forward(const Tensor& log_dt, const Tensor& C, const kernels::HippoLegs& hippo, int64_t T);
kernels::LsslKernelGrads lssl_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& C,
                                              const kernels::HippoLegs& hippo);
kernels::Discretised lssl_discretise(const Tensor& log_dt, const kernels::HippoLegs& hippo);
Tensor lssl_step_forward(const Tensor& u_t, const Tensor& state, const kernels::Discretised& disc, const Tensor& C,
                         const Tensor& D_skip);

// ---- S4 (core/kernels/s4.h)
Tensor s4_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                         const Tensor& B, const Tensor& C, int64_t T);
kernels::S4KernelGrads s4_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& log_A_real,
                                          const Tensor& A_imag, const Tensor& P, const Tensor& B, const Tensor& C);
kernels::Discretised s4_discretise(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag,
                                   const Tensor& P, const Tensor& B);
Tensor s4_kernel_dense(const kernels::Discretised& disc, const Tensor& C, int64_t T);
Tensor s4_step_forward(const Tensor& u_t, const Tensor& state, const kernels::Discretised& disc, const Tensor& C,
                       const Tensor& D_skip);

}  // namespace seqlab::cuda
