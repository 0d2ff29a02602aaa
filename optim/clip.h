// Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab::optim {

/// Global L2 norm of every defined gradient (summed in a fixed order, in double); when it exceeds
/// max_norm, scales every gradient in place by max_norm / (norm + 1e-6). Returns the norm before
/// clipping (a non-finite norm is returned and nothing is scaled). known_sum_sq >= 0: the caller has
/// already reduced these gradients on the device (cuda::sum_of_squares over the same tensors in the
/// same order, e.g. for the non-finite check of a training step): used instead of a second reduction
/// and copy back, so the norm is the same value. Ignored for CPU gradients.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double known_sum_sq = -1);

}  // namespace seqlab::optim
