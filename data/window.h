// Forecasting windows with stride 1 (Informer / Time-Series-Library protocol): window i of a split
// starting at row r0 has input rows [r0 + i, r0 + i + seq_len) and target rows
// [r0 + i + seq_len, r0 + i + seq_len + pred_len); a split of R rows has R - seq_len - pred_len + 1.
// Features: M all columns -> all columns, S target -> target, MS all columns -> target.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"
#include "data/split.h"

namespace seqlab::data {

enum class Features { M, S, MS };

/// "M", "S" or "MS" -> Features; throws seqlab::Error listing the choices otherwise.
Features parse_features(const std::string& name);
/// The inverse of parse_features.
const char* features_name(Features f);

/// Which columns feed the model (input) and which it predicts (output).
struct ColumnSelection {
  std::vector<int64_t> input;   // C_in column indices
  std::vector<int64_t> output;  // C_out column indices
};

/// M: all -> all; S: target -> target; MS: all -> target. An unknown target is an error listing
/// the columns (only S and MS use the target).
ColumnSelection select_columns(const std::vector<std::string>& columns, Features f, const std::string& target);

class ForecastDataset : public Dataset {
 public:
  /// Windows over rows `rows` of `values` (R, C) (already scaled; float32 or float64, copied to
  /// float32). Throws seqlab::Error when the range holds fewer than seq_len + pred_len rows.
  ForecastDataset(const Tensor& values, Range rows, int64_t seq_len, int64_t pred_len,
                  const ColumnSelection& cols, std::string name = "dataset");

  /// Number of windows: rows - seq_len - pred_len + 1.
  int64_t size() const override { return size_; }
  /// (seq_len, C_in).
  Shape x_shape() const override { return {seq_len_, c_in_}; }
  /// (pred_len, C_out).
  Shape y_shape() const override { return {pred_len_, c_out_}; }
  /// Fills x_out (B, seq_len, C_in) and y_out (B, pred_len, C_out), float32, with windows
  /// indices[0..B); an index outside [0, size()) is an error.
  void gather(std::span<const int64_t> indices, Tensor& x_out, Tensor& y_out) const override;

  int64_t seq_len() const { return seq_len_; }
  int64_t pred_len() const { return pred_len_; }
  int64_t input_channels() const { return c_in_; }
  int64_t output_channels() const { return c_out_; }
  /// The row range of the series these windows cover.
  Range rows() const { return rows_; }
  const std::string& name() const { return name_; }

 private:
  Tensor in_, out_;  // (rows, C_in), (rows, C_out) float32: the split's rows, the selected columns
  Range rows_;
  int64_t seq_len_, pred_len_, c_in_, c_out_, size_;
  std::string name_;
};

}  // namespace seqlab::data
