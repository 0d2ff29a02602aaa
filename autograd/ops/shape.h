// Shape ops. Storage is always contiguous row-major, so transpose/slice/concat copy; reshape
// shares storage.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab {

/// Same data, new shape (one size may be -1).
Tensor reshape(const Tensor& x, const Shape& shape);
/// Joins tensors along `axis`; all other sizes must match.
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
/// x[..., start:end, ...] along `axis`.
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end);
/// x cut along `axis` into consecutive parts of the given sizes (>= 0, summing to x's size there):
/// torch.split(x, sizes, axis). The same values as one slice per part, but one graph node: its
/// backward joins the parts' gradients with one concat (zeros for a part not used) instead of a
/// zero-padded gradient per slice and their sum. Throws seqlab::Error naming the sizes otherwise.
std::vector<Tensor> split(const Tensor& x, int64_t axis, const std::vector<int64_t>& sizes);
/// Reverses the order along `axis` (torch.flip(x, [axis])).
Tensor flip(const Tensor& x, int64_t axis);
/// Swaps two axes.
Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1);
/// Reorders axes: out.shape[i] = x.shape[dims[i]].
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);

}  // namespace seqlab
