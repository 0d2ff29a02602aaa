// Unary maths kernels (no autograd), as forward/backward pairs. A backward takes whichever of x or
// y gives the cheapest derivative, and is named in its parameter list.
#pragma once
#include "core/tensor.h"

namespace seqlab::kernels {

/// exp(x).
Tensor exp_forward(const Tensor& x);
/// dy * y, y = exp(x).
Tensor exp_backward(const Tensor& dy, const Tensor& y);
/// log(x).
Tensor log_forward(const Tensor& x);
/// dy / x.
Tensor log_backward(const Tensor& dy, const Tensor& x);
/// sqrt(x).
Tensor sqrt_forward(const Tensor& x);
/// dy / (2 y), y = sqrt(x).
Tensor sqrt_backward(const Tensor& dy, const Tensor& y);
/// tanh(x).
Tensor tanh_forward(const Tensor& x);
/// dy * (1 - y^2), y = tanh(x).
Tensor tanh_backward(const Tensor& dy, const Tensor& y);
/// 1 / (1 + exp(-x)), stable for large |x|.
Tensor sigmoid_forward(const Tensor& x);
/// dy * y * (1 - y), y = sigmoid(x).
Tensor sigmoid_backward(const Tensor& dy, const Tensor& y);
/// x * sigmoid(x).
Tensor silu_forward(const Tensor& x);
/// dy * s * (1 + x (1 - s)), s = sigmoid(x).
Tensor silu_backward(const Tensor& dy, const Tensor& x);
/// x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2 (exact GELU).
Tensor gelu_forward(const Tensor& x);
/// dy * (Phi(x) + x phi(x)), phi the standard normal density.
Tensor gelu_backward(const Tensor& dy, const Tensor& x);
/// log(1 + exp(x)), and x itself where x > threshold (PyTorch's rule).
Tensor softplus_forward(const Tensor& x, double threshold = 20.0);
/// dy * sigmoid(x), and dy where x > threshold.
Tensor softplus_backward(const Tensor& dy, const Tensor& x, double threshold = 20.0);
/// max(x, 0).
Tensor relu_forward(const Tensor& x);
/// dy where y > 0, else 0 (y = relu(x), so the gradient at 0 is 0 as in PyTorch).
Tensor relu_backward(const Tensor& dy, const Tensor& y);
/// |x|.
Tensor abs_forward(const Tensor& x);
/// dy * sign(x) (0 at 0).
Tensor abs_backward(const Tensor& dy, const Tensor& x);

}  // namespace seqlab::kernels
