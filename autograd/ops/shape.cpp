// Shape ops. reshape shares storage (a view); the others copy, and their gradients are the inverse
// copy of dy.
#include "autograd/ops/shape.h"

#include "autograd/node.h"
#include "core/kernels/shape.h"

namespace seqlab {

// y = x viewed as shape;  dx = dy viewed as x's shape
Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor y = x.view(kernels::resolve_reshape(x.shape(), shape, "reshape"));
  return record("reshape", y, {x}, [xs = x.shape()](const Tensor& dy) { return grads{dy.view(xs)}; });
}

// y = [x0, x1, ...] along axis;  dxi = the slice of dy that xi fills
Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  Tensor y = kernels::concat(xs, axis);
  std::vector<int64_t> starts;
  std::vector<char> need;
  const int64_t ax = axis < 0 ? axis + y.dim() : axis;
  int64_t off = 0;
  for (const Tensor& x : xs) {
    starts.push_back(off);
    need.push_back(x.requires_grad());
    off += x.shape()[static_cast<size_t>(ax)];
  }
  return record("concat", y, xs, [starts, need, off, ax](const Tensor& dy) {
    grads g(starts.size());
    for (size_t i = 0; i < starts.size(); ++i) {
      if (!need[i]) continue;
      const int64_t end = i + 1 < starts.size() ? starts[i + 1] : off;
      g[i] = kernels::slice(dy, ax, starts[i], end);
    }
    return g;
  });
}

// y = x[start:end] along axis;  dx = dy placed back at [start, end), zeros elsewhere
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end) {
  Tensor y = kernels::slice(x, axis, start, end);
  const int64_t n = x.size(axis);
  const int64_t s = start < 0 ? start + n : start;
  return record("slice", y, {x}, [xs = x.shape(), axis, s](const Tensor& dy) {
    return grads{kernels::slice_backward(dy, xs, axis, s)};
  });
}

// y_i = x[o_i : o_i + sizes[i]] along axis;  dx = [dy_0, dy_1, ...] along axis (one concat)
std::vector<Tensor> split(const Tensor& x, int64_t axis, const std::vector<int64_t>& sizes) {
  SEQLAB_CHECK(x.dim() > 0 && axis >= -x.dim() && axis < x.dim(), "split: axis ", axis, " out of range for shape ",
               to_string(x.shape()));
  const int64_t ax = axis < 0 ? axis + x.dim() : axis;
  int64_t total = 0;
  for (int64_t n : sizes) {
    SEQLAB_CHECK(n >= 0, "split: part sizes must be >= 0, got ", n);
    total += n;
  }
  SEQLAB_CHECK(!sizes.empty() && total == x.size(ax), "split: part sizes summing to ", total, " (", sizes.size(),
               " parts) along axis ", ax, " of shape ", to_string(x.shape()), ", expected them to sum to ", x.size(ax));
  return record_multi("split", kernels::split(x, ax, sizes), {x},
                      [ax](const std::vector<Tensor>& dys) { return grads{kernels::concat(dys, ax)}; });
}

// y = x with axis0 and axis1 swapped;  dx = dy with them swapped back
// y = x reversed along axis;  dx = dy reversed along the same axis
Tensor flip(const Tensor& x, int64_t axis) {
  Tensor y = kernels::flip(x, axis);
  return record("flip", y, {x}, [axis](const Tensor& dy) { return grads{kernels::flip(dy, axis)}; });
}

Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1) {
  Tensor y = kernels::transpose(x, axis0, axis1);
  return record("transpose", y, {x},
                [axis0, axis1](const Tensor& dy) { return grads{kernels::transpose(dy, axis0, axis1)}; });
}

// y = x with axes reordered by dims;  dx = dy reordered by the inverse permutation
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor y = kernels::permute(x, dims);
  return record("permute", y, {x}, [inv = kernels::inverse_permutation(kernels::norm_permutation(dims, x.shape(), "permute"))](
                                       const Tensor& dy) { return grads{kernels::permute(dy, inv)}; });
}

}  // namespace seqlab
