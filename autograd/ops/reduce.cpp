// Reductions. The gradient of a sum is the output gradient broadcast back over the reduced axes;
// max sends it to the position that won.
#include "autograd/ops/reduce.h"

#include "autograd/node.h"
#include "core/kernels/elementwise.h"
#include "core/kernels/reduce.h"

namespace seqlab {

// y = sum_axes x;  dx = broadcast(dy)
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  std::vector<int64_t> ax = kernels::norm_axes(axes, x.shape(), "sum");
  Tensor y = kernels::sum(x, ax, keepdim);
  return record("sum", y, {x}, [xs = x.shape(), kept = kernels::reduced_shape(x.shape(), ax, true)](const Tensor& dy) {
    return grads{kernels::broadcast_to(dy.view(kept), xs)};
  });
}

// y = sum x;  dx = dy everywhere
Tensor sum(const Tensor& x) {
  Tensor y = kernels::sum_all(x);
  return record("sum", y, {x}, [xs = x.shape()](const Tensor& dy) { return grads{kernels::broadcast_to(dy, xs)}; });
}

// y = sum_axes x / n;  dx = broadcast(dy) / n
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  std::vector<int64_t> ax = kernels::norm_axes(axes, x.shape(), "mean");
  Tensor y = kernels::mean(x, ax, keepdim);
  int64_t n = 1;
  for (int64_t a : ax) n *= x.shape()[static_cast<size_t>(a)];
  return record("mean", y, {x},
                [xs = x.shape(), kept = kernels::reduced_shape(x.shape(), ax, true), n](const Tensor& dy) {
                  return grads{kernels::broadcast_to(dy.view(kept), xs, 1.0 / static_cast<double>(n))};
                });
}

// y = sum x / n;  dx = dy / n everywhere
Tensor mean(const Tensor& x) {
  Tensor y = kernels::mean_all(x);
  return record("mean", y, {x}, [xs = x.shape()](const Tensor& dy) {
    return grads{kernels::broadcast_to(dy, xs, 1.0 / static_cast<double>(numel(xs)))};
  });
}

// y = max_axis x;  dx = dy at the first maximal position, 0 elsewhere
Tensor max(const Tensor& x, int64_t axis, bool keepdim) {
  kernels::MaxResult r = kernels::max(x, axis, keepdim);
  return record("max", r.values, {x}, [idx = r.indices, xs = x.shape(), axis](const Tensor& dy) {
    return grads{kernels::max_backward(dy, idx, xs, axis)};
  });
}

}  // namespace seqlab
