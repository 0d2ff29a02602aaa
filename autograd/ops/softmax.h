// Softmax and log-softmax along one axis (max-subtracted, stable).
#pragma once
#include "core/tensor.h"

namespace seqlab {

Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);

}  // namespace seqlab
