// Broadcasting binary ops and scalar ops. A broadcast input's gradient is the output gradient
// summed back to the input's shape (kernels::sum_to); inputs that need no gradient get none.
#include "autograd/ops/elementwise.h"

#include "autograd/node.h"
#include "core/kernels/elementwise.h"
#include "core/kernels/reduce.h"

namespace seqlab {

// y = a + b;  da = sum_to(dy), db = sum_to(dy)
Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::add(a, b);
  return record("add", y, {a, b},
                [sa = a.shape(), sb = b.shape(), ga = a.requires_grad(), gb = b.requires_grad()](const Tensor& dy) {
                  return grads{ga ? kernels::sum_to(dy, sa) : Tensor(), gb ? kernels::sum_to(dy, sb) : Tensor()};
                });
}

// y = a - b;  da = sum_to(dy), db = -sum_to(dy)
Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::sub(a, b);
  return record("sub", y, {a, b},
                [sa = a.shape(), sb = b.shape(), ga = a.requires_grad(), gb = b.requires_grad()](const Tensor& dy) {
                  return grads{ga ? kernels::sum_to(dy, sa) : Tensor(),
                               gb ? kernels::neg(kernels::sum_to(dy, sb)) : Tensor()};
                });
}

// y = a * b;  da = sum_to(dy * b), db = sum_to(dy * a)
Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::mul(a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("mul", y, {a, b},
                [ga, gb, ad = gb ? a.detach() : Tensor(), bd = ga ? b.detach() : Tensor(), sa = a.shape(),
                 sb = b.shape()](const Tensor& dy) {
                  return grads{ga ? kernels::mul_sum_to(dy, bd, sa) : Tensor(),
                               gb ? kernels::mul_sum_to(dy, ad, sb) : Tensor()};
                });
}

// y = a / b;  da = sum_to(dy / b), db = -sum_to(dy / b * y)
Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::div(a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return record("div", y, {a, b},
                [ga, gb, bd = b.detach(), yd = gb ? y.detach() : Tensor(), sa = a.shape()](const Tensor& dy) {
                  Tensor q = kernels::div(dy, bd);
                  Tensor db;
                  if (gb) {
                    db = kernels::mul_sum_to(q, yd, bd.shape());
                    kernels::scale_(db, -1.0);  // a fresh tensor: mul_sum_to never returns an input
                  }
                  return grads{ga ? kernels::sum_to(q, sa) : Tensor(), db};
                });
}

// y = -x;  dx = -dy
Tensor neg(const Tensor& x) {
  Tensor y = kernels::neg(x);
  return record("neg", y, {x}, [](const Tensor& dy) { return grads{kernels::neg(dy)}; });
}

// y = x + s;  dx = dy
Tensor add_scalar(const Tensor& x, double s) {
  Tensor y = kernels::add_scalar(x, s);
  return record("add_scalar", y, {x}, [](const Tensor& dy) { return grads{dy}; });
}

// y = x * s;  dx = s * dy
Tensor mul_scalar(const Tensor& x, double s) {
  Tensor y = kernels::mul_scalar(x, s);
  return record("mul_scalar", y, {x}, [s](const Tensor& dy) { return grads{kernels::mul_scalar(dy, s)}; });
}

// y = x^p;  dx = dy * p * x^(p-1)
Tensor pow_scalar(const Tensor& x, double p) {
  Tensor y = kernels::pow_scalar(x, p);
  return record("pow_scalar", y, {x},
                [xd = x.detach(), p](const Tensor& dy) { return grads{kernels::pow_scalar_backward(dy, xd, p)}; });
}

}  // namespace seqlab
