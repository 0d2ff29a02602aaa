// Fused normalisation and dropout ops used by the layers, each with a hand-written backward.
#pragma once
#include "core/random.h"
#include "core/tensor.h"

namespace seqlab {

/// LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b; w, b (D) may be undefined.
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps = 1e-5);
/// RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w.
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps = 1e-5);
/// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
/// Identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen = default_generator());

}  // namespace seqlab
