// `seqlab report`: finds the models of each run directory (a comparison lists them in its
// config.resolved.toml) and reads their metrics.h5, gathers the extrapolation.csv files, and has
// report_charts.cpp, report_extrapolation.cpp and report_sweep.cpp draw the pictures; a sweep
// directory goes to report_sweep.cpp alone. Every picture is rendered before
// the first file is written, so a bad option or input leaves the output directory as it was.
#include "apps/report.h"

#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/report_charts.h"
#include "apps/svg.h"
#include "core/error.h"

namespace seqlab::app {
namespace fs = std::filesystem;

namespace report_detail {

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

}  // namespace report_detail

using report_detail::comparison_cost_accuracy;
using report_detail::extrapolation_chart;
using report_detail::forecast_svg;
using report_detail::join;
using report_detail::learning_curves_svg;
using report_detail::ModelRun;
using report_detail::Picture;
using report_detail::sweep_pictures;

namespace {

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

}  // namespace

std::string shown_path(const std::string& path) {
  std::error_code ec;
  const fs::path rel = fs::relative(path, fs::current_path(ec), ec);
  if (!ec && !rel.empty() && *rel.begin() != "..") return rel.string();
  return fs::path(path).filename().string();
}

namespace {

// extrapolation.svg from the extrapolation.csv files in the run directories and in the models'
// directories, or nothing when there is none; rows keep the model's legend label and colour when
// the model is one of the runs.
std::vector<Picture> extrapolation_picture(const std::vector<ModelRun>& models,
                                           const std::vector<std::string>& run_dirs) {
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
  if (rows.empty()) return {};
  return {{"extrapolation.svg", extrapolation_chart(rows, train_lens.size() == 1 ? *train_lens.begin() : 0,
                                                    "from " + join(sources), colors)}};
}

// The pictures of train and compare directories: learning curves, the forecast, extrapolation and
// (when some directory is a comparison) cost against accuracy.
std::vector<Picture> run_pictures(const std::vector<std::string>& run_dirs, const ReportOptions& opt) {
  std::vector<ModelRun> models = find_models(run_dirs);
  std::vector<Picture> pictures;
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
  for (auto& p : extrapolation_picture(models, run_dirs)) pictures.push_back(std::move(p));
  if (std::string svg = comparison_cost_accuracy(models, run_dirs); !svg.empty())
    pictures.emplace_back("cost_accuracy.svg", std::move(svg));
  return pictures;
}

// The config of the sweep directory among `run_dirs`, which must then be the only one; nullopt
// when there is none.
std::optional<Config> sweep_config(const std::vector<std::string>& run_dirs) {
  for (const auto& d : run_dirs) {
    Config c = read_run_config(d);
    if (c.sweep.empty()) continue;
    SEQLAB_CHECK(run_dirs.size() == 1, d, ": a sweep directory (its config.resolved.toml has a [sweep]): give it to ",
                 "seqlab report alone (its cells, ", d, "/<key=value,...>, are comparisons that go with others)");
    return c;
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> run_report(const std::vector<std::string>& run_dirs, const ReportOptions& opt) {
  SEQLAB_CHECK(!run_dirs.empty(), "report: expected at least one run directory");
  const std::optional<Config> sweep = sweep_config(run_dirs);
  const std::vector<Picture> pictures =
      sweep ? sweep_pictures(run_dirs[0], *sweep, opt) : run_pictures(run_dirs, opt);

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
