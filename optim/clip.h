// Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab::optim {

/// Global L2 norm of every defined gradient (summed in a fixed order, in double); when it exceeds
/// max_norm, scales every gradient in place by max_norm / (norm + 1e-6). Returns the norm before
/// clipping (a non-finite norm is returned and nothing is scaled).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace seqlab::optim
