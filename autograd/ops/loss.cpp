// Loss ops over core/kernels/loss: each returns a scalar mean and records one node.
#include "autograd/ops/loss.h"

#include "autograd/node.h"
#include "core/kernels/loss.h"

namespace seqlab {
namespace {

// y = mean(l(pred - target));  dpred = dy * l'(pred - target) / n, dtarget = -dpred
Tensor point_loss(kernels::PointLoss kind, const char* name, const Tensor& pred, const Tensor& target,
                  double delta) {
  Tensor y = kernels::point_loss_forward(kind, pred, target, delta, name);
  bool need_p = pred.requires_grad(), need_t = target.requires_grad();
  return record(name, y, {pred, target},
                [kind, p = pred.detach(), t = target.detach(), delta, need_p, need_t](const Tensor& dy) {
                  auto [dp, dt] = kernels::point_loss_backward(kind, dy, p, t, delta, need_p, need_t);
                  return grads{dp, dt};
                });
}

}  // namespace

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  return point_loss(kernels::PointLoss::mse, "mse_loss", pred, target, 0);
}

Tensor l1_loss(const Tensor& pred, const Tensor& target) {
  return point_loss(kernels::PointLoss::l1, "l1_loss", pred, target, 0);
}

Tensor huber_loss(const Tensor& pred, const Tensor& target, double delta) {
  return point_loss(kernels::PointLoss::huber, "huber_loss", pred, target, delta);
}

// y = mean_i (lse(x_i) - x_i[t_i]) over non-ignored i;  dx_i = (softmax(x_i) - onehot(t_i)) * dy / count
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int ignore_index) {
  kernels::CrossEntropyForward f = kernels::cross_entropy_forward(logits, targets, ignore_index);
  return record("cross_entropy", f.loss, {logits, targets},
                [x = logits.detach(), t = targets.detach(), lse = f.lse, count = f.count,
                 ignore_index](const Tensor& dy) {
                  return grads{kernels::cross_entropy_backward(dy, x, t, lse, count, ignore_index), Tensor()};
                });
}

}  // namespace seqlab
