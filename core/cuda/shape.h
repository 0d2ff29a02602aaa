// Shape copies on the device (core/kernels/shape.h's twins): permute/transpose (a tiled transpose
// when the last axis moves), flip, slice, slice's backward and concat. They move elements of 4 or 8
// bytes, so every dtype (int32 too) is accepted.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab::cuda {

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1);
Tensor flip(const Tensor& x, int64_t axis);
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end);
Tensor slice_backward(const Tensor& dy, const Shape& x_shape, int64_t axis, int64_t start);
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
std::vector<Tensor> split(const Tensor& x, int64_t ax, const std::vector<int64_t>& sizes);

}  // namespace seqlab::cuda
