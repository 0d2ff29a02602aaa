// `seqlab compare` with a [sweep]: every model at every point of the product of the swept values,
// each point (a cell) a comparison of its own in <output dir>/<key=value,...>/, one table of all of
// them with a column per swept key and the cell's status at the end.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "apps/run.h"
#include "apps/trainer.h"
#include "core/error.h"

namespace seqlab::app {
namespace fs = std::filesystem;

namespace {

// The points of the product, the last axis fastest: each a value index per axis.
std::vector<std::vector<size_t>> sweep_points(const std::vector<SweepAxis>& axes) {
  std::vector<std::vector<size_t>> points = {{}};
  for (const auto& axis : axes) {
    std::vector<std::vector<size_t>> next;
    for (const auto& p : points)
      for (size_t v = 0; v < axis.values.size(); ++v) {
        next.push_back(p);
        next.back().push_back(v);
      }
    points = std::move(next);
  }
  return points;
}

// A value as it reads in a directory name and a CSV cell: quotes dropped, separators replaced.
std::string plain(std::string v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  for (auto& ch : v)
    if (ch == '/' || ch == '\\' || ch == ' ' || ch == ',' || ch == '\n') ch = '_';
  return v;
}

std::string quote_path(const std::string& p) {
  std::string out = "\"";
  for (char ch : p) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

struct Cell {
  std::vector<std::string> values;  // plain text per axis
  std::vector<RunResult> rows;
  std::string status = "ok";        // ok | failed: <reason>
};

// One cell's comparison: read the config again with the cell's values, then run_compare into its
// directory (--resume: a finished cell's results.csv is read back, an interrupted one continues).
// A cell that cannot run becomes rows with its reason.
Cell run_cell(const Config& c, const std::vector<size_t>& point, const RunOptions& opt, const std::string& exe,
              const std::vector<std::string>& child_args) {
  Cell cell;
  std::vector<std::string> overrides = c.overrides;
  std::string name;
  for (size_t a = 0; a < c.sweep.size(); ++a) {
    const std::string& v = c.sweep[a].values[point[a]];
    overrides.push_back(c.sweep[a].key + "=" + v);
    cell.values.push_back(plain(v));
    name.append(a ? "," : "").append(c.sweep[a].key).append("=").append(plain(v));
  }
  const fs::path dir = fs::path(c.output.dir) / name;
  overrides.push_back("output.dir=" + quote_path(dir.string()));
  try {
    Config cc = parse_config(c.text, c.file, overrides);
    cc.sweep.clear();
    if (opt.resume && fs::exists(dir / "results.csv")) {
      cell.rows = read_results_csv((dir / "results.csv").string());
      for (auto& r : cell.rows) r.finished = true;
      spdlog::info("sweep: {} finished before: its results.csv is kept", name);
      return cell;
    }
    spdlog::info("sweep: cell {} -> {}", name, dir.string());
    RunOptions each = opt;
    each.keep_going = true;  // a model that fails is a row with its reason; the cell's others go on
    cell.rows = run_compare(cc, each, exe, child_args);
  } catch (const Error& e) {
    cell.status = str("failed: ", e.what());
    spdlog::warn("sweep: cell {} failed ({}); the sweep goes on", name, e.what());
    for (const auto& m : c.models) {
      RunResult r;
      r.model = m.name;
      r.val_mse = r.test_mse = r.test_mae = r.train_seconds = r.step_ms = r.peak_rss_mib = kNaN;
      r.test_acc = c.data.is_token_task() ? kNaN : -1;
      r.finished = true;  // done with, as far as the sweep goes
      cell.rows.push_back(r);
    }
  }
  return cell;
}

std::string csv_text(std::string s) {
  for (auto& ch : s)
    if (ch == ',' || ch == '\n' || ch == '\r') ch = ch == ',' ? ';' : ' ';
  return s;
}

// results.csv: results_csv's first nine columns, then one per swept key, then test_acc (token
// tasks), then d_model (with match_params: the width chosen), then the cell's status, then the device.
std::string sweep_csv(const Config& c, const std::vector<Cell>& cells) {
  const bool token = c.data.is_token_task();
  std::string out;
  bool header = true;
  for (const auto& cell : cells) {
    std::vector<RunResult> rows = cell.rows;
    for (auto& r : rows) r.d_model = 0, r.test_acc = -1;  // their columns go after the swept keys
    std::istringstream lines(results_csv(rows));
    std::string line;
    std::getline(lines, line);
    line.erase(line.rfind(','));  // results_csv's last column, device, goes last here too
    if (header) {
      out += line;
      for (const auto& axis : c.sweep) out.append(",").append(axis.key);
      out += str(token ? ",test_acc" : "", c.match_params > 0 ? ",d_model" : "", ",status,device\n");
      header = false;
    }
    for (size_t i = 0; std::getline(lines, line); ++i) {
      line.erase(line.rfind(','));
      out += line;
      for (const auto& v : cell.values) out.append(",").append(v);
      if (token) out.append(",").append(fmt("%.9g", cell.rows[i].test_acc));
      if (c.match_params > 0) out.append(",").append(std::to_string(cell.rows[i].d_model));
      const std::string& why = cell.rows[i].failed;
      out.append(",").append(csv_text(why.empty() ? cell.status : "failed: " + why));
      out.append(",").append(cell.rows[i].device).append("\n");
    }
  }
  return out;
}

// results.md: one row per model and cell, the swept values first.
std::string sweep_md(const Config& c, const std::vector<Cell>& cells) {
  const bool token = c.data.is_token_task(), width = c.match_params > 0;
  std::string out = "| model |", rule = "|---|";
  for (const auto& axis : c.sweep) out += " " + axis.key + " |", rule += "---:|";
  out += " params |";
  rule += "---:|";
  if (width) out += " d_model |", rule += "---:|";
  out += " ms/step | peak RSS MiB | val | test |";
  rule += "---:|---:|---:|---:|";
  if (token) out += " test_acc |", rule += "---:|";
  else out += " test_mae |", rule += "---:|";
  out += " status |\n" + rule + "---|\n";
  for (const auto& cell : cells)
    for (const auto& r : cell.rows) {
      out += "| " + r.model + " |";
      for (const auto& v : cell.values) out += " " + v + " |";
      out += str(" ", r.params, " |");
      if (width) out += str(" ", r.d_model, " |");
      out += str(" ", fmt("%.2f", r.step_ms), " | ", fmt("%.1f", r.peak_rss_mib), " | ", fmt("%.4f", r.val_mse), " | ",
                 fmt("%.4f", r.test_mse), " | ", fmt("%.4f", token ? r.test_acc : r.test_mae), " | ",
                 r.failed.empty() ? cell.status : "failed: " + r.failed, " |\n");
    }
  return out + str("\nval and test: ", token ? "cross-entropy (nats per scored token)" : "MSE on the scaled data",
                   ", at each run's best validation epoch (checkpoint-best.h5).\n");
}

}  // namespace

int64_t sweep_cells(const Config& c) {
  int64_t n = 1;
  for (const auto& axis : c.sweep) n *= static_cast<int64_t>(axis.values.size());
  return c.sweep.empty() ? 0 : n;
}

std::vector<RunResult> run_sweep(const Config& c, const RunOptions& opt, const std::string& exe,
                                 const std::vector<std::string>& child_args) {
  const int64_t n = sweep_cells(c);
  SEQLAB_CHECK(n <= kSweepLimit || opt.yes, c.file, ": [sweep]: ", n, " cells of ", c.models.size(),
               " model(s) each, more than ", kSweepLimit, "; pass --yes to run them all");
  fs::create_directories(c.output.dir);
  write_text_atomic(fs::path(c.output.dir) / "config.resolved.toml", to_toml(c));
  std::vector<Cell> cells;
  std::vector<RunResult> all;
  for (const auto& point : sweep_points(c.sweep)) {
    Cell cell = run_cell(c, point, opt, exe, child_args);
    all.insert(all.end(), cell.rows.begin(), cell.rows.end());
    // Interrupted (Ctrl-C) or stopped by an observer: the table keeps the finished cells only.
    for (const auto& r : cell.rows)
      if (!r.finished) return all;
    cells.push_back(std::move(cell));
    write_text_atomic(fs::path(c.output.dir) / "results.csv", sweep_csv(c, cells));  // after every cell
    write_text_atomic(fs::path(c.output.dir) / "results.md", sweep_md(c, cells));
  }
  spdlog::info("sweep: {} cells, results in {}", cells.size(), (fs::path(c.output.dir) / "results.csv").string());
  return all;
}

}  // namespace seqlab::app
