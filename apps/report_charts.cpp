// The pictures of `seqlab report` drawn from the runs themselves: learning_curves.svg (validation
// loss against training wall time, from metrics.h5) and forecast.svg (one test window of every
// forecasting model against the truth: each model is rebuilt from checkpoint-best.h5 through
// load_run_model, the same path as `seqlab eval`). Both through apps/svg.
#include "apps/report_charts.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include "apps/svg.h"
#include "apps/trainer.h"
#include "autograd/node.h"
#include "core/error.h"

namespace seqlab::app::report_detail {
namespace {

// One model's view of the chosen test window and channel.
struct WindowView {
  std::vector<double> history, truth, forecast;  // in the plotted units
  double mse = 0;                                // of the forecast on this channel, scaled data
  std::string channel, when, units;
  int64_t n_windows = 0, seq_len = 0, pred_len = 0;
  std::string data;  // the data source, for the subtitle
};

// Rebuilds the model and its data (load_run_model) and forecasts test window opt.window. The
// reference model's problems are errors; another model whose data cannot show the same window
// returns false (it is left out with a warning).
bool view_window(const ModelRun& m, const ReportOptions& opt, bool reference, WindowView& v) {
  LoadedRun r = load_run_model(m.dir);
  const data::ForecastDataset& ds = *r.fc.test;
  const data::ColumnSelection& cols = r.fc.columns;
  v.n_windows = ds.size();
  v.seq_len = ds.seq_len();
  v.pred_len = ds.pred_len();
  v.data = r.config.data.task == "sine" ? std::string("the sine series") : shown_path(r.config.data.path);
  if (opt.window < 0 || opt.window >= ds.size()) {
    SEQLAB_CHECK(!reference, "--window ", opt.window, ": expected a test window in [0, ", ds.size(), ") of ", m.dir,
                 " (its test split has ", ds.size(), " windows of ", ds.seq_len(), " + ", ds.pred_len(), " rows)");
    spdlog::warn("report: {} left out of forecast.svg: it has no test window {}", m.dir, opt.window);
    return false;
  }
  std::vector<std::string> predicted;
  for (int64_t k : cols.output) predicted.push_back(r.columns.at(static_cast<size_t>(k)));
  std::string ch = opt.channel;
  if (ch.empty())
    ch = std::count(predicted.begin(), predicted.end(), r.config.data.target) ? r.config.data.target : predicted.back();
  auto it = std::find(predicted.begin(), predicted.end(), ch);
  if (it == predicted.end()) {
    SEQLAB_CHECK(!reference, "--channel '", ch, "': not a predicted column of ", m.dir,
                 " (expected one of: ", join(predicted), ")");
    spdlog::warn("report: {} left out of forecast.svg: it does not predict column '{}'", m.dir, ch);
    return false;
  }
  const int64_t k_out = it - predicted.begin(), col = cols.output[static_cast<size_t>(k_out)];
  const auto in_it = std::find(cols.input.begin(), cols.input.end(), col);
  SEQLAB_CHECK(in_it != cols.input.end(), m.dir, ": column '", ch, "' is predicted but not an input");
  const int64_t k_in = in_it - cols.input.begin();
  v.channel = ch;

  const int64_t idx = opt.window;
  data::Batch b = ds.get(std::span<const int64_t>(&idx, 1));
  Tensor pred;
  {
    NoGradGuard ng;
    r.model->eval();
    pred = r.model->forward(b.x);  // (1, P, C_out)
  }
  const int64_t L = ds.seq_len(), P = ds.pred_len(), c_in = ds.input_channels(), c_out = ds.output_channels();
  SEQLAB_CHECK(pred.numel() == P * c_out, m.dir, ": the model predicts ", to_string(pred.shape()), ", expected (1, ", P,
               ", ", c_out, ")");
  std::vector<double> x = b.x.to_vector(), y = b.y.to_vector(), p = pred.to_vector();
  // The scaler the model was trained with (refitted and checked by load_run_model).
  double mean = 0, scale = 1;
  const bool unscale = r.fc.scaler.fitted() && !opt.scaled;
  if (unscale) {
    mean = r.fc.scaler.mean().to_vector().at(static_cast<size_t>(col));
    scale = r.fc.scaler.scale().to_vector().at(static_cast<size_t>(col));
  }
  v.units = !r.fc.scaler.fitted() ? "unscaled: the data as read ([data] scale = false)"
            : unscale             ? "unscaled: the training scaler undone"
                                  : "scaled: the values the model sees";
  double sse = 0;
  for (int64_t t = 0; t < L; ++t) v.history.push_back(x[static_cast<size_t>(t * c_in + k_in)] * scale + mean);
  for (int64_t t = 0; t < P; ++t) {
    double yt = y[static_cast<size_t>(t * c_out + k_out)], pt = p[static_cast<size_t>(t * c_out + k_out)];
    v.truth.push_back(yt * scale + mean);
    v.forecast.push_back(pt * scale + mean);
    sse += (pt - yt) * (pt - yt);
  }
  v.mse = sse / static_cast<double>(P);
  const int64_t row = ds.rows().begin + idx + L;  // the series row of the first forecast step
  if (row < static_cast<int64_t>(r.dates.size())) v.when = r.dates[static_cast<size_t>(row)];
  return true;
}

bool same_values(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::abs(a[i] - b[i]) > 1e-5 * std::max(1.0, std::abs(a[i]))) return false;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// learning_curves.svg

std::string learning_curves_svg(const std::vector<ModelRun>& models, const std::vector<std::string>& run_dirs) {
  double total_max = 0, lo = std::numeric_limits<double>::infinity(), hi = 0;
  size_t token = 0;
  for (const auto& m : models) {
    double t = 0;
    for (double s : m.metrics.at("seconds")) t += std::isfinite(s) ? s : 0;
    total_max = std::max(total_max, t);
    for (double v : m.metrics.at("val_loss"))
      if (std::isfinite(v) && v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
    token += m.config.data.is_token_task();
  }
  // Seconds, minutes or hours, whichever reads best.
  const double unit = total_max > 3 * 3600 ? 3600 : total_max > 600 ? 60 : 1;
  const char* unit_name = unit == 3600 ? "h" : unit == 60 ? "min" : "s";
  svg::LineChart c;
  c.title = "Validation loss against training time";
  std::string dirs;
  for (const auto& d : run_dirs) dirs += (dirs.empty() ? "" : ", ") + d;
  c.subtitle =
      str("one point per epoch; time is the cumulative wall time of the training steps (evaluation "
          "excluded); ",
          dirs);
  c.x.label = str("training wall time (", unit_name, ")");
  c.x.fixed = true;
  c.x.min = 0;
  c.x.max = svg::linear_ticks(0, std::max(total_max / unit, 1e-6)).back();
  c.y.label = token == models.size() ? "validation loss (cross-entropy, nats per token)"
              : token == 0           ? "validation loss (MSE on the scaled data)"
                                     : "validation loss (MSE or cross-entropy)";
  c.y.scale = hi > 0 && hi / lo > 10 ? svg::Scale::log10 : svg::Scale::linear;
  for (const auto& m : models) {
    svg::Series s;
    s.label = m.label;
    s.color = m.color;
    s.marker = svg::Marker::circle;
    double t = 0;
    const auto& sec = m.metrics.at("seconds");
    const auto& vl = m.metrics.at("val_loss");
    for (size_t i = 0; i < sec.size(); ++i) {
      t += std::isfinite(sec[i]) ? sec[i] : 0;
      s.x.push_back(t / unit);
      s.y.push_back(vl[i]);
    }
    c.series.push_back(std::move(s));
  }
  return svg::render(c);
}

// ---------------------------------------------------------------------------------------------
// forecast.svg

std::string forecast_svg(const std::vector<const ModelRun*>& models, const ReportOptions& opt) {
  WindowView ref;
  view_window(*models[0], opt, true, ref);
  std::vector<std::pair<const ModelRun*, WindowView>> views = {{models[0], ref}};
  for (size_t i = 1; i < models.size(); ++i) {
    WindowView v;
    if (!view_window(*models[i], opt, false, v)) continue;
    if (v.channel != ref.channel || v.units != ref.units || !same_values(v.history, ref.history) ||
        !same_values(v.truth, ref.truth)) {
      spdlog::warn("report: {} left out of forecast.svg: its test window {} differs from {}'s (other data or lengths)",
                   models[i]->dir, opt.window, models[0]->dir);
      continue;
    }
    views.emplace_back(models[i], std::move(v));
  }
  const int64_t L = ref.seq_len, P = ref.pred_len;
  svg::LineChart c;
  c.title = str("Test window ", opt.window, " of ", ref.n_windows, ", channel ", ref.channel,
                ": forecasts against the truth (", ref.units, ")");
  c.subtitle =
      str("data ", ref.data, "; input ", L, " steps, horizon ", P,
          ref.when.empty() ? "" : "; first forecast step " + ref.when, "; each model from its checkpoint-best.h5");
  c.x.label = "time step (0 = the last input step)";
  c.y.label = str(ref.channel, ref.units.starts_with("scaled") ? " (scaled)" : " (the data's units)");
  svg::Series h;
  h.label = "input history", h.color = "#000000", h.width = 1.3;
  for (int64_t t = 0; t < L; ++t) h.x.push_back(static_cast<double>(t - L + 1)), h.y.push_back(ref.history[t]);
  svg::Series tr;
  tr.label = "truth", tr.color = "#000000", tr.width = 2.4;
  tr.x.push_back(0), tr.y.push_back(ref.history.back());  // joined to the history
  for (int64_t t = 0; t < P; ++t) tr.x.push_back(static_cast<double>(t + 1)), tr.y.push_back(ref.truth[t]);
  c.series = {h, tr};
  std::string mses;
  for (const auto& [m, v] : views) {
    svg::Series s;
    s.label = m->label, s.color = m->color;
    for (int64_t t = 0; t < P; ++t) s.x.push_back(static_cast<double>(t + 1)), s.y.push_back(v.forecast[t]);
    c.series.push_back(std::move(s));
    mses += str(mses.empty() ? "" : ", ", m->label, " ", svg::tick_text(v.mse, v.mse < 0.1 ? 1e-4 : 1e-3));
  }
  c.vlines.push_back({.x = 0});
  c.notes.push_back(str("MSE of each forecast on this window and channel (scaled data): ", mses));
  return svg::render(c);
}

}  // namespace seqlab::app::report_detail
