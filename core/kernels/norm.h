// Fused normalisation kernels over the last axis (LayerNorm, Ba et al. 2016; RMSNorm, Zhang and
// Sennrich 2019) with hand-written backward, and the inverted-dropout mask. Rows are independent;
// weight/bias gradients are summed over fixed row chunks in order (deterministic).
#pragma once
#include <array>
#include <cstdint>

#include "core/random.h"
#include "core/tensor.h"

namespace seqlab::kernels {

struct NormForward {
  Tensor y;
  Tensor mean;  // (rows) float64; LayerNorm only
  Tensor rstd;  // (rows) float64: 1 / sqrt(var + eps) (LayerNorm) or 1 / sqrt(mean(x^2) + eps) (RMSNorm)
};

/// y = (x - mean) * rstd * w + b over the last axis; w, b (D) may be undefined.
NormForward layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps);
/// {dx, dw, db}: with xh = (x - mean) * rstd, g = dy * w: dx = rstd * (g - mean(g) - xh * mean(g * xh)),
/// dw = sum_rows dy * xh, db = sum_rows dy. Undefined where not asked for.
std::array<Tensor, 3> layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                                          const Tensor& rstd, bool need_dx, bool need_dw, bool need_db);

/// y = x * rstd * w over the last axis; w (D) may be undefined.
NormForward rms_norm_forward(const Tensor& x, const Tensor& w, double eps);
/// {dx, dw}: with xh = x * rstd, g = dy * w: dx = rstd * (g - xh * mean(g * xh)), dw = sum_rows dy * xh.
std::array<Tensor, 2> rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                        bool need_dx, bool need_dw);

/// Mask of `shape`: 0 with probability p, else 1 / (1 - p); drawn in order from gen (one uniform each).
Tensor dropout_mask(const Shape& shape, DType dtype, double p, Generator& gen);
/// The mask made where it is used: on Device::cuda the device mask (core/cuda/nn.h: one 64-bit seed drawn
/// from gen, then a counter-based Philox stream, so it differs from the CPU mask of the same seed), else
/// the CPU mask above.
Tensor dropout_mask(const Shape& shape, DType dtype, double p, Generator& gen, Device device);
/// x * mask elementwise (same shape); also dropout's backward (dy * mask).
Tensor apply_mask(const Tensor& x, const Tensor& mask);

}  // namespace seqlab::kernels
