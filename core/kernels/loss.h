// Loss kernels, each a mean over elements (cross-entropy: over non-ignored rows). Forward returns
// a scalar tensor of the input's dtype; backward takes the scalar output gradient dy.
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

enum class PointLoss { mse, l1, huber };

/// mean(l(pred - target)) with l = d^2, |d| or PyTorch's Huber with `delta`; shapes must match.
Tensor point_loss_forward(PointLoss kind, const Tensor& pred, const Tensor& target, double delta, const char* op);
/// {dpred, dtarget} (dtarget = -dpred); undefined where not asked for.
std::array<Tensor, 2> point_loss_backward(PointLoss kind, const Tensor& dy, const Tensor& pred, const Tensor& target,
                                          double delta, bool need_pred, bool need_target);

struct CrossEntropyForward {
  Tensor loss;   // scalar, logits' dtype
  Tensor lse;    // (N) float64: log-sum-exp of each row, for backward
  int64_t count = 0;  // rows whose target is not ignore_index
};
/// mean over non-ignored rows of lse(logits[i]) - logits[i, t_i]; logits (N, V), targets int32 (N).
CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets, int ignore_index);
/// dlogits = (softmax(logits) - onehot(t)) * dy / count, zero rows where ignored.
Tensor cross_entropy_backward(const Tensor& dy, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t count, int ignore_index);

}  // namespace seqlab::kernels
