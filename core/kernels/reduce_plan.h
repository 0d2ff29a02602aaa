// Host-side planning of the reductions (core/kernels/reduce.h), defined once in reduce.cpp and used by
// the CPU kernels and their CUDA twins (core/cuda/reduce.cu) alike: the same checks, the same messages,
// the same order of steps. Plain C++, no device code.
#pragma once
#include <cstdint>
#include <vector>

#include "core/kernels/shape_plan.h"
#include "core/tensor.h"

namespace seqlab::kernels {

/// One step of a sum over several axes: the input viewed as (A, K, B), summed over K into (A, B).
struct SumStep {
  int64_t A, K, B;
};
/// The steps that sum a non-empty tensor of shape xs over the sorted `axes`: size-1 axes dropped, adjacent
/// reduced / kept axes merged, then the reduced groups one at a time, innermost first (each step reads
/// the previous step's output). No steps: nothing is reduced, the sum is a copy.
std::vector<SumStep> plan_sum(const Shape& xs, const std::vector<int64_t>& axes);
/// Whether mul_sum_to of two tensors of shape s into `target` sums leading rows only (target without its
/// leading 1s is a suffix of s), so that it is one (K, B) column sum of the products.
bool sums_leading_rows(const Shape& s, const Shape& target);
/// max's plan: xs as (A, K, B) around the checked axis (K > 0), out the values' shape (keepdim or not).
AxisPlan plan_max(const Shape& xs, int64_t axis, bool keepdim);
/// max_backward's plan: x_shape as (A, K, B) around the checked axis, dy and indices of A * B elements.
AxisPlan plan_max_backward(const Tensor& dy, const Tensor& indices, const Shape& x_shape, int64_t axis);

}  // namespace seqlab::kernels
