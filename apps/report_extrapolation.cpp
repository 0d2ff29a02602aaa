// extrapolation.csv (`seqlab eval --seq-lens`, apps/trainer.h) read back by column name, and
// extrapolation.svg drawn from its rows: accuracy against sequence length on a log2 axis, one series
// per model, the lengths a model was not run at as crosses above 1 with the reason in a note.
#include "apps/report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include "apps/report_charts.h"
#include "apps/svg.h"
#include "core/error.h"

namespace seqlab::app {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

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

}  // namespace

namespace report_detail {

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

}  // namespace report_detail

std::vector<ExtrapolationRow> read_extrapolation_csv(const std::string& path) {
  std::ifstream in(path);
  SEQLAB_CHECK(in, path, ": cannot open (expected extrapolation.csv from seqlab eval --seq-lens)");
  std::string line;
  SEQLAB_CHECK(std::getline(in, line), path, ": empty file (expected a header row model,seq_len,...,status)");
  std::map<std::string, size_t> col;
  auto header = report_detail::csv_fields(line);
  for (size_t i = 0; i < header.size(); ++i) col[header[i]] = i;
  for (const char* k : {"model", "seq_len", "accuracy", "status"})
    SEQLAB_CHECK(col.count(k), path, ": line 1: no column '", k, "' (expected model,seq_len,n_sequences,accuracy,",
                 "seconds,peak_rss_mib,mode,status)");
  std::vector<ExtrapolationRow> rows;
  for (int64_t lineno = 2; std::getline(in, line); ++lineno) {
    if (line.empty() || line == "\r") continue;
    auto f = report_detail::csv_fields(line);
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
  return report_detail::extrapolation_chart(rows, train_len, subtitle, {});
}

}  // namespace seqlab::app
