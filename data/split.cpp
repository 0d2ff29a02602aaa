// Split borders: the ETT protocol of Informer / the Time-Series-Library and their ratio split
// (Dataset_Custom). Val and test start seq_len rows early; see split.h.
#include "data/split.h"

#include <cmath>

#include "core/error.h"

namespace seqlab::data {

SplitKind parse_split_kind(const std::string& name) {
  if (name == "ett_hour") return SplitKind::ett_hour;
  if (name == "ett_minute") return SplitKind::ett_minute;
  if (name == "ratio") return SplitKind::ratio;
  throw Error(str("split: unknown kind '", name, "', expected one of ett_hour, ett_minute, ratio"));
}

const char* split_kind_name(SplitKind kind) {
  switch (kind) {
    case SplitKind::ett_hour: return "ett_hour";
    case SplitKind::ett_minute: return "ett_minute";
    case SplitKind::ratio: return "ratio";
  }
  return "?";
}

void SplitOptions::validate() const {
  if (kind != SplitKind::ratio) return;
  for (auto [name, f] : {std::pair{"train", train}, std::pair{"val", val}, std::pair{"test", test}})
    SEQLAB_CHECK(f > 0 && f < 1, "split: ", name, " fraction ", f, " must lie in (0, 1)");
  SEQLAB_CHECK(std::abs(train + val + test - 1) < 1e-9, "split: fractions train ", train, " + val ", val,
               " + test ", test, " = ", train + val + test, ", expected 1");
}

namespace {
// Border b of the hourly ETT protocol (12 + 4 + 4 months of 30 days, 24 rows a day) times `scale`.
Splits ett_splits(int64_t seq_len, int64_t scale) {
  const int64_t month = 30 * 24 * scale;
  const int64_t b1 = 12 * month, b2 = 16 * month, b3 = 20 * month;
  return {{0, b1}, {b1 - seq_len, b2}, {b2 - seq_len, b3}};
}
}  // namespace

Splits ett_hour_splits(int64_t seq_len) { return ett_splits(seq_len, 1); }
Splits ett_minute_splits(int64_t seq_len) { return ett_splits(seq_len, 4); }

Splits ratio_splits(int64_t rows, int64_t seq_len, double train, double test) {
  // int() in Python truncates toward zero; the fractions are positive, so a cast does the same.
  const auto n_train = static_cast<int64_t>(static_cast<double>(rows) * train);
  const auto n_test = static_cast<int64_t>(static_cast<double>(rows) * test);
  const int64_t n_val = rows - n_train - n_test;
  return {{0, n_train}, {n_train - seq_len, n_train + n_val}, {rows - n_test - seq_len, rows}};
}

void validate_splits(const Splits& s, int64_t rows, int64_t seq_len, int64_t pred_len) {
  SEQLAB_CHECK(seq_len >= 1 && pred_len >= 1, "split: seq_len (", seq_len, ") and pred_len (", pred_len,
               ") must be at least 1");
  const int64_t need = seq_len + pred_len;
  for (auto [name, r] : {std::pair{"train", s.train}, std::pair{"val", s.val}, std::pair{"test", s.test}}) {
    SEQLAB_CHECK(r.begin >= 0 && r.end <= rows && r.begin <= r.end, "split: ", name, " rows [", r.begin, ", ", r.end,
                 ") do not fit in the series' ", rows, " rows (seq_len ", seq_len, ")");
    SEQLAB_CHECK(r.size() >= need, "split: seq_len ", seq_len, " + pred_len ", pred_len, " = ", need,
                 " rows do not fit in the ", name, " split of ", r.size(), " rows (train ", s.train.size(), ", val ",
                 s.val.size(), ", test ", s.test.size(), ")");
  }
}

Splits make_splits(const SplitOptions& opt, int64_t rows, int64_t seq_len, int64_t pred_len) {
  opt.validate();
  Splits s;
  switch (opt.kind) {
    case SplitKind::ett_hour: s = ett_hour_splits(seq_len); break;
    case SplitKind::ett_minute: s = ett_minute_splits(seq_len); break;
    case SplitKind::ratio: s = ratio_splits(rows, seq_len, opt.train, opt.test); break;
  }
  if (opt.kind != SplitKind::ratio)
    SEQLAB_CHECK(rows >= s.test.end, "split ", split_kind_name(opt.kind), ": needs at least ", s.test.end,
                 " rows, the series has ", rows);
  validate_splits(s, rows, seq_len, pred_len);
  return s;
}

}  // namespace seqlab::data
