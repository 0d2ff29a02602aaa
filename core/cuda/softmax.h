// Softmax and log-softmax on the device (core/kernels/softmax.h's twins): one block per contiguous
// line, or 32 lines x 8 threads per block for a strided axis; sums in double, fixed-order trees.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::cuda {

Tensor softmax_forward(const Tensor& x, int64_t axis);
Tensor softmax_backward(const Tensor& dy, const Tensor& y, int64_t axis);
Tensor log_softmax_forward(const Tensor& x, int64_t axis);
Tensor log_softmax_backward(const Tensor& dy, const Tensor& y, int64_t axis);

}  // namespace seqlab::cuda
