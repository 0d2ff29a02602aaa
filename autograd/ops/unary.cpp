// Unary ops: each runs its forward kernel and saves whichever of x or y its derivative needs.
#include "autograd/ops/unary.h"

#include "autograd/node.h"
#include "core/kernels/unary.h"

namespace seqlab {

// y = exp(x);  dx = dy * y
Tensor exp(const Tensor& x) {
  Tensor y = kernels::exp_forward(x);
  return record("exp", y, {x}, [y = y.detach()](const Tensor& dy) { return grads{kernels::exp_backward(dy, y)}; });
}

// y = log(x);  dx = dy / x
Tensor log(const Tensor& x) {
  Tensor y = kernels::log_forward(x);
  return record("log", y, {x}, [x = x.detach()](const Tensor& dy) { return grads{kernels::log_backward(dy, x)}; });
}

// y = sqrt(x);  dx = dy / (2 y)
Tensor sqrt(const Tensor& x) {
  Tensor y = kernels::sqrt_forward(x);
  return record("sqrt", y, {x}, [y = y.detach()](const Tensor& dy) { return grads{kernels::sqrt_backward(dy, y)}; });
}

// y = tanh(x);  dx = dy * (1 - y^2)
Tensor tanh(const Tensor& x) {
  Tensor y = kernels::tanh_forward(x);
  return record("tanh", y, {x}, [y = y.detach()](const Tensor& dy) { return grads{kernels::tanh_backward(dy, y)}; });
}

// y = sigmoid(x);  dx = dy * y * (1 - y)
Tensor sigmoid(const Tensor& x) {
  Tensor y = kernels::sigmoid_forward(x);
  return record("sigmoid", y, {x},
                [y = y.detach()](const Tensor& dy) { return grads{kernels::sigmoid_backward(dy, y)}; });
}

// y = x s(x);  dx = dy * s * (1 + x (1 - s))
Tensor silu(const Tensor& x) {
  Tensor y = kernels::silu_forward(x);
  return record("silu", y, {x}, [x = x.detach()](const Tensor& dy) { return grads{kernels::silu_backward(dy, x)}; });
}

// y = x Phi(x);  dx = dy * (Phi(x) + x phi(x))
Tensor gelu(const Tensor& x) {
  Tensor y = kernels::gelu_forward(x);
  return record("gelu", y, {x}, [x = x.detach()](const Tensor& dy) { return grads{kernels::gelu_backward(dy, x)}; });
}

// y = log(1 + e^x) (x above threshold: y = x);  dx = dy * sigmoid(x) (dy above threshold)
Tensor softplus(const Tensor& x, double threshold) {
  Tensor y = kernels::softplus_forward(x, threshold);
  return record("softplus", y, {x}, [x = x.detach(), threshold](const Tensor& dy) {
    return grads{kernels::softplus_backward(dy, x, threshold)};
  });
}

// y = max(x, 0);  dx = dy where y > 0
Tensor relu(const Tensor& x) {
  Tensor y = kernels::relu_forward(x);
  return record("relu", y, {x}, [y = y.detach()](const Tensor& dy) { return grads{kernels::relu_backward(dy, y)}; });
}

}  // namespace seqlab
