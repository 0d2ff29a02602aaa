// The argument checks of the loss kernels (core/kernels/loss.h), defined once in loss.cpp and called by
// the CPU loops and their CUDA twins (core/cuda/nn.cu) alike, so both raise the same errors.
#pragma once

#include "core/kernels/loss.h"
#include "core/tensor.h"

namespace seqlab::kernels {

/// point_loss_forward's checks: pred and target of one shape and dtype, delta > 0 for Huber; op names the loss.
void check_point_loss(PointLoss kind, const Tensor& pred, const Tensor& target, double delta, const char* op);
/// cross_entropy_forward's checks of the shapes: logits (N, V) and int32 targets (N). Each target's range
/// is checked where the targets are read.
void check_cross_entropy(const Tensor& logits, const Tensor& targets);

}  // namespace seqlab::kernels
