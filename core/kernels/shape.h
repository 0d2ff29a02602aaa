// Shape kernels (no autograd). Storage is contiguous row-major, so every one of these except
// reshape copies. They move bytes, so they work for any dtype (int32 too).
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab::kernels {

/// The shape `to` with its one -1 resolved so that it holds numel(from) elements; throws naming op.
Shape resolve_reshape(const Shape& from, const Shape& to, const char* op);
/// Normalised, validated permutation (each axis once, negatives allowed); throws naming op.
std::vector<int64_t> norm_permutation(const std::vector<int64_t>& dims, const Shape& shape, const char* op);
/// The permutation q with q[p[i]] = i.
std::vector<int64_t> inverse_permutation(const std::vector<int64_t>& p);
/// Copy with axes reordered: out.shape[i] = x.shape[dims[i]] (blocked when the last axis moves).
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
/// Copy with two axes swapped.
Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1);
/// Copy with the order along `axis` reversed (torch.flip with one axis; its own gradient).
Tensor flip(const Tensor& x, int64_t axis);
/// Copy of x[..., start:end, ...] along `axis` (negative axis/start/end count from the end).
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end);
/// Zeros of x_shape with dy written at [start, start + dy.size(axis)) along `axis` (slice's gradient).
Tensor slice_backward(const Tensor& dy, const Shape& x_shape, int64_t axis, int64_t start);
/// Copies of x[..., o_i : o_i + sizes[i], ...] along axis ax (non-negative; the sizes sum to
/// x.size(ax), checked by the caller): on the device one launch for up to 16 parts instead of one
/// slice each; on the CPU the slices.
std::vector<Tensor> split(const Tensor& x, int64_t ax, const std::vector<int64_t>& sizes);
/// Joins tensors along `axis`; every other size and the dtype must match.
/// concat's output shape and its axis (made non-negative), with every check and message concat
/// makes (non-empty, axis in range, equal shapes outside it, one dtype); shared with the CUDA twin.
struct ConcatShape {
  Shape out;
  int64_t axis;
};
ConcatShape concat_shape(const std::vector<Tensor>& xs, int64_t axis);
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);

}  // namespace seqlab::kernels
