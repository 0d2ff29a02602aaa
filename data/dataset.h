// Batch and Dataset: what the Loader iterates over. A Dataset is a finite indexable set of
// (x, y) examples that fills a whole batch in one gather() call (no per-example tensors).
#pragma once
#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace seqlab::data {

struct Batch {
  Tensor x;          // (B, ...) model input: float32 windows, or int32 tokens
  Tensor y;          // (B, ...) target: float32 windows, or int32 tokens with -100 = ignore
  int64_t size = 0;  // B, the number of examples (the last batch of an epoch may be short)
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  /// Number of examples.
  virtual int64_t size() const = 0;
  /// Shape of one example's input, without the batch axis (e.g. (seq_len, C_in)).
  virtual Shape x_shape() const = 0;
  /// Shape of one example's target, without the batch axis (e.g. (pred_len, C_out)).
  virtual Shape y_shape() const = 0;
  /// dtype of x and y.
  virtual DType dtype() const { return DType::f32; }
  /// Writes examples indices[0..B) into x_out (B, x_shape...) and y_out (B, y_shape...), which the
  /// caller allocated with dtype(); thread-safe (const, no shared scratch).
  virtual void gather(std::span<const int64_t> indices, Tensor& x_out, Tensor& y_out) const = 0;
  /// Allocates a batch and gathers `indices` into it.
  Batch get(std::span<const int64_t> indices) const;
};

}  // namespace seqlab::data
