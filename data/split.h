// Train/validation/test row ranges of a series for forecasting. The ETT borders follow the
// Informer / Time-Series-Library protocol (shared/data/ett/README.md): train [0, 8640),
// val [8640 - L, 11520), test [11520 - L, 14400) for hourly data, four times that for 15-minute
// data; ratio splits follow the Time-Series-Library's Dataset_Custom. L = seq_len: the val and
// test ranges start L rows early so their first window's input is history, not target.
#pragma once
#include <cstdint>
#include <string>

namespace seqlab::data {

/// Half-open row range [begin, end).
struct Range {
  int64_t begin = 0, end = 0;
  /// end - begin.
  int64_t size() const { return end - begin; }
};

struct Splits {
  Range train, val, test;
};

enum class SplitKind { ett_hour, ett_minute, ratio };

/// "ett_hour", "ett_minute" or "ratio" -> SplitKind; throws listing the choices otherwise.
SplitKind parse_split_kind(const std::string& name);
/// The inverse of parse_split_kind.
const char* split_kind_name(SplitKind kind);

struct SplitOptions {
  SplitKind kind = SplitKind::ett_hour;
  double train = 0.7, val = 0.1, test = 0.2;  // ratio splits only; must sum to 1
  /// Throws seqlab::Error when a fraction is outside (0, 1) or they do not sum to 1.
  void validate() const;
};

/// ETTh borders: train [0, 8640), val [8640 - seq_len, 11520), test [11520 - seq_len, 14400).
Splits ett_hour_splits(int64_t seq_len);
/// ETTm borders: the hourly ones times 4 (train [0, 34560), ...), val/test starting seq_len early.
Splits ett_minute_splits(int64_t seq_len);
/// Dataset_Custom: n_train = int(rows * train), n_test = int(rows * test), n_val = rest;
/// train [0, n_train), val [n_train - seq_len, n_train + n_val), test [rows - n_test - seq_len, rows).
Splits ratio_splits(int64_t rows, int64_t seq_len, double train = 0.7, double test = 0.2);

/// The splits for `opt`, checked against the series: every range inside [0, rows) and each one
/// holding at least seq_len + pred_len rows (one window); the error names seq_len, pred_len, the
/// split and its size.
Splits make_splits(const SplitOptions& opt, int64_t rows, int64_t seq_len, int64_t pred_len);

/// The checks of make_splits on given splits; throws seqlab::Error on the first failure.
void validate_splits(const Splits& s, int64_t rows, int64_t seq_len, int64_t pred_len);

}  // namespace seqlab::data
