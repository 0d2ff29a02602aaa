// Elementwise kernels (no autograd): broadcasting binary maths, scalar maths, and the in-place
// updates optimizers use. Binary ops follow NumPy broadcasting and have fast paths for equal
// shapes, a scalar operand, and a trailing/row broadcast; everything else takes a strided path.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab::kernels {

/// The coalesced iteration space of out = f(a, b) under broadcasting: sizes outermost first (size-1
/// axes dropped, neighbours merged where both operands allow) and each operand's element strides (0
/// on a broadcast axis). Shared by the CPU loops and the CUDA kernels.
struct BroadcastPlan {
  std::vector<int64_t> size, sa, sb;
};
BroadcastPlan broadcast_plan(const Shape& out, const Shape& a, const Shape& b);

/// a + b, broadcasting; a fresh tensor.
Tensor add(const Tensor& a, const Tensor& b);
/// a - b, broadcasting.
Tensor sub(const Tensor& a, const Tensor& b);
/// a * b, broadcasting.
Tensor mul(const Tensor& a, const Tensor& b);
/// a / b, broadcasting.
Tensor div(const Tensor& a, const Tensor& b);
/// x copied out to `shape` (x must broadcast to it), times alpha.
Tensor broadcast_to(const Tensor& x, const Shape& shape, double alpha = 1.0);

/// -x.
Tensor neg(const Tensor& x);
/// x + s.
Tensor add_scalar(const Tensor& x, double s);
/// x * s.
Tensor mul_scalar(const Tensor& x, double s);
/// x^p elementwise (p = 2, 1, 0.5, -1 take exact fast paths).
Tensor pow_scalar(const Tensor& x, double p);
/// dy * p * x^(p-1), the gradient of pow_scalar.
Tensor pow_scalar_backward(const Tensor& dy, const Tensor& x, double p);

/// dst += alpha * src in place; src must broadcast to dst's shape.
void add_(Tensor& dst, const Tensor& src, double alpha = 1.0);
/// dst = alpha * dst + beta * src in place (same numel), e.g. an EMA of gradients.
void axpby_(Tensor& dst, double alpha, const Tensor& src, double beta);
/// dst *= src in place; src must broadcast to dst's shape.
void mul_(Tensor& dst, const Tensor& src);
/// dst += value * a * b in place (all the same numel), e.g. Adam's second moment.
void addcmul_(Tensor& dst, const Tensor& a, const Tensor& b, double value);
/// t *= s in place.
void scale_(Tensor& t, double s);
/// Every element of t set to v.
void fill(Tensor& t, double v);
/// dst = src (same numel and dtype) in place.
void copy_(Tensor& dst, const Tensor& src);

}  // namespace seqlab::kernels
