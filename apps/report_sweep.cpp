// The pictures of `seqlab report` drawn from results.csv (apps/results.cpp, apps/sweep.cpp):
// cost_accuracy.svg (test loss, or a token task's accuracy, against ms per step, each marker's area
// proportional to peak RSS)
// for a comparison or a sweep, and for a sweep's numeric axis step_time.svg, peak_memory.svg and
// accuracy_vs_<key>.svg against the swept value on log axes, each line's legend text carrying the
// exponent k of a power law y ~ x^k fitted by least squares on log(y) = k log(x) + c.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include "apps/report_charts.h"
#include "apps/run.h"  // fmt
#include "apps/svg.h"
#include "core/error.h"

namespace seqlab::app::report_detail {
namespace fs = std::filesystem;
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr size_t kNone = static_cast<size_t>(-1);
constexpr double kMaxRadius = 14, kMinRadius = 2.5;  // cost_accuracy.svg markers, pixels

std::string last_part(const std::string& key) { return key.substr(key.rfind('.') + 1); }

// A swept key as a label shows it: the README glossary's letter for lengths and widths, else the
// key's last part ("data.seq_len" -> "T", "optim.lr" -> "lr").
std::string short_key(const std::string& key) {
  static const std::map<std::string, std::string> letters = {{"seq_len", "T"},  {"pred_len", "P"}, {"d_model", "D"},
                                                             {"d_state", "N"},  {"expand", "E"},   {"n_heads", "H"}};
  auto it = letters.find(last_part(key));
  return it == letters.end() ? last_part(key) : it->second;
}

// A row's setting of every swept key but `skip`: "T=720 D=64".
std::string setting_text(const ResultsTable& t, const ResultRow& r, size_t skip = kNone) {
  std::string s;
  for (size_t a = 0; a < t.keys.size(); ++a)
    if (a != skip) s += str(s.empty() ? "" : " ", short_key(t.keys[a]), "=", r.values[a]);
  return s;
}

// A number as written in a CSV or TOML field; NaN when it is not one.
double parse_number(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size() ? v : kNaN;
}

// One note naming each failed cell (a comparison: each failed model) once, with its reason shortened.
std::string failed_note(const ResultsTable& t) {
  std::vector<std::string> items;
  std::set<std::string> seen;
  for (const auto& r : t.rows) {
    if (r.ok()) continue;
    std::string what = r.label;
    if (!t.keys.empty()) {  // every model of a failed cell fails with its reason: the cell once
      what.clear();
      for (size_t a = 0; a < t.keys.size(); ++a) what += str(a ? "," : "", t.keys[a], "=", r.values[a]);
    }
    std::string why = r.status.starts_with("failed: ") ? r.status.substr(8) : r.status;
    if (why.size() > 70) why = why.substr(0, 67) + "...";
    if (seen.insert(what).second) items.push_back(str(what, " (", why, ")"));
  }
  return items.empty() ? "" : str("left out, failed: ", join(items, "; "));
}

// A log axis range around [lo, hi] with room for markers at the ends (at least 0.3 decades).
void pad_log_axis(svg::Axis& a, double lo, double hi, double pad) {
  const double l = std::log10(lo), h = std::log10(hi), span = std::max(h - l, 0.3), mid = (l + h) / 2;
  a.fixed = true;
  a.min = std::pow(10.0, std::min(l, mid - span / 2) - pad * span);
  a.max = std::pow(10.0, std::max(h, mid + span / 2) + pad * span);
}

// The points of `s` in increasing x, so that its line runs left to right.
void sort_by_x(svg::Series& s) {
  std::vector<size_t> idx(s.x.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t i, size_t j) { return s.x[i] < s.x[j]; });
  std::vector<double> x, y;
  for (size_t i : idx) x.push_back(s.x[i]), y.push_back(s.y[i]);
  s.x = std::move(x), s.y = std::move(y);
}

enum class Measure { step_ms, peak_rss, score };

double measure(const ResultRow& r, Measure m) {
  return m == Measure::step_ms ? r.step_ms : m == Measure::peak_rss ? r.peak_rss_mib : r.score;
}

// One line per model and setting of the other keys against the value of key `a` (ok rows only);
// `fit`: each legend text ends with the fitted exponent, "  ~T^1.84".
std::string against_axis_svg(const ResultsTable& t, size_t a, Measure m, const std::string& title,
                             const std::string& y_label, bool fit) {
  const std::string letter = short_key(t.keys[a]);
  svg::LineChart c;
  c.title = str(title, " against ", t.keys[a]);
  c.subtitle = str("from ", t.path, "; one line per model", t.keys.size() > 1 ? " and setting of the other keys" : "");
  bool pow2 = true;
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const auto& r : t.rows) {
    const double x = parse_number(r.values[a]), y = measure(r, m);
    pow2 = pow2 && x >= 1 && x == std::floor(x) && std::exp2(std::round(std::log2(x))) == x;
    if (r.ok() && std::isfinite(y) && y > 0) lo = std::min(lo, y), hi = std::max(hi, y);
  }
  c.x.label = str(t.keys[a], pow2 ? " (log2)" : " (log)");
  c.x.scale = pow2 ? svg::Scale::log2 : svg::Scale::log10;
  c.y.label = y_label;
  c.y.scale = fit || (hi > 0 && hi / lo > 10) ? svg::Scale::log10 : svg::Scale::linear;
  std::map<std::string, size_t> line_of;  // model label + setting -> series
  std::map<std::string, size_t> settings_of_model;
  for (const auto& r : t.rows) {
    const std::string setting = setting_text(t, r, a), name = r.label + (setting.empty() ? "" : " " + setting);
    if (!line_of.count(name)) {
      line_of[name] = c.series.size();
      svg::Series s;
      s.label = name, s.color = r.color, s.marker = svg::Marker::circle;
      s.dashed = settings_of_model[r.label]++ % 2 == 1;  // a model's settings alternate solid and dashed
      c.series.push_back(std::move(s));
    }
    if (!r.ok()) continue;
    svg::Series& s = c.series[line_of[name]];
    s.x.push_back(parse_number(r.values[a])), s.y.push_back(measure(r, m));
  }
  for (auto& s : c.series) {
    sort_by_x(s);
    const double k = fitted_exponent(s.x, s.y);
    if (fit) s.label += std::isfinite(k) ? str("  ~", letter, "^", fmt("%.2f", k)) : std::string("  (one point)");
  }
  if (fit) c.notes.push_back(str("~", letter, "^k: k is the least-squares slope of log(y) on log(", t.keys[a], ")"));
  if (m == Measure::peak_rss)
    c.notes.push_back("peak RSS of the process that trained the model (models trained in one process share it)");
  if (const std::string f = failed_note(t); !f.empty()) c.notes.push_back(f);
  SEQLAB_CHECK(hi > 0, t.path, ": no ok row with a finite ", title, " (nothing to draw)");
  return svg::render(c);
}

// The axis the sweep pictures are drawn against: data.seq_len when its values are numbers, else
// the first axis whose values are all positive numbers; kNone when there is none.
size_t numeric_axis(const Config& c) {
  size_t first = kNone;
  for (size_t a = 0; a < c.sweep.size(); ++a) {
    bool numeric = true;
    for (const auto& v : c.sweep[a].values) numeric = numeric && parse_number(v) > 0;
    if (numeric && c.sweep[a].key == "data.seq_len") return a;
    if (numeric && first == kNone) first = a;
  }
  return first;
}

std::string loss_label(size_t token, size_t n, bool accuracy = false) {
  return accuracy ? "test token accuracy (fraction of scored tokens)"
         : token == n ? "test cross-entropy (nats per token)"
         : token == 0 ? "test MSE (scaled data)"
                      : "test MSE or cross-entropy";
}

}  // namespace

ResultsTable read_results_table(const std::string& path, const std::vector<std::string>& keys) {
  std::ifstream in(path);
  SEQLAB_CHECK(fs::is_regular_file(path) && in, path, ": no such file (expected the results table of seqlab compare)");
  std::string line;
  SEQLAB_CHECK(std::getline(in, line), path, ": empty file (expected a header row model,params,...)");
  const std::vector<std::string> header = csv_fields(line);
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < header.size(); ++i) col.emplace(header[i], i);
  std::vector<std::string> need = {"model", "step_ms", "peak_rss_mib", "test_mse"};
  need.insert(need.end(), keys.begin(), keys.end());
  for (const auto& k : need)
    SEQLAB_CHECK(col.count(k), path, ": line 1: no column '", k, "' (expected model,params,epochs,train_seconds,",
                 "step_ms,peak_rss_mib,val_mse,test_mse,test_mae", keys.empty() ? "" : ", a column per swept key", ")");
  ResultsTable t{path, keys, {}, col.count("test_acc") > 0};
  std::map<std::string, std::string> colors;
  for (int64_t lineno = 2; std::getline(in, line); ++lineno) {
    if (line.empty() || line == "\r") continue;
    const std::vector<std::string> f = csv_fields(line);
    SEQLAB_CHECK(f.size() == header.size(), path, ": line ", lineno, ": ", f.size(), " fields, expected ",
                 header.size());
    auto number = [&](const char* k) {
      const std::string& s = f[col.at(k)];
      const double v = parse_number(s);
      SEQLAB_CHECK(!std::isnan(v) || s.find("nan") != std::string::npos, path, ": line ", lineno, ": ", k,
                   ": expected a number, got '", s, "'");
      return v;
    };
    ResultRow r;
    r.model = r.label = f[col.at("model")];
    SEQLAB_CHECK(!r.model.empty(), path, ": line ", lineno, ": model: expected a name, got an empty field");
    r.step_ms = number("step_ms"), r.peak_rss_mib = number("peak_rss_mib"), r.loss = number("test_mse");
    r.score = col.count("test_acc") ? number("test_acc") : r.loss;
    for (const auto& k : keys) r.values.push_back(f[col.at(k)]);
    if (col.count("status")) r.status = f[col.at("status")];
    if (!colors.count(r.model)) colors[r.model] = svg::palette(colors.size());
    r.color = colors[r.model];
    t.rows.push_back(std::move(r));
  }
  return t;
}

double fitted_exponent(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<std::pair<double, double>> p;  // (log x, log y)
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i)
    if (std::isfinite(x[i]) && std::isfinite(y[i]) && x[i] > 0 && y[i] > 0)
      p.emplace_back(std::log(x[i]), std::log(y[i]));
  double mx = 0, my = 0;
  for (const auto& [lx, ly] : p) mx += lx, my += ly;
  mx /= static_cast<double>(p.size()), my /= static_cast<double>(p.size());
  double sxx = 0, sxy = 0;
  for (const auto& [lx, ly] : p) sxx += (lx - mx) * (lx - mx), sxy += (lx - mx) * (ly - my);
  return p.size() >= 2 && sxx > 1e-18 ? sxy / sxx : kNaN;
}

std::string cost_accuracy_svg(const ResultsTable& t, const std::string& loss_label, const std::string& subtitle) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  double x0 = kInf, x1 = 0, y0 = kInf, y1 = 0, r0 = kInf, r1 = 0;
  std::vector<const ResultRow*> drawn;
  for (const auto& r : t.rows)
    if (r.ok() && std::isfinite(r.step_ms) && r.step_ms > 0 && std::isfinite(r.score) && r.score > 0) {
      drawn.push_back(&r);
      x0 = std::min(x0, r.step_ms), x1 = std::max(x1, r.step_ms), y0 = std::min(y0, r.score);
      y1 = std::max(y1, r.score);
      if (std::isfinite(r.peak_rss_mib) && r.peak_rss_mib > 0)
        r0 = std::min(r0, r.peak_rss_mib), r1 = std::max(r1, r.peak_rss_mib);
    }
  SEQLAB_CHECK(!drawn.empty(), t.path, ": no row with status ok and a step_ms and ", t.accuracy ? "test_acc" : "test_mse",
               " > 0 (nothing to draw)");
  svg::LineChart c;
  c.title = str("Cost against accuracy: test ", t.accuracy ? "accuracy" : "loss", " against training step time");
  c.subtitle = subtitle;
  c.x.label = "training step time (ms per step, log)";
  c.x.scale = svg::Scale::log10;
  pad_log_axis(c.x, x0, x1, 0.12);
  c.y.label = loss_label;
  if (y1 / y0 > 10) {
    c.y.scale = svg::Scale::log10;
    pad_log_axis(c.y, y0, y1, 0.1);
  } else {
    const double pad = y1 > y0 ? 0.1 * (y1 - y0) : 0.1 * y0;
    c.y.fixed = true, c.y.min = y0 - pad, c.y.max = y1 + pad;
  }
  std::map<std::string, size_t> series_of;  // model label -> series
  const double mid = std::sqrt(c.x.min * c.x.max);
  for (const ResultRow* r : drawn) {
    if (!series_of.count(r->label)) {
      series_of[r->label] = c.series.size();
      svg::Series s;
      s.label = r->label, s.color = r->color, s.line = false, s.marker = svg::Marker::circle;
      c.series.push_back(std::move(s));
    }
    svg::Series& s = c.series[series_of[r->label]];
    const bool sized = std::isfinite(r->peak_rss_mib) && r->peak_rss_mib > 0;
    const double radius = sized ? std::max(kMinRadius, kMaxRadius * std::sqrt(r->peak_rss_mib / r1)) : 0;
    s.x.push_back(r->step_ms), s.y.push_back(r->score), s.marker_r.push_back(radius);
    const std::string setting = setting_text(t, *r);
    c.labels.push_back({.x = r->step_ms,
                        .y = r->score,
                        .text = r->label + (setting.empty() ? "" : " " + setting),
                        .color = r->color,
                        .left = r->step_ms > mid,  // toward the middle, clear of the frame and the legend
                        .offset = (sized ? radius : 3) + 4});
  }
  if (r1 > 0)
    c.notes.push_back(str("marker area ~ peak RSS: smallest ", fmt("%.1f", r0), " MiB, largest ", fmt("%.1f", r1),
                          " MiB (radius ", fmt("%.0f", kMaxRadius), " px; at least ", fmt("%.1f", kMinRadius), " px)"));
  if (const std::string f = failed_note(t); !f.empty()) c.notes.push_back(f);
  return svg::render(c);
}

std::string comparison_cost_accuracy(const std::vector<ModelRun>& models, const std::vector<std::string>& run_dirs) {
  ResultsTable all;
  std::vector<std::string> sources;
  size_t token = 0, n = 0;  // the models of those comparisons, and how many are of a token task
  bool mixed = false;       // some table without test_acc: every table's score is then its test loss
  for (size_t run = 0; run < run_dirs.size(); ++run) {
    bool comparison = false;  // its models live in subdirectories
    for (const auto& m : models) comparison |= m.run == run && fs::path(m.dir) != fs::path(run_dirs[run]);
    const fs::path p = fs::path(run_dirs[run]) / "results.csv";
    if (!comparison) continue;
    if (!fs::exists(p)) {
      spdlog::warn("report: {}: no such file, cost_accuracy.svg leaves {} out (was the comparison finished?)",
                   p.string(), run_dirs[run]);
      continue;
    }
    ResultsTable table = read_results_table(p.string());
    all.accuracy = table.accuracy;
    mixed = mixed || !table.accuracy;
    for (ResultRow r : table.rows) {
      for (const auto& m : models)
        if (m.run == run && m.name == r.model) r.label = m.label, r.color = m.color;
      all.rows.push_back(std::move(r));
    }
    for (const auto& m : models)
      if (m.run == run) ++n, token += m.config.data.is_token_task();
    sources.push_back(p.string());
  }
  if (all.rows.empty()) return "";
  if (mixed) {  // some comparison is not of a token task: every marker at its test loss
    all.accuracy = false;
    for (auto& r : all.rows) r.score = r.loss;
  }
  all.path = join(sources);
  return cost_accuracy_svg(all, loss_label(token, n, all.accuracy), "one marker per model, from " + all.path);
}

std::vector<Picture> sweep_pictures(const std::string& dir, const Config& c, const ReportOptions& opt) {
  for (bool given : {opt.window_given, !opt.channel.empty()})
    SEQLAB_CHECK(!given, opt.window_given ? "--window" : "--channel", ": ", dir,
                 " is a sweep directory, whose pictures have no forecast (give one of its cells, ", dir,
                 "/<key=value,...>, for that)");
  std::vector<std::string> keys;
  for (const auto& axis : c.sweep) keys.push_back(axis.key);
  ResultsTable t = read_results_table((fs::path(dir) / "results.csv").string(), keys);
  const std::string loss = loss_label(c.data.is_token_task() ? 1 : 0, 1, t.accuracy);
  std::vector<Picture> pictures;
  pictures.emplace_back("cost_accuracy.svg",
                        cost_accuracy_svg(t, loss, str("one marker per model and cell of the sweep ", dir)));
  const size_t a = numeric_axis(c);
  if (a == kNone) {
    spdlog::info("report: {}: no swept key has numbers for values, so no pictures against one", dir);
    return pictures;
  }
  pictures.emplace_back("step_time.svg",
                        against_axis_svg(t, a, Measure::step_ms, "Step time", "ms per training step (log)", true));
  pictures.emplace_back("peak_memory.svg",
                        against_axis_svg(t, a, Measure::peak_rss, "Peak memory", "peak RSS (MiB, log)", true));
  pictures.emplace_back("accuracy_vs_" + last_part(c.sweep[a].key) + ".svg",
                        against_axis_svg(t, a, Measure::score, t.accuracy ? "Test accuracy" : "Test loss", loss, false));
  return pictures;
}

}  // namespace seqlab::app::report_detail
