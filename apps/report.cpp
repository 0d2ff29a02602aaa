// `seqlab report`: finds the models of each run directory (a comparison lists them in its
// config.resolved.toml), reads their metrics.h5, rebuilds forecasting models from checkpoint-best.h5
// through load_run_model (the same path as `seqlab eval`), reads extrapolation.csv files, and
// draws the pictures with apps/svg. Every picture is rendered before the first file is written, so
// a bad option or input leaves the output directory as it was.
#include "apps/report.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/svg.h"
#include "apps/trainer.h"
#include "autograd/node.h"
#include "core/error.h"

namespace seqlab::app {
namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// One model's run directory and what the pictures need of it.
struct ModelRun {
  std::string dir;    // the model's run directory
  size_t run = 0;     // which run directory of the command line it belongs to
  std::string group;  // that directory's name
  std::string name;   // the model's name in its config
  std::string label;  // the legend text: the name, or group/name when names repeat across run dirs
  std::string color;
  Config config;
  Metrics metrics;
};

// The last component of a directory as typed ("runs/x/" -> "x").
std::string dir_name(const std::string& d) {
  fs::path p = fs::path(d).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  std::string n = p.filename().string();
  return n.empty() || n == "." ? fs::absolute(p).lexically_normal().filename().string() : n;
}

Config read_run_config(const std::string& dir) {
  SEQLAB_CHECK(fs::exists(dir), dir, ": no such directory (expected a run directory of seqlab train or compare)");
  SEQLAB_CHECK(fs::is_directory(dir), dir, ": not a directory (expected a run directory of seqlab train or compare)");
  const fs::path cfg = fs::path(dir) / "config.resolved.toml";
  SEQLAB_CHECK(fs::is_regular_file(cfg), dir, ": not a run directory (no config.resolved.toml)");
  return load_config(cfg.string());
}

ModelRun read_model(const std::string& dir, const std::string& group) {
  ModelRun m;
  m.dir = dir;
  m.group = group;
  m.config = read_run_config(dir);
  SEQLAB_CHECK(!m.config.multi, dir, ": a comparison inside a comparison is not supported");
  m.name = m.config.models[0].name;
  const fs::path mp = fs::path(dir) / "metrics.h5";
  SEQLAB_CHECK(fs::is_regular_file(mp), mp.string(),
               ": no such file (expected the per-epoch metrics of a trained run)");
  m.metrics = read_metrics(mp);
  for (const char* k : {"seconds", "val_loss"})
    SEQLAB_CHECK(m.metrics.count(k), mp.string(), ": no dataset '", k, "' (expected per-epoch seconds and val_loss)");
  SEQLAB_CHECK(m.metrics.at("seconds").size() == m.metrics.at("val_loss").size(), mp.string(), ": 'seconds' has ",
               m.metrics.at("seconds").size(), " values and 'val_loss' ", m.metrics.at("val_loss").size());
  return m;
}

// Every model of every run directory, in order; labels unique, colours fixed per label.
std::vector<ModelRun> find_models(const std::vector<std::string>& run_dirs) {
  SEQLAB_CHECK(!run_dirs.empty(), "report: expected at least one run directory");
  std::vector<ModelRun> models;
  for (size_t run = 0; run < run_dirs.size(); ++run) {
    const std::string& d = run_dirs[run];
    Config c = read_run_config(d);
    const std::string group = dir_name(d);
    const size_t first = models.size();
    if (!c.multi) {
      models.push_back(read_model(d, group));
    } else {
      for (const auto& mc : c.models) {
        fs::path sub = fs::path(d) / mc.name;
        SEQLAB_CHECK(fs::is_directory(sub), sub.string(), ": no such directory (model '", mc.name, "' of ",
                     (fs::path(d) / "config.resolved.toml").string(), "; was the comparison finished?)");
        models.push_back(read_model(sub.string(), group));
      }
    }
    for (size_t i = first; i < models.size(); ++i) models[i].run = run;
  }
  // When a name repeats across run directories every label says its directory.
  std::set<std::string> names;
  for (const auto& m : models) names.insert(m.name);
  const bool prefix = names.size() < models.size();
  std::set<std::string> seen;
  for (size_t i = 0; i < models.size(); ++i) {
    auto& m = models[i];
    m.label = prefix ? m.group + "/" + m.name : m.name;
    if (!seen.insert(m.label).second) m.label += str("#", i + 1);  // the same run directory given twice
    m.color = svg::palette(i);
  }
  return models;
}

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

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

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

// ---------------------------------------------------------------------------------------------
// extrapolation.csv and extrapolation.svg

// Splits one CSV line; fields may be double-quoted ("" is a quote inside).
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> f(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"')
        f.back() += '"', ++i;
      else if (ch == '"')
        quoted = false;
      else
        f.back() += ch;
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      f.emplace_back();
    } else {
      f.back() += ch;
    }
  }
  for (auto& s : f) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.pop_back();
    while (!s.empty() && s.front() == ' ') s.erase(s.begin());
  }
  return f;
}

std::string pow2_text(int64_t n) {
  if (n > 0 && (n & (n - 1)) == 0) {
    int e = 0;
    while ((int64_t{1} << e) < n) ++e;
    return str("2^", e);
  }
  return std::to_string(n);
}

// The skipped lengths of one model for a note: "2^15, 2^16 (time limit)"; runs of one reason together.
std::string skipped_text(const std::vector<std::pair<int64_t, std::string>>& skipped) {
  std::string s;
  size_t i = 0;
  while (i < skipped.size()) {
    size_t j = i;
    while (j + 1 < skipped.size() && skipped[j + 1].second == skipped[i].second) ++j;
    std::string lens = j - i >= 2 ? str(pow2_text(skipped[i].first), " to ", pow2_text(skipped[j].first))
                       : j > i    ? str(pow2_text(skipped[i].first), ", ", pow2_text(skipped[j].first))
                                  : pow2_text(skipped[i].first);
    s += str(s.empty() ? "" : "; ", lens, " (", skipped[i].second, ")");
    i = j + 1;
  }
  return s;
}

std::string extrapolation_chart(const std::vector<ExtrapolationRow>& rows, int64_t train_len,
                                const std::string& subtitle, const std::map<std::string, std::string>& colors) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<ExtrapolationRow>> by_model;
  for (const auto& r : rows) {
    if (!by_model.count(r.model)) order.push_back(r.model);
    by_model[r.model].push_back(r);
  }
  SEQLAB_CHECK(!order.empty(), "report: extrapolation.svg: no rows");
  size_t n_skipping = 0;
  for (const auto& name : order)
    for (const auto& r : by_model[name])
      if (r.status != "ok" || !std::isfinite(r.accuracy)) {
        ++n_skipping;
        break;
      }
  svg::LineChart c;
  c.title = "Accuracy against sequence length";
  c.subtitle = subtitle;
  c.x.label = "sequence length (log2)";
  c.x.scale = svg::Scale::log2;
  c.y.label = "accuracy";
  c.y.fixed = true;
  c.y.min = 0;
  c.y.max = 1.0 + 0.06 * static_cast<double>(n_skipping + 1);
  c.y.ticks_max = 1.0;
  size_t skip_row = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    auto& rs = by_model[order[i]];
    std::stable_sort(rs.begin(), rs.end(), [](const auto& a, const auto& b) { return a.seq_len < b.seq_len; });
    const std::string color = colors.count(order[i]) ? colors.at(order[i]) : svg::palette(i);
    std::set<std::string> modes;
    svg::Series ok, skip;
    ok.label = order[i], ok.color = color, ok.marker = svg::Marker::circle;
    skip.label = order[i] + " (not run)", skip.color = color, skip.line = false, skip.marker = svg::Marker::cross;
    skip.in_legend = false;
    std::vector<std::pair<int64_t, std::string>> skipped;
    for (const auto& r : rs) {
      if (r.status == "ok" && std::isfinite(r.accuracy)) {
        ok.x.push_back(static_cast<double>(r.seq_len)), ok.y.push_back(r.accuracy);
        if (!r.mode.empty()) modes.insert(r.mode);
      } else {
        skipped.emplace_back(r.seq_len, r.status == "ok" ? std::string("no accuracy") : r.status);
      }
    }
    if (!modes.empty()) {
      std::vector<std::string> mv(modes.begin(), modes.end());
      ok.label += " (" + join(mv, "/") + ")";
    }
    c.series.push_back(std::move(ok));
    if (skipped.empty()) continue;
    const double top = 1.0 + 0.06 * static_cast<double>(++skip_row);
    for (const auto& [len, why] : skipped) skip.x.push_back(static_cast<double>(len)), skip.y.push_back(top);
    c.labels.push_back({.x = static_cast<double>(skipped.front().first),
                        .y = top,
                        .text = str(order[i], " not run: ", skipped.front().second),
                        .color = color,
                        .left = true});
    c.series.push_back(std::move(skip));
    c.notes.push_back(str("x above 1: not run for ", order[i], " at ", skipped_text(skipped)));
  }
  if (train_len > 0) {
    c.vlines.push_back({.x = static_cast<double>(train_len)});
    c.notes.push_back(str("dashed vertical line: the training length (", train_len, ")"));
  }
  bool any_ok = false;
  for (const auto& s : c.series) any_ok |= s.line && !s.x.empty();
  SEQLAB_CHECK(any_ok, "report: extrapolation.svg: no row has status \"ok\" and an accuracy");
  return svg::render(c);
}

}  // namespace

std::string shown_path(const std::string& path) {
  std::error_code ec;
  const fs::path rel = fs::relative(path, fs::current_path(ec), ec);
  if (!ec && !rel.empty() && *rel.begin() != "..") return rel.string();
  return fs::path(path).filename().string();
}

std::vector<ExtrapolationRow> read_extrapolation_csv(const std::string& path) {
  std::ifstream in(path);
  SEQLAB_CHECK(in, path, ": cannot open (expected extrapolation.csv from seqlab eval --seq-lens)");
  std::string line;
  SEQLAB_CHECK(std::getline(in, line), path, ": empty file (expected a header row model,seq_len,...,status)");
  std::map<std::string, size_t> col;
  auto header = csv_fields(line);
  for (size_t i = 0; i < header.size(); ++i) col[header[i]] = i;
  for (const char* k : {"model", "seq_len", "accuracy", "status"})
    SEQLAB_CHECK(col.count(k), path, ": line 1: no column '", k, "' (expected model,seq_len,n_sequences,accuracy,",
                 "seconds,peak_rss_mib,mode,status)");
  std::vector<ExtrapolationRow> rows;
  for (int64_t lineno = 2; std::getline(in, line); ++lineno) {
    if (line.empty() || line == "\r") continue;
    auto f = csv_fields(line);
    SEQLAB_CHECK(f.size() == header.size(), path, ": line ", lineno, ": ", f.size(), " fields, expected ",
                 header.size());
    auto get = [&](const char* k) { return col.count(k) ? f[col[k]] : std::string(); };
    auto number = [&](const char* k, bool integer, bool required) -> double {
      std::string s = get(k);
      if (s.empty() && !required) return kNaN;
      char* end = nullptr;
      double v = std::strtod(s.c_str(), &end);
      SEQLAB_CHECK(
          !s.empty() && end == s.c_str() + s.size() && (!integer || (std::isfinite(v) && v >= 1 && v == std::floor(v))),
          path, ": line ", lineno, ": ", k, ": expected ", integer ? "an integer >= 1" : "a number", ", got '", s, "'");
      return v;
    };
    ExtrapolationRow r;
    r.model = get("model");
    SEQLAB_CHECK(!r.model.empty(), path, ": line ", lineno, ": model: expected a name, got an empty field");
    r.seq_len = static_cast<int64_t>(number("seq_len", true, true));
    r.status = get("status");
    SEQLAB_CHECK(!r.status.empty(), path, ": line ", lineno,
                 ": status: expected \"ok\" or a reason, got an empty field");
    r.accuracy = number("accuracy", false, r.status == "ok");
    SEQLAB_CHECK(!(r.accuracy < 0 || r.accuracy > 1), path, ": line ", lineno,
                 ": accuracy: expected a fraction in [0, 1], got ", get("accuracy"));
    double n = number("n_sequences", false, false);
    r.n_sequences = std::isfinite(n) ? static_cast<int64_t>(n) : 0;
    r.seconds = number("seconds", false, false);
    r.peak_rss_mib = number("peak_rss_mib", false, false);
    r.mode = get("mode");
    double kd = number("key_distance", false, false), step = number("step", false, false);
    r.key_distance = std::isfinite(kd) ? static_cast<int64_t>(kd) : 0;
    r.checkpoint = get("checkpoint");  // absent in files written before the column existed
    r.step = std::isfinite(step) ? static_cast<int64_t>(step) : 0;
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string extrapolation_svg(const std::vector<ExtrapolationRow>& rows, int64_t train_len,
                              const std::string& subtitle) {
  return extrapolation_chart(rows, train_len, subtitle, {});
}

std::vector<std::string> run_report(const std::vector<std::string>& run_dirs, const ReportOptions& opt) {
  std::vector<ModelRun> models = find_models(run_dirs);
  std::vector<std::pair<std::string, std::string>> pictures;  // file name, SVG text
  pictures.emplace_back("learning_curves.svg", learning_curves_svg(models, run_dirs));

  std::vector<const ModelRun*> forecasting;
  for (const auto& m : models)
    if (!m.config.data.is_token_task()) forecasting.push_back(&m);
  if (forecasting.empty()) {
    SEQLAB_CHECK(!opt.window_given, "--window: no forecasting run among ", join(run_dirs), " (only token tasks)");
    SEQLAB_CHECK(opt.channel.empty(), "--channel: no forecasting run among ", join(run_dirs), " (only token tasks)");
  } else {
    pictures.emplace_back("forecast.svg", forecast_svg(forecasting, opt));
  }

  // extrapolation.csv in a run directory or in a model's directory; rows keep the model's legend
  // label and colour when the model is one of the runs.
  std::vector<ExtrapolationRow> rows;
  std::set<std::pair<std::string, int64_t>> seen;
  std::map<std::string, std::string> colors;
  std::vector<std::string> sources;
  std::set<int64_t> train_lens;
  size_t n_colors = models.size();
  auto add_csv = [&](const fs::path& p, size_t run) {
    if (!fs::is_regular_file(p)) return;
    sources.push_back(p.string());
    for (auto r : read_extrapolation_csv(p.string())) {
      for (const auto& m : models)
        if (m.run == run && m.name == r.model) {
          r.model = m.label;
          colors[m.label] = m.color;
          if (m.config.data.is_token_task()) train_lens.insert(m.config.data.seq_len);
        }
      if (!colors.count(r.model)) colors[r.model] = svg::palette(n_colors++);  // not one of the runs
      if (seen.insert({r.model, r.seq_len}).second) rows.push_back(std::move(r));
    }
  };
  for (size_t run = 0; run < run_dirs.size(); ++run) {
    add_csv(fs::path(run_dirs[run]) / "extrapolation.csv", run);
    for (const auto& m : models)
      if (m.run == run && fs::path(m.dir) != fs::path(run_dirs[run]))
        add_csv(fs::path(m.dir) / "extrapolation.csv", run);
  }
  if (!rows.empty())
    pictures.emplace_back(
        "extrapolation.svg",
        extrapolation_chart(rows, train_lens.size() == 1 ? *train_lens.begin() : 0, "from " + join(sources), colors));

  const fs::path out = opt.out.empty() ? fs::path(run_dirs[0]) : fs::path(opt.out);
  std::error_code ec;
  fs::create_directories(out, ec);
  SEQLAB_CHECK(!ec && fs::is_directory(out), "--out ", out.string(), ": cannot create the directory",
               ec ? ": " + ec.message() : std::string());
  std::vector<std::string> written;
  for (const auto& [name, text] : pictures) {
    write_text_atomic(out / name, text);
    written.push_back((out / name).string());
  }
  return written;
}

}  // namespace seqlab::app
