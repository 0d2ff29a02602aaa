// Reductions on the device (core/kernels/reduce.h's twins, same names, shapes and maths): sums and
// means over axes, sum_to / mul_sum_to, max with its indices and max's backward. Every sum is a
// fixed-order tree (the order depends only on the shape), so a run is bit-identical to itself.
#pragma once
#include <vector>

#include "core/kernels/reduce.h"
#include "core/tensor.h"

namespace seqlab::cuda {

Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
Tensor sum_all(const Tensor& x);
Tensor mean_all(const Tensor& x);
/// Accumulated in double on the device; the one value is copied back.
double sum_squares(const Tensor& x);
Tensor sum_to(const Tensor& g, const Shape& target);
Tensor mul_sum_to(const Tensor& a, const Tensor& b, const Shape& target);
kernels::MaxResult max(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor max_backward(const Tensor& dy, const Tensor& indices, const Shape& x_shape, int64_t axis);

}  // namespace seqlab::cuda
