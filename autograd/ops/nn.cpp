// layer_norm, rms_norm and dropout ops over core/kernels/norm: fused forward, hand-written backward.
#include "autograd/ops/nn.h"

#include "autograd/node.h"
#include "core/kernels/norm.h"

namespace seqlab {

// y = xh * w + b, xh = (x - mean) * rstd;  dx = rstd * (g - mean(g) - xh * mean(g * xh)) with g = dy * w,
// dw = sum_rows dy * xh, db = sum_rows dy
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  kernels::NormForward f = kernels::layer_norm_forward(x, w, b, eps);
  bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = b.requires_grad();
  return record("layer_norm", f.y, {x, w, b},
                [x = x.detach(), w = w.defined() ? w.detach() : Tensor(), mean = f.mean, rstd = f.rstd, need_x,
                 need_w, need_b](const Tensor& dy) {
                  auto [dx, dw, db] = kernels::layer_norm_backward(dy, x, w, mean, rstd, need_x, need_w, need_b);
                  return grads{dx, dw, db};
                });
}

// y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps);  dx = rstd * (g - xh * mean(g * xh)) with g = dy * w,
// xh = x * rstd; dw = sum_rows dy * xh
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps) {
  kernels::NormForward f = kernels::rms_norm_forward(x, w, eps);
  bool need_x = x.requires_grad(), need_w = w.requires_grad();
  return record("rms_norm", f.y, {x, w},
                [x = x.detach(), w = w.defined() ? w.detach() : Tensor(), rstd = f.rstd, need_x,
                 need_w](const Tensor& dy) {
                  auto [dx, dw] = kernels::rms_norm_backward(dy, x, w, rstd, need_x, need_w);
                  return grads{dx, dw};
                });
}

// y = x * mask, mask in {0, 1 / (1 - p)};  dx = dy * mask
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  SEQLAB_CHECK(p >= 0 && p <= 1, "dropout: p must be in [0, 1], got ", p);
  if (!training || p == 0) return x;
  Tensor mask = kernels::dropout_mask(x.shape(), x.dtype(), p, gen, x.device());
  Tensor y = kernels::apply_mask(x, mask);
  return record("dropout", y, {x}, [mask](const Tensor& dy) { return grads{kernels::apply_mask(dy, mask)}; });
}

}  // namespace seqlab
