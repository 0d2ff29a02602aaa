// Stride-1 forecasting windows. The split's rows of the selected columns are kept as two float32
// tables, so a window is seq_len (or pred_len) contiguous rows and gather() is one memcpy each.
#include "data/window.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/parallel.h"

namespace seqlab::data {

Features parse_features(const std::string& name) {
  if (name == "M") return Features::M;
  if (name == "S") return Features::S;
  if (name == "MS") return Features::MS;
  throw Error(str("features: unknown value '", name, "', expected one of M, S, MS"));
}

const char* features_name(Features f) {
  switch (f) {
    case Features::M: return "M";
    case Features::S: return "S";
    case Features::MS: return "MS";
  }
  return "?";
}

ColumnSelection select_columns(const std::vector<std::string>& columns, Features f, const std::string& target) {
  SEQLAB_CHECK(!columns.empty(), "features: the series has no columns");
  std::vector<int64_t> all(columns.size());
  for (size_t c = 0; c < columns.size(); ++c) all[c] = static_cast<int64_t>(c);
  if (f == Features::M) return {all, all};
  auto it = std::find(columns.begin(), columns.end(), target);
  if (it == columns.end()) {
    std::string list;
    for (const auto& c : columns) list += (list.empty() ? "" : ", ") + c;
    throw Error(str("features ", features_name(f), ": target column '", target, "' not found (columns: ", list, ")"));
  }
  std::vector<int64_t> t{it - columns.begin()};
  return f == Features::S ? ColumnSelection{t, t} : ColumnSelection{all, t};
}

namespace {
// Rows [r.begin, r.end) of the columns `cols` of v (R, C), as a (rows, k) float32 table.
Tensor take(const Tensor& v, Range r, const std::vector<int64_t>& cols) {
  Tensor src = v.to(DType::f64);
  const int64_t C = src.size(1), k = static_cast<int64_t>(cols.size());
  Tensor out = Tensor::empty({r.size(), k}, DType::f32);
  const double* s = src.data<double>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < r.size(); ++i)
    for (int64_t j = 0; j < k; ++j) o[i * k + j] = static_cast<float>(s[(r.begin + i) * C + cols[static_cast<size_t>(j)]]);
  return out;
}
}  // namespace

ForecastDataset::ForecastDataset(const Tensor& values, Range rows, int64_t seq_len, int64_t pred_len,
                                 const ColumnSelection& cols, std::string name)
    : rows_(rows),
      seq_len_(seq_len),
      pred_len_(pred_len),
      c_in_(static_cast<int64_t>(cols.input.size())),
      c_out_(static_cast<int64_t>(cols.output.size())),
      size_(rows.size() - seq_len - pred_len + 1),
      name_(std::move(name)) {
  SEQLAB_CHECK(values.defined() && values.dim() == 2, name_, ": expected values (rows, C)");
  SEQLAB_CHECK(seq_len >= 1 && pred_len >= 1, name_, ": seq_len (", seq_len, ") and pred_len (", pred_len,
               ") must be at least 1");
  SEQLAB_CHECK(rows.begin >= 0 && rows.end <= values.size(0), name_, ": rows [", rows.begin, ", ", rows.end,
               ") outside the series' ", values.size(0), " rows");
  SEQLAB_CHECK(size_ >= 1, name_, ": seq_len ", seq_len, " + pred_len ", pred_len, " = ", seq_len + pred_len,
               " rows do not fit in its ", rows.size(), " rows");
  SEQLAB_CHECK(c_in_ >= 1 && c_out_ >= 1, name_, ": no input or output columns selected");
  for (auto c : cols.input) SEQLAB_CHECK(c >= 0 && c < values.size(1), name_, ": input column ", c, " out of range");
  for (auto c : cols.output) SEQLAB_CHECK(c >= 0 && c < values.size(1), name_, ": output column ", c, " out of range");
  in_ = take(values, rows, cols.input);
  out_ = take(values, rows, cols.output);
}

void ForecastDataset::gather(std::span<const int64_t> indices, Tensor& x_out, Tensor& y_out) const {
  const auto B = static_cast<int64_t>(indices.size());
  const Shape xs{B, seq_len_, c_in_}, ys{B, pred_len_, c_out_};
  SEQLAB_CHECK(x_out.defined() && x_out.shape() == xs && x_out.dtype() == DType::f32, name_,
               ".gather: x_out must be float32 ", to_string(xs));
  SEQLAB_CHECK(y_out.defined() && y_out.shape() == ys && y_out.dtype() == DType::f32, name_,
               ".gather: y_out must be float32 ", to_string(ys));
  for (int64_t i : indices)
    SEQLAB_CHECK(i >= 0 && i < size_, name_, ".gather: window ", i, " outside [0, ", size_, ")");
  const float* in = in_.data<float>();
  const float* out = out_.data<float>();
  float* x = x_out.data<float>();
  float* y = y_out.data<float>();
  const int64_t x_n = seq_len_ * c_in_, y_n = pred_len_ * c_out_;
  parallel_for(0, B, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t s = indices[static_cast<size_t>(b)];
      std::memcpy(x + b * x_n, in + s * c_in_, static_cast<size_t>(x_n) * sizeof(float));
      std::memcpy(y + b * y_n, out + (s + seq_len_) * c_out_, static_cast<size_t>(y_n) * sizeof(float));
    }
  });
}

}  // namespace seqlab::data
