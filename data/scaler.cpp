// StandardScaler (sklearn semantics): mean and population std per column over the training rows,
// a zero std replaced by 1. Sums run in float64 in row order, so the fit is deterministic.
#include "data/scaler.h"

#include <cmath>

#include "core/error.h"

namespace seqlab::data {

void StandardScaler::fit(const Tensor& values, Range rows) {
  SEQLAB_CHECK(values.defined() && values.dim() == 2, "StandardScaler.fit: expected values (rows, C)");
  SEQLAB_CHECK(rows.begin >= 0 && rows.end <= values.size(0) && rows.size() >= 1, "StandardScaler.fit: rows [",
               rows.begin, ", ", rows.end, ") outside the ", values.size(0), " rows of the series");
  Tensor v = values.to(DType::f64);
  const int64_t C = v.size(1), n = rows.size();
  const double* p = v.data<double>();
  std::vector<double> mean(static_cast<size_t>(C), 0.0), var(static_cast<size_t>(C), 0.0);
  for (int64_t r = rows.begin; r < rows.end; ++r)
    for (int64_t c = 0; c < C; ++c) mean[static_cast<size_t>(c)] += p[r * C + c];
  for (auto& m : mean) m /= static_cast<double>(n);
  // Two-pass variance: the mean first, then squared deviations (as numpy's var).
  for (int64_t r = rows.begin; r < rows.end; ++r)
    for (int64_t c = 0; c < C; ++c) {
      double d = p[r * C + c] - mean[static_cast<size_t>(c)];
      var[static_cast<size_t>(c)] += d * d;
    }
  std::vector<double> scale(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    double sd = std::sqrt(var[static_cast<size_t>(c)] / static_cast<double>(n));
    scale[static_cast<size_t>(c)] = sd == 0 ? 1.0 : sd;
  }
  mean_ = Tensor::from_vector(mean, {C}, DType::f64);
  scale_ = Tensor::from_vector(scale, {C}, DType::f64);
}

namespace {
template <typename T>
void affine_last_axis(T* x, int64_t n, const std::vector<int64_t>& cols, const double* mean, const double* scale,
                      bool inverse) {
  const auto k = static_cast<int64_t>(cols.size());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = cols[static_cast<size_t>(i % k)];
    const double v = static_cast<double>(x[i]);
    x[i] = static_cast<T>(inverse ? v * scale[c] + mean[c] : (v - mean[c]) / scale[c]);
  }
}

Tensor apply(const Tensor& x, const std::vector<int64_t>& cols, const Tensor& mean, const Tensor& scale,
             bool inverse, const char* op) {
  SEQLAB_CHECK(mean.defined(), "StandardScaler.", op, ": not fitted");
  SEQLAB_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == static_cast<int64_t>(cols.size()), "StandardScaler.",
               op, ": expected a last axis of ", cols.size(), ", got shape ", to_string(x.shape()));
  for (int64_t c : cols)
    SEQLAB_CHECK(c >= 0 && c < mean.size(0), "StandardScaler.", op, ": column ", c, " outside the ", mean.size(0),
                 " fitted columns");
  Tensor y = x.clone();
  dispatch_float(y.dtype(), op, [&]<typename T>() {
    affine_last_axis(y.data<T>(), y.numel(), cols, mean.data<double>(), scale.data<double>(), inverse);
  });
  return y;
}

std::vector<int64_t> all_columns(int64_t C) {
  std::vector<int64_t> cols(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) cols[static_cast<size_t>(c)] = c;
  return cols;
}
}  // namespace

Tensor StandardScaler::transform(const Tensor& x) const {
  return apply(x, all_columns(num_columns()), mean_, scale_, false, "transform");
}

Tensor StandardScaler::inverse_transform(const Tensor& x) const {
  return apply(x, all_columns(num_columns()), mean_, scale_, true, "inverse_transform");
}

Tensor StandardScaler::inverse_transform(const Tensor& x, const std::vector<int64_t>& columns) const {
  return apply(x, columns, mean_, scale_, true, "inverse_transform");
}

std::map<std::string, Tensor> StandardScaler::state() const {
  SEQLAB_CHECK(fitted(), "StandardScaler.state: not fitted");
  return {{"mean", mean_.clone()}, {"std", scale_.clone()}};
}

void StandardScaler::load_state(const std::map<std::string, Tensor>& state) {
  for (const char* key : {"mean", "std"})
    SEQLAB_CHECK(state.count(key), "StandardScaler.load_state: missing key '", key, "'");
  const Tensor& m = state.at("mean");
  const Tensor& s = state.at("std");
  SEQLAB_CHECK(m.dim() == 1 && s.shape() == m.shape(), "StandardScaler.load_state: 'mean' ", to_string(m.shape()),
               " and 'std' ", to_string(s.shape()), " must be the same 1-D shape (C)");
  SEQLAB_CHECK(state.size() == 2, "StandardScaler.load_state: expected exactly the keys 'mean' and 'std'");
  for (double v : s.to_vector())
    SEQLAB_CHECK(v > 0 && std::isfinite(v), "StandardScaler.load_state: 'std' holds ", v, ", expected > 0");
  mean_ = m.to(DType::f64);
  scale_ = s.to(DType::f64);
}

}  // namespace seqlab::data
