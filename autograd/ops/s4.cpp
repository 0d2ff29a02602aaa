// lssl_kernel and s4_kernel over core/kernels/s4: one node each, storing only the (detached)
// parameters; the backward recomputes the powers (LSSL) or the recurrence and Cauchy sums (S4).
#include "autograd/ops/s4.h"

#include "autograd/node.h"
#include "core/kernels/s4.h"

namespace seqlab {

// K = C dA^l dB;  dC = sum_l dK_l dA^l dB, dlog_dt by tangent propagation (kernels::lssl_kernel_backward)
Tensor lssl_kernel(const Tensor& log_dt, const Tensor& C, std::shared_ptr<const kernels::HippoLegs> hippo,
                   int64_t T) {
  Tensor K = kernels::lssl_kernel_forward(log_dt, C, *hippo, T);
  return record("lssl_kernel", K, {log_dt, C},
                [log_dt = log_dt.detach(), C = C.detach(), hippo](const Tensor& dK) {
                  auto g = kernels::lssl_kernel_backward(dK, log_dt, C, *hippo);
                  return grads{g.dlog_dt, g.dC};
                });
}

// K = irfft(k(z)), k = C~ (I - z dA)^-1 dB;  gradients by reverse mode over the complex forward
Tensor s4_kernel(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                 const Tensor& B, const Tensor& C, int64_t T) {
  Tensor K = kernels::s4_kernel_forward(log_dt, log_A_real, A_imag, P, B, C, T);
  return record("s4_kernel", K, {log_dt, log_A_real, A_imag, P, B, C},
                [log_dt = log_dt.detach(), lar = log_A_real.detach(), ai = A_imag.detach(), P = P.detach(),
                 B = B.detach(), C = C.detach()](const Tensor& dK) {
                  auto g = kernels::s4_kernel_backward(dK, log_dt, lar, ai, P, B, C);
                  return grads{g.dlog_dt, g.dlog_A_real, g.dA_imag, g.dP, g.dB, g.dC};
                });
}

}  // namespace seqlab
