// Norms, dropout, losses and the embedding lookup on the device (core/kernels/norm.h, core/kernels/loss.h,
// autograd/ops/embedding.cpp): the same shapes, dtypes, checks and maths as the CPU kernels. Every
// reduction runs in a fixed order (warp butterflies, fixed row chunks added in order, no atomics), so a
// device result is bit-identical from run to run. Plain C++: no CUDA header.
#pragma once
#include <array>
#include <cstdint>

#include "core/kernels/loss.h"
#include "core/kernels/norm.h"
#include "core/random.h"
#include "core/tensor.h"

namespace seqlab::cuda {

/// LayerNorm over the last axis (one warp per row; mean / rstd in float64).
kernels::NormForward layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps);
/// {dx, dw, db}; dw / db: per-chunk partials in double (core/kernels/norm.cpp's row chunks), chunks in order.
std::array<Tensor, 3> layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                                          const Tensor& rstd, bool need_dx, bool need_dw, bool need_db);
kernels::NormForward rms_norm_forward(const Tensor& x, const Tensor& w, double eps);
std::array<Tensor, 2> rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                        bool need_dx, bool need_dw);

/// Mask of `shape` on the device: 0 with probability p, else 1 / (1 - p). One 64-bit seed is drawn from
/// gen per call; element i keeps when philox_uniform(seed, i) >= p (Philox4x32-10, counter = i).
Tensor dropout_mask(const Shape& shape, DType dtype, double p, Generator& gen);
/// x * mask elementwise.
Tensor apply_mask(const Tensor& x, const Tensor& mask);
/// Philox4x32-10 (Salmon et al. 2011) of a 128-bit counter under a 64-bit key: the host twin of the
/// device function, for tests (known-answer vectors).
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);
/// The uniform in [0, 1) (53 bits of the first two words) that dropout_mask draws for element `index`.
double philox_uniform(uint64_t seed, uint64_t index);

Tensor point_loss_forward(kernels::PointLoss kind, const Tensor& pred, const Tensor& target, double delta,
                          const char* op);
std::array<Tensor, 2> point_loss_backward(kernels::PointLoss kind, const Tensor& dy, const Tensor& pred,
                                          const Tensor& target, double delta, bool need_pred, bool need_target);
/// The targets are checked on the device; the count of non-ignored rows (and any bad target) is copied
/// back to the host (one wait on the stream), as the result needs it there.
kernels::CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets, int ignore_index);
Tensor cross_entropy_backward(const Tensor& dy, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t count, int ignore_index);

/// weight (V, D), ids int32 of any shape S -> (S..., D); an id outside [0, V) is an error naming it and
/// its position (checked on the device, one int copied back).
Tensor embedding_forward(const Tensor& weight, const Tensor& ids);
/// dweight (V, D) of dtype dy: row v = sum over positions i with ids[i] == v of dy[i, :], in position
/// order (one block per vocabulary row compacts the matching positions in order; no atomics).
Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t V, int64_t D);

}  // namespace seqlab::cuda
