// `seqlab compare`: every [[models]] entry trained on the same data and budget, each in a child
// process of its own (so each peak RSS is its own) or in this process (--in-process), dealt
// round-robin to the ranks under mpirun; one table of all of them.
#include "apps/run.h"
#include "core/cuda/runtime.h"
#include "apps/trainer.h"

#include <sys/wait.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <csignal>
#include <sstream>
#include <thread>

#include "apps/checkpoint.h"
#include "apps/child.h"
#include "apps/distributed.h"
#include "core/error.h"


namespace seqlab::app {
namespace fs = std::filesystem;

namespace {

// Model i of c trained by `exe train` in a child process of its own (its own peak RSS; a crash in one
// model stops only that one); its row read back from the run directory.
RunResult train_in_child(const Config& c, size_t i, const std::string& exe, const std::vector<std::string>& child_args,
                         const std::vector<std::string>& child_env, bool resume) {
  const ModelConfig& mc = c.models[i];
  const fs::path sub = fs::path(c.output.dir) / mc.name;
  fs::create_directories(sub);
  const fs::path sub_config = sub / "config.resolved.toml";
  write_text_atomic(sub_config, to_toml_single(c, i, sub.string()));
  std::vector<std::string> args = {exe};
  args.insert(args.end(), child_args.begin(), child_args.end());
  args.push_back("train");
  args.push_back(sub_config.string());
  if (resume) args.push_back("--resume");
  // The child's stdout (its one-row table) is dropped: the combined table is printed at the end;
  // its error line, if it fails, goes to error.txt for the message below.
  const fs::path error_file = sub / "error.txt";
  std::error_code ec;
  fs::remove(error_file, ec);
  std::vector<std::string> env = child_env;
  env.push_back("SEQLAB_ERROR_FILE=" + error_file.string());
  const ChildOutcome child = run_child(args, &env, false);
  const int status = child.status;
  if ((WIFEXITED(status) && WEXITSTATUS(status) == 130) || (WIFSIGNALED(status) && WTERMSIG(status) == SIGINT)) {
    RunResult r;  // the child was interrupted (Ctrl-C) and wrote its checkpoint-last.h5
    r.model = mc.name;
    r.interrupted = true;
    return r;
  }
  if (!child.exited_ok()) {
    std::string why;
    if (std::ifstream in(error_file); in) std::getline(in, why);
    throw Error(str("compare: model '", mc.name, "' failed (", child.describe(), why.empty() ? "" : ": " + why,
                    "); its run directory is ", sub.string(), "; rerun with --resume to continue"));
  }
  auto r = read_results_csv((sub / "results.csv").string());
  SEQLAB_CHECK(r.size() == 1, (sub / "results.csv").string(), ": expected one row");
  if (c.data.is_token_task()) {
    Metrics m = read_metrics(sub / "metrics.h5");
    r[0].test_acc = at(m, "test_acc", best_epoch(m));
  }
  r[0].finished = true;
  return r[0];
}

// Under mpirun: every rank's rows (model index first, one tab-separated line each, every number
// exact: %.17g, the failure reason or "-" last) gathered on rank 0 in model order; other ranks get no rows.
std::vector<RunResult> gather_rows(const Config& c, const std::vector<RunResult>& rows,
                                   const std::vector<size_t>& row_index) {
  std::string mine;
  for (size_t k = 0; k < rows.size(); ++k) {
    const RunResult& r = rows[k];
    mine += str(row_index[k], "\t", r.model, "\t", r.params, "\t", r.epochs);
    for (double v : {r.train_seconds, r.step_ms, r.peak_rss_mib, r.val_mse, r.test_mse, r.test_mae, r.test_acc})
      mine += '\t', mine += fmt("%.17g", v);
    std::string why = r.failed.empty() ? "-" : r.failed;  // never empty: a trailing empty field is lost
    std::replace(why.begin(), why.end(), '\t', ' ');
    std::replace(why.begin(), why.end(), '\n', ' ');
    mine += '\t' + why + "\n";
  }
  auto all = dist::gather(mine);
  if (dist::rank() != 0) return {};
  std::vector<RunResult> merged(c.models.size());
  std::vector<bool> seen(c.models.size(), false);
  for (const std::string& part : all) {
    std::stringstream ss(part);
    for (std::string line; std::getline(ss, line);) {
      std::vector<std::string> f;
      std::stringstream ls(line);
      for (std::string x; std::getline(ls, x, '\t');) f.push_back(x);
      SEQLAB_CHECK(f.size() == 12, "compare: a malformed row from another rank: '", line, "'");
      const auto i = static_cast<size_t>(std::stoull(f[0]));
      SEQLAB_CHECK(i < merged.size() && !seen[i], "compare: row ", i, " from another rank is out of place");
      RunResult& r = merged[i];
      r.model = f[1];
      r.params = std::stoll(f[2]);
      r.epochs = std::stoll(f[3]);
      double* v[] = {&r.train_seconds, &r.step_ms, &r.peak_rss_mib, &r.val_mse, &r.test_mse, &r.test_mae, &r.test_acc};
      for (size_t k = 0; k < 7; ++k) *v[k] = std::stod(f[4 + k]);
      if (f[11] != "-") r.failed = f[11];
      r.finished = true;
      seen[i] = true;
    }
  }
  for (size_t i = 0; i < seen.size(); ++i)
    SEQLAB_CHECK(seen[i], "compare: no result for model '", c.models[i].name, "' from rank ",
                 i % static_cast<size_t>(dist::size()));
  return merged;
}

// The row of a model that could not run: its reason, every figure NaN.
RunResult failed_row(const Config& c, const std::string& name, const std::string& why) {
  RunResult r;
  r.model = name;
  r.val_mse = r.test_mse = r.test_mae = r.train_seconds = r.step_ms = r.peak_rss_mib = kNaN;
  r.test_acc = c.data.is_token_task() ? kNaN : -1;
  r.failed = why;
  r.device = c.train.device;
  r.finished = true;  // done with, as far as the comparison goes
  return r;
}

}  // namespace

std::vector<RunResult> run_compare(const Config& config, const RunOptions& opt, const std::string& exe,
                                   const std::vector<std::string>& child_args) {
  Config c = config;
  // Without a usable GPU: one line and exit 1, before any model starts (not a failed row per model).
  if (c.train.device == "cuda") cuda::require(str(c.file, ": [train] device = \"cuda\""));
  match_params(c);  // [sweep] match_params: the widths, before anything is written
  const fs::path dir(c.output.dir);
  // Under mpirun the runs are dealt round-robin to the ranks, each trained single-process by the
  // rank that owns it; rank 0 writes the comparison's own files and gathers the rows.
  const int n_ranks = dist::size(), me = dist::rank();
  fs::create_directories(dir);
  if (me == 0) write_text_atomic(dir / "config.resolved.toml", to_toml(c));
  // Children run single-process: no MPI launcher variables.
  const std::vector<std::string> child_env = dist::environment_without_launcher();
  RunOptions run_opt = opt;
  run_opt.data_parallel = false;
  std::vector<RunResult> rows;
  std::vector<size_t> row_index;  // model index of each row
  auto t0 = Clock::now();
  SEQLAB_CHECK(opt.jobs >= 1, "compare --jobs: expected an integer >= 1, got ", opt.jobs);
  // Model i, in this process or a child; a failure is a row with its reason under keep_going.
  auto run_one = [&](size_t i) -> RunResult {
    const ModelConfig& mc = c.models[i];
    const fs::path sub = dir / mc.name;
    if (stop_requested()) {  // interrupted while another model trained (--jobs): start no more
      RunResult r;
      r.model = mc.name;
      r.interrupted = true;
      return r;
    }
    spdlog::info("compare: model {}/{} '{}' ({}) -> {}", i + 1, c.models.size(), mc.name, mc.type, sub.string());
    try {
      return exe.empty() ? train_model(c, i, sub.string(), run_opt)
                         : train_in_child(c, i, exe, child_args, child_env, opt.resume);
    } catch (const Error& e) {
      if (!opt.keep_going) throw;
      spdlog::warn("{}; the other models go on", e.what());
      return failed_row(c, mc.name, e.what());
    }
  };
  if (opt.jobs > 1 && !exe.empty() && n_ranks == 1 && c.models.size() > 1) {
    // --jobs N: up to N children at once (small models leave a GPU, or many cores, mostly idle); a
    // thread per running child waits for it. Rows stay in model order; Ctrl-C reaches every child;
    // without keep_going the first failure (in model order) is rethrown once every child has ended.
    rows.resize(c.models.size());
    std::vector<std::exception_ptr> errors(c.models.size());
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t i; (i = next++) < c.models.size();) {
        try {
          rows[i] = run_one(i);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      }
    };
    std::vector<std::thread> pool;
    for (int k = 0; k < std::min<int>(opt.jobs, static_cast<int>(c.models.size())); ++k) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    for (const auto& r : rows)
      if (!r.finished) return rows;  // interrupted (Ctrl-C)
  } else {
    for (size_t i = 0; i < c.models.size(); ++i) {
      if (static_cast<int>(i % static_cast<size_t>(n_ranks)) != me) continue;
      row_index.push_back(i);
      rows.push_back(run_one(i));
      if (!rows.back().finished) return rows;  // interrupted (Ctrl-C) or stopped by an observer
    }
  }
  if (n_ranks > 1) {
    rows = gather_rows(c, rows, row_index);
    if (me != 0) return {};
  }
  if (c.match_params > 0)
    for (size_t i = 0; i < rows.size(); ++i) rows[i].d_model = c.models[i].d_model;
  // A model that failed (keep_going): no table here, so that --resume tries the comparison again.
  for (const auto& r : rows)
    if (!r.failed.empty()) return rows;
  write_text_atomic(dir / "results.csv", results_csv(rows));
  write_text_atomic(dir / "results.md", results_md(rows));
  spdlog::info("compare: {} models in {} (results in {})", rows.size(), time_str(seconds_since(t0)),
               (dir / "results.md").string());
  return rows;
}

}  // namespace seqlab::app
