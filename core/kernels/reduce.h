// Reduction kernels (no autograd): sums, means and max over axes, and sum_to, which folds a
// broadcast gradient back to an input's shape. Sums are deterministic whatever the thread count:
// the summation order depends only on the shape (fixed chunks, partials added in order).
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab::kernels {

/// Sum over `axes` (negative allowed, no repeats); keepdim keeps them as size 1. No axes: a copy.
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
/// Mean over `axes`.
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
/// Sum of every element, shape {}.
Tensor sum_all(const Tensor& x);
/// Mean of every element, shape {}.
Tensor mean_all(const Tensor& x);
/// Sum of squares of every element, accumulated in double (gradient-norm clipping).
double sum_squares(const Tensor& x);
/// g summed over the axes along which `target` was broadcast to g's shape; returns g itself when
/// the shapes already match.
/// The axes sum_to sums over (leading axes, then size-1 target axes), checking target fits g's shape.
std::vector<int64_t> sum_to_axes(const Shape& g, const Shape& target);
Tensor sum_to(const Tensor& g, const Shape& target);
/// sum_to(a * b, target), a and b broadcasting; skips the a * b temporary when the reduction is
/// over leading rows of two same-shape tensors (a weight's or bias's gradient).
Tensor mul_sum_to(const Tensor& a, const Tensor& b, const Shape& target);

/// Values and int32 positions (along the axis) of the maximum over one axis.
struct MaxResult {
  Tensor values;
  Tensor indices;
};
/// Maximum over `axis`; ties go to the first position; NaN propagates.
MaxResult max(const Tensor& x, int64_t axis, bool keepdim = false);
/// Scatters dy (the shape of max's values, keepdim or not) to the recorded positions; zeros elsewhere.
Tensor max_backward(const Tensor& dy, const Tensor& indices, const Shape& x_shape, int64_t axis);

/// Normalises and sorts `axes` for a tensor of shape `shape`; throws naming op on a bad or repeated axis.
std::vector<int64_t> norm_axes(const std::vector<int64_t>& axes, const Shape& shape, const char* op);
/// x's shape with `axes` (normalised) set to 1 (keepdim) or removed.
Shape reduced_shape(const Shape& x, const std::vector<int64_t>& axes, bool keepdim);

}  // namespace seqlab::kernels
