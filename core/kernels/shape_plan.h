// Host-side planning of the shape copies (core/kernels/shape.h) and of one-axis views, defined once in
// shape.cpp and used by the CPU kernels and their CUDA twins (core/cuda/shape.cu, core/cuda/reduce.cu)
// alike: the same checks, the same messages, the same plan. Plain C++, no device code.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace seqlab::kernels {

/// A tensor of shape s viewed as (A, K, B) around `axis` (0 <= axis < rank): A the product of the sizes
/// before it, K its size, B the product of the sizes after it.
void split_at(const Shape& s, int64_t axis, int64_t& A, int64_t& K, int64_t& B);

/// Calls f.template operator()<E>() with E the unsigned integer of the dtype's size (4 or 8 bytes): the
/// shape copies move words, so one instance serves every dtype.
template <typename F>
void by_size(DType t, F&& f) {
  if (dtype_size(t) == 8) f.template operator()<uint64_t>();
  else f.template operator()<uint32_t>();
}

/// permute's copy: the output shape, and the iteration over the output as row-major sizes with the input's
/// element stride for each (size-1 axes dropped, axes that stay contiguous merged). size.size() <= 1: the
/// order of the elements does not change (a plain copy).
struct PermutePlan {
  Shape out;
  std::vector<int64_t> size, st;
};
/// Plans permute(x, dims) for x of shape xs; a bad permutation throws naming permute.
PermutePlan plan_permute(const Shape& xs, const std::vector<int64_t>& dims);

/// transpose's permutation of a tensor of shape s: the identity with axis0 and axis1 (negative allowed)
/// swapped; an axis out of range throws naming transpose.
std::vector<int64_t> transpose_permutation(const Shape& s, int64_t axis0, int64_t axis1);

/// A copy along one axis: the input (flip, slice) or the gradient's target (slice_backward, max_backward)
/// as (A, K, B) around the normalised axis, the range [start, start + len) of K that slice reads and
/// slice_backward writes, and the output's shape.
struct AxisPlan {
  int64_t axis = 0;
  int64_t A = 1, K = 1, B = 1;
  int64_t start = 0, len = 0;
  Shape out;
};
/// flip's plan for x of shape xs; an axis out of range throws naming flip.
AxisPlan plan_flip(const Shape& xs, int64_t axis);
/// slice's plan for x of shape xs (negative axis, start and end count from the end); throws naming slice.
AxisPlan plan_slice(const Shape& xs, int64_t axis, int64_t start, int64_t end);
/// slice_backward's plan: dy of shape dys placed at start along `axis` of x_shape; throws naming slice_backward.
AxisPlan plan_slice_backward(const Shape& dys, const Shape& x_shape, int64_t axis, int64_t start);

}  // namespace seqlab::kernels
