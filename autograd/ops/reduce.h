// Reductions over axes. Sums use a fixed order, so results do not depend on the thread count.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab {

/// Sum over `axes` (negative allowed); keepdim keeps them as size 1.
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
/// Sum of every element, a scalar (shape {}).
Tensor sum(const Tensor& x);
/// Mean over `axes`.
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
/// Mean of every element, a scalar.
Tensor mean(const Tensor& x);
/// Maximum over one axis; the gradient goes to the first maximal element.
Tensor max(const Tensor& x, int64_t axis, bool keepdim = false);

}  // namespace seqlab
