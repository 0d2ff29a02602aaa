// matmul and linear: thin autograd wrappers over core/kernels/matmul (one strided batched GEMM,
// OpenBLAS single-threaded, large products split over TBB).
#include "autograd/ops/linalg.h"

#include "autograd/node.h"
#include "core/kernels/matmul.h"

namespace seqlab {

// y = op(a) @ op(b);  d op(a) = dy @ op(b)^T, d op(b) = op(a)^T @ dy (summed over the batch when b is shared)
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  Tensor y = kernels::matmul_forward(a, b, trans_a, trans_b);
  bool need_a = a.requires_grad(), need_b = b.requires_grad();
  // Only what backward reads: a for db, b for da.
  Tensor as = need_b ? a.detach() : Tensor(), bs = need_a ? b.detach() : Tensor();
  return record("matmul", y, {a, b},
                [as, bs, sa = a.shape(), sb = b.shape(), trans_a, trans_b, need_a, need_b](const Tensor& dy) {
                  auto [da, db] = kernels::matmul_backward(dy, as, bs, sa, sb, trans_a, trans_b, need_a, need_b);
                  return grads{da, db};
                });
}

// y = x @ w^T + b;  dx = dy @ w, dw = dy^T @ x, db = column sum of dy
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor y = kernels::linear_forward(x, w, b);
  bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = b.requires_grad();
  // Only what backward reads: x for dw, w for dx.
  Tensor xs = need_w ? x.detach() : Tensor(), ws = need_x ? w.detach() : Tensor();
  return record("linear", y, {x, w, b}, [xs, ws, need_x, need_w, need_b](const Tensor& dy) {
    auto [dx, dw, db] = kernels::linear_backward(dy, xs, ws, need_x, need_w, need_b);
    return grads{dx, dw, db};
  });
}

}  // namespace seqlab
