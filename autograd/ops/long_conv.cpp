// causal_conv_fft, the long convolution of S4D, S4 and LSSL, over core/kernels/long_conv (fused
// forward, hand-written backward), and its composite reference from primitive ops.
#include "autograd/ops/long_conv.h"

#include "autograd/node.h"
#include "autograd/ops.h"
#include "core/kernels/long_conv.h"

namespace seqlab {

// y = K * u;  du = correlate(dy, K), dK = sum_b correlate(dy, u)  (stores u and K)
Tensor causal_conv_fft(const Tensor& u, const Tensor& K) {
  Tensor y = kernels::causal_conv_forward(u, K);
  bool need_u = u.requires_grad(), need_K = K.requires_grad();
  return record("causal_conv_fft", y, {u, K},
                [u = u.detach(), K = K.detach(), need_u, need_K](const Tensor& dy) {
                  auto g = kernels::causal_conv_backward(dy, u, K, need_u, need_K);
                  return grads{g.du, g.dK};
                });
}

Tensor causal_conv_reference(const Tensor& u, const Tensor& K) {
  int64_t B = u.size(0), T = u.size(1), D = u.size(2);
  int64_t S = K.dim() == 3 ? K.size(0) : 1;
  Tensor k = reshape(K, {S, D, T});
  auto column = [&](int64_t s, int64_t j) { return reshape(slice(slice(k, 0, s, s + 1), 2, j, j + 1), {D}); };
  Tensor y = u * column(0, 0);
  for (int64_t j = 1; j < T; ++j) {  // causal lag j: u[t - j]
    Tensor shifted = concat({Tensor::zeros({B, j, D}, u.dtype(), u.device()), slice(u, 1, 0, T - j)}, 1);
    y = y + shifted * column(0, j);
  }
  if (S == 2)
    for (int64_t j = 0; j + 1 < T; ++j) {  // anti-causal lag -(j + 1): u[t + 1 + j]
      Tensor shifted = concat({slice(u, 1, j + 1, T), Tensor::zeros({B, j + 1, D}, u.dtype(), u.device())}, 1);
      y = y + shifted * column(1, j);
    }
  return y;
}

}  // namespace seqlab
