// Softmax and log-softmax kernels along one axis, max-subtracted so exp never overflows.
// Backward: softmax dx = y * (dy - sum(dy * y)); log-softmax dx = dy - exp(y) * sum(dy).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// exp(x - max) / sum(exp(x - max)) along `axis` (negative counts from the end).
Tensor softmax_forward(const Tensor& x, int64_t axis);
/// dx of softmax from the output y.
Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t axis);
/// x - max - log(sum(exp(x - max))) along `axis`.
Tensor log_softmax_forward(const Tensor& x, int64_t axis);
/// dx of log_softmax from the output y.
Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t axis);

}  // namespace seqlab::kernels
