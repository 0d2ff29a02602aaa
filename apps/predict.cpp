// `seqlab predict`: see apps/predict.h. Everything is read and checked before anything is written.
#include "apps/predict.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <set>

#include "apps/checkpoint.h"
#include "apps/report.h"  // shown_path
#include "apps/run.h"
#include "apps/svg.h"
#include "apps/trainer.h"
#include "autograd/node.h"
#include "core/error.h"
#include "data/window.h"

namespace seqlab::app {
namespace fs = std::filesystem;

bool parse_timestamp(const std::string& text, int64_t& seconds) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, n = 0;
  char a = 0, b = 0, sep = 0;
  const char* t = text.c_str();
  if (std::sscanf(t, "%4d%c%2d%c%2d%n", &y, &a, &mo, &b, &d, &n) != 5 || a != b || (a != '-' && a != '/')) return false;
  const std::string rest = text.substr(static_cast<size_t>(n));
  if (!rest.empty()) {
    int m = 0;
    const int got = std::sscanf(rest.c_str(), "%c%2d:%2d%n:%2d%n", &sep, &h, &mi, &m, &s, &m);
    if ((sep != ' ' && sep != 'T') || got < 3 || static_cast<size_t>(m) != rest.size()) return false;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return false;
  std::tm tm{};
  tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = h, tm.tm_min = mi, tm.tm_sec = s;
  seconds = static_cast<int64_t>(timegm(&tm));
  return true;
}

std::string format_timestamp(int64_t seconds, const std::string& like) {
  const std::time_t tt = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  const char dsep = like.size() > 4 ? like[4] : '-';
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d%c%02d%c%02d", tm.tm_year + 1900, dsep, tm.tm_mon + 1, dsep, tm.tm_mday);
  std::string out = buf;
  if (like.size() > 10) {  // a time part: its separator, and seconds when `like` has them
    std::snprintf(buf, sizeof buf, "%c%02d:%02d", like[10], tm.tm_hour, tm.tm_min);
    out += buf;
    if (like.size() > 16) {
      std::snprintf(buf, sizeof buf, ":%02d", tm.tm_sec);
      out += buf;
    }
  }
  return out;
}

namespace {

std::string frequency_name(int64_t step) {
  switch (step) {
    case 60: return "minutely";
    case 900: return "15-minute";
    case 1800: return "30-minute";
    case 3600: return "hourly";
    case 86400: return "daily";
    case 604800: return "weekly";
    default: return str("every ", step, " s");
  }
}

// The series to forecast from: opt.data, or the run's own; its columns put in the training order.
data::Series input_series(const LoadedRun& r, const PredictOptions& opt) {
  data::Series s = opt.data.empty() ? read_task_series(r.config.data) : data::read_series(opt.data, r.config.data.dataset);
  const std::string file = opt.data.empty() ? s.source : opt.data;
  std::vector<std::string> missing, extra;
  for (const auto& c : r.columns)
    if (std::find(s.columns.begin(), s.columns.end(), c) == s.columns.end()) missing.push_back(c);
  for (const auto& c : s.columns)
    if (std::find(r.columns.begin(), r.columns.end(), c) == r.columns.end()) extra.push_back(c);
  auto list = [](const std::vector<std::string>& v) {
    std::string t;
    for (const auto& x : v) t.append(t.empty() ? "'" : ", '").append(x).append("'");
    return t;
  };
  SEQLAB_CHECK(missing.empty(), file, ": no column ", list(missing), " (expected the training data's columns: ",
               list(r.columns), ")");
  SEQLAB_CHECK(extra.empty(), file, ": column ", list(extra), " was not in the training data (expected exactly: ",
               list(r.columns), ")");
  if (s.columns != r.columns) {  // the same columns in another order: reorder to the training order
    const int64_t R = s.rows(), C = s.num_columns();
    std::vector<double> v = s.values.to_vector(), w(v.size());
    for (int64_t j = 0; j < C; ++j) {
      const int64_t from = s.column_index(r.columns[static_cast<size_t>(j)]);
      for (int64_t i = 0; i < R; ++i) w[static_cast<size_t>(i * C + j)] = v[static_cast<size_t>(i * C + from)];
    }
    s.values = Tensor::from_vector(w, {R, C}, DType::f64);
    s.columns = r.columns;
  }
  const int64_t L = r.config.data.seq_len;
  SEQLAB_CHECK(s.rows() >= L, file, ": ", s.rows(), " rows, expected at least seq_len = ", L,
               " (the model's input window)");
  return s;
}

// The dates after the last row, at the step of the window's timestamps (which must be regular).
void future_dates(const data::Series& s, const std::string& file, int64_t L, int64_t P, Forecast& f) {
  if (s.dates.empty()) return;
  const int64_t R = s.rows();
  std::vector<int64_t> t(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i) {
    const int64_t row = R - L + i;
    const std::string& d = s.dates[static_cast<size_t>(row)];
    SEQLAB_CHECK(parse_timestamp(d, t[static_cast<size_t>(i)]), file, ": row ", row + 1, ": date '", d,
                 "' is not a timestamp (expected YYYY-MM-DD[ HH:MM[:SS]])");
  }
  SEQLAB_CHECK(L >= 2, file, ": one input row: no step between timestamps to continue");
  const int64_t step = t[static_cast<size_t>(L - 1)] - t[static_cast<size_t>(L - 2)];
  for (int64_t i = 1; i < L; ++i) {
    const int64_t gap = t[static_cast<size_t>(i)] - t[static_cast<size_t>(i - 1)];
    const int64_t row = R - L + i;
    SEQLAB_CHECK(gap == step && step > 0, file, ": irregular timestamps: row ", row + 1, " ('",
                 s.dates[static_cast<size_t>(row)], "') comes ", gap, " s after row ", row, " ('",
                 s.dates[static_cast<size_t>(row - 1)], "'), expected ", step, " s (", frequency_name(step > 0 ? step : 1),
                 ", the step of the last rows)");
  }
  const std::string& last = s.dates.back();
  for (int64_t k = 1; k <= P; ++k) f.dates.push_back(format_timestamp(t.back() + k * step, last));
  f.frequency = frequency_name(step);
  f.last_date = last;
}

// The history (last L values) and the forecast of one column, as an SVG.
std::string forecast_plot(const Forecast& f, const data::Series& s, const std::string& run_dir, size_t k,
                          const std::string& column, int64_t L) {
  svg::LineChart c;
  c.title = str("Forecast of ", column, ": ", f.rows.size(), " steps after the last row");
  c.subtitle = str("run ", shown_path(run_dir), f.last_date.empty() ? "" : "; last input " + f.last_date,
                   f.frequency.empty() ? "" : " (" + f.frequency + ")");
  c.x.label = "step (0 = the last input row)";
  c.y.label = column + " (the data's units)";
  const int64_t R = s.rows(), C = s.num_columns(), j = s.column_index(column);
  const std::vector<double> v = s.values.to_vector();
  svg::Series h;
  h.label = "history", h.color = "#000000", h.width = 1.3;
  for (int64_t i = 0; i < L; ++i)
    h.x.push_back(static_cast<double>(i - L + 1)), h.y.push_back(v[static_cast<size_t>((R - L + i) * C + j)]);
  svg::Series p;
  p.label = "forecast", p.color = svg::palette(0), p.width = 2.2;
  p.x.push_back(0), p.y.push_back(h.y.back());
  for (size_t t = 0; t < f.rows.size(); ++t) p.x.push_back(static_cast<double>(t + 1)), p.y.push_back(f.rows[t][k]);
  c.series = {h, p};
  c.vlines.push_back({.x = 0});
  if (!f.dates.empty()) c.notes.push_back(str("forecast from ", f.dates.front(), " to ", f.dates.back()));
  return svg::render(c);
}

}  // namespace

std::string forecast_csv(const Forecast& f) {
  std::string out = f.dates.empty() ? "step" : "date";
  for (const auto& c : f.columns) out.append(",").append(c);
  out += "\n";
  for (size_t t = 0; t < f.rows.size(); ++t) {
    out += f.dates.empty() ? std::to_string(t + 1) : f.dates[t];
    for (double x : f.rows[t]) out.append(",").append(fmt("%.9g", x));
    out += "\n";
  }
  return out;
}

Forecast run_predict(const std::string& run_dir, const PredictOptions& opt) {
  LoadedRun r = load_run_model(run_dir, opt.checkpoint);
  SEQLAB_CHECK(!r.token, run_dir, ": a ", r.config.data.task, " run (a token task): predict forecasts a time series; "
               "use seqlab eval for token tasks");
  const int64_t L = r.config.data.seq_len, P = r.config.data.pred_len;
  const data::Series s = input_series(r, opt);
  const std::string file = opt.data.empty() ? s.source : opt.data;
  const data::ColumnSelection& cols = r.fc.columns;
  Forecast f;
  for (int64_t j : cols.output) f.columns.push_back(r.columns.at(static_cast<size_t>(j)));
  future_dates(s, file, L, P, f);

  // The window: the last L rows, scaled as in training, the input columns.
  const int64_t R = s.rows(), C = s.num_columns(), c_in = static_cast<int64_t>(cols.input.size());
  const std::vector<double> all = s.values.to_vector();
  std::vector<double> window(all.end() - L * C, all.end());
  Tensor w = Tensor::from_vector(window, {L, C}, DType::f64);
  if (r.fc.scaler.fitted()) w = r.fc.scaler.transform(w);
  const std::vector<double> ws = w.to_vector();
  std::vector<double> x(static_cast<size_t>(L * c_in));
  for (int64_t i = 0; i < L; ++i)
    for (int64_t k = 0; k < c_in; ++k)
      x[static_cast<size_t>(i * c_in + k)] = ws[static_cast<size_t>(i * C + cols.input[static_cast<size_t>(k)])];
  Tensor pred;
  {
    NoGradGuard ng;
    pred = r.model->forward(Tensor::from_vector(x, {1, L, c_in}));
  }
  const int64_t c_out = static_cast<int64_t>(cols.output.size());
  SEQLAB_CHECK(pred.numel() == P * c_out, run_dir, ": the model predicts ", to_string(pred.shape()), ", expected (1, ", P,
               ", ", c_out, ")");
  Tensor y = pred.to(DType::f64);
  if (r.fc.scaler.fitted()) y = r.fc.scaler.inverse_transform(y, cols.output);
  const std::vector<double> yv = y.to_vector();
  for (int64_t t = 0; t < P; ++t)
    f.rows.emplace_back(yv.begin() + t * c_out, yv.begin() + (t + 1) * c_out);

  // Every file is made before the first is written.
  const std::string csv = forecast_csv(f);
  std::string plot;
  if (!opt.plot.empty()) {
    const auto it = std::find(f.columns.begin(), f.columns.end(), r.config.data.target);
    const size_t k = it == f.columns.end() ? f.columns.size() - 1 : static_cast<size_t>(it - f.columns.begin());
    plot = forecast_plot(f, s, run_dir, k, f.columns[k], L);
  }
  const fs::path out = opt.out.empty() ? fs::path(run_dir) / "forecast.csv" : fs::path(opt.out);
  write_text_atomic(out, csv);
  if (!opt.plot.empty()) write_text_atomic(opt.plot, plot);
  spdlog::info("predict: {} steps after {} ({}) from {} ({} checkpoint, step {}) -> {}", P,
               f.last_date.empty() ? str("row ", R) : f.last_date, file, shown_path(run_dir), r.checkpoint, r.step,
               out.string());
  return f;
}

}  // namespace seqlab::app
