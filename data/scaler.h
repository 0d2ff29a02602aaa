// StandardScaler: per-column z = (x - mean) / std, fitted on the training rows only (so nothing
// about validation or test leaks into the inputs). std is the population std, as sklearn's
// StandardScaler, and a zero std is replaced by 1 (a constant column maps to 0).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/split.h"

namespace seqlab::data {

class StandardScaler {
 public:
  /// Fits mean and std per column on rows [rows.begin, rows.end) of `values` (R, C), float32/64.
  void fit(const Tensor& values, Range rows);
  /// Fits on every row of `values`.
  void fit(const Tensor& values) { fit(values, Range{0, values.size(0)}); }
  /// True after fit() or load_state().
  bool fitted() const { return mean_.defined(); }
  /// Number of columns C it was fitted on.
  int64_t num_columns() const { return mean_.defined() ? mean_.size(0) : 0; }

  /// (x - mean) / std over the last axis of x (..., C); returns a new tensor of x's dtype.
  Tensor transform(const Tensor& x) const;
  /// x * std + mean over the last axis of x (..., C); returns a new tensor of x's dtype.
  Tensor inverse_transform(const Tensor& x) const;
  /// inverse_transform for x (..., k) holding only `columns` (k indices into the fitted columns),
  /// e.g. the target column of an S/MS forecast.
  Tensor inverse_transform(const Tensor& x, const std::vector<int64_t>& columns) const;

  /// Per-column mean, (C) float64.
  const Tensor& mean() const { return mean_; }
  /// Per-column std (zeros replaced by 1), (C) float64.
  const Tensor& scale() const { return scale_; }

  /// {"mean": (C), "std": (C)} float64 copies, for checkpoints.
  std::map<std::string, Tensor> state() const;
  /// Restores state(); throws seqlab::Error naming a missing key or a shape mismatch.
  void load_state(const std::map<std::string, Tensor>& state);

 private:
  Tensor mean_, scale_;  // (C) float64
};

}  // namespace seqlab::data
