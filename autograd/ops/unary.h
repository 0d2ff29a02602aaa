// Unary maths with their derivatives. GELU is the exact erf form (PyTorch's default).
#pragma once
#include "core/tensor.h"

namespace seqlab {

Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
/// x * sigmoid(x).
Tensor silu(const Tensor& x);
/// x * Phi(x), Phi the standard normal CDF.
Tensor gelu(const Tensor& x);
/// log(1 + exp(x)), linear above `threshold` as in PyTorch.
Tensor softplus(const Tensor& x, double threshold = 20.0);
Tensor relu(const Tensor& x);

}  // namespace seqlab
