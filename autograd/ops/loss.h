// Losses, each reduced to a scalar mean.
#pragma once
#include "core/tensor.h"

namespace seqlab {

/// mean((pred - target)^2).
Tensor mse_loss(const Tensor& pred, const Tensor& target);
/// mean(|pred - target|) (MAE).
Tensor l1_loss(const Tensor& pred, const Tensor& target);
/// mean(huber_delta(pred - target)): quadratic below delta, linear above (PyTorch's HuberLoss).
Tensor huber_loss(const Tensor& pred, const Tensor& target, double delta = 1.0);
/// Mean negative log-likelihood of int32 `targets` (N) under logits (N, V), skipping positions
/// equal to ignore_index; targets out of [0, V) are an error.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int ignore_index = -100);

}  // namespace seqlab
