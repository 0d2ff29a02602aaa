// CUDA twins of core/kernels/unary.h (same names, shapes, checks and maths); the CPU functions call
// these when their inputs live on the device. Outputs are device tensors.
#pragma once
#include "core/tensor.h"

namespace seqlab::cuda {

Tensor exp_forward(const Tensor& x);
Tensor exp_backward(const Tensor& dy, const Tensor& y);
Tensor log_forward(const Tensor& x);
Tensor log_backward(const Tensor& dy, const Tensor& x);
Tensor sqrt_forward(const Tensor& x);
Tensor sqrt_backward(const Tensor& dy, const Tensor& y);
Tensor tanh_forward(const Tensor& x);
Tensor tanh_backward(const Tensor& dy, const Tensor& y);
Tensor sigmoid_forward(const Tensor& x);
Tensor sigmoid_backward(const Tensor& dy, const Tensor& y);
Tensor silu_forward(const Tensor& x);
Tensor silu_backward(const Tensor& dy, const Tensor& x);
Tensor gelu_forward(const Tensor& x);
Tensor gelu_backward(const Tensor& dy, const Tensor& x);
Tensor softplus_forward(const Tensor& x, double threshold = 20.0);
Tensor softplus_backward(const Tensor& dy, const Tensor& x, double threshold = 20.0);
Tensor relu_forward(const Tensor& x);
Tensor relu_backward(const Tensor& dy, const Tensor& y);
Tensor abs_forward(const Tensor& x);
Tensor abs_backward(const Tensor& dy, const Tensor& x);

}  // namespace seqlab::cuda
