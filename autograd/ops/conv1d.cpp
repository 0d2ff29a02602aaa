// Causal depthwise conv1d op: fused kernel + hand-written backward (core/kernels/conv1d), and the
// composite reference the tests compare against.
#include "autograd/ops/conv1d.h"

#include "autograd/ops.h"
#include "core/kernels/conv1d.h"

namespace seqlab {
namespace {

void check_conv_args(const Tensor& x, const Tensor& w, const Tensor& bias) {
  SEQLAB_CHECK(x.dim() == 3, "causal_conv1d: x of shape ", to_string(x.shape()), ", expected (B, T, C)");
  SEQLAB_CHECK(w.dim() == 2 && w.size(0) == x.size(2) && w.size(1) >= 1, "causal_conv1d: w of shape ",
               to_string(w.shape()), ", expected (C, K) with C = ", x.size(2));
  SEQLAB_CHECK(!bias.defined() || bias.shape() == Shape{x.size(2)}, "causal_conv1d: bias of shape ",
               to_string(bias.shape()), ", expected (", x.size(2), ")");
  SEQLAB_CHECK(w.dtype() == x.dtype() && (!bias.defined() || bias.dtype() == x.dtype()),
               "causal_conv1d: x, w and bias must share one dtype");
}

}  // namespace

// y = act(b + sum_k w_k x_{t-K+1+k});  dx_s = sum_k w_k g_{s+K-1-k}, dw_k = sum g_t x_{t-K+1+k}, db = sum g
Tensor causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu) {
  check_conv_args(x, w, bias);
  Tensor y = kernels::causal_conv1d_forward(x, w, bias, silu);
  return record("causal_conv1d", y, {x, w, bias},
                [x = x.detach(), w = w.detach(), b = bias.defined() ? bias.detach() : Tensor(),
                 silu](const Tensor& dy) {
                  auto [dx, dw, db] = kernels::causal_conv1d_backward(dy, x, w, b, silu);
                  return grads{dx, dw, db};
                });
}

Tensor causal_conv1d_reference(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu) {
  check_conv_args(x, w, bias);
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), K = w.size(1);
  Tensor y;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t shift = K - 1 - k;  // tap k reads x[t - shift]
    if (shift >= T) continue;
    Tensor xs = shift == 0 ? x
                           : concat({Tensor::zeros({B, shift, C}, x.dtype()), slice(x, 1, 0, T - shift)}, 1);
    Tensor term = xs * reshape(slice(w, 1, k, k + 1), {C});
    y = y.defined() ? y + term : term;
  }
  if (!y.defined()) y = Tensor::zeros(x.shape(), x.dtype());
  if (bias.defined()) y = y + bias;
  return silu ? seqlab::silu(y) : y;
}

}  // namespace seqlab
