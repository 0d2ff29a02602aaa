// The seqlab command: CLI11 subcommands, spdlog logging. Library code throws seqlab::Error; this
// is the one place that catches it, logs it and returns non-zero.
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <new>
#include <thread>

#include "apps/config.h"
#include "apps/distributed.h"
#include "apps/report.h"
#include "apps/trainer.h"
#include "bench/step_bench.h"
#include "core/error.h"
#include "core/isa.h"
#include "core/parallel.h"

namespace {

void print_info() {
  std::printf("seqlab %s\n", SEQLAB_VERSION);
  std::printf("build type:   %s\n", SEQLAB_BUILD_TYPE);
  std::printf("ISA path:     %s (this CPU: %s; SEQLAB_ISA=avx512|avx2|generic forces a narrower one)\n",
              seqlab::isa_name(seqlab::active_isa()), seqlab::isa_name(seqlab::detected_isa()));
  std::printf("compiler:     %s\n", __VERSION__);
  std::printf("threads:      %d (TBB pool; %u hardware threads)\n", seqlab::num_threads(),
              std::thread::hardware_concurrency());
  std::printf("BLAS:         %s\n", openblas_get_config());
  std::printf("BLAS threads: %d (GEMMs are split over the TBB pool instead)\n", openblas_get_num_threads());
  std::printf("dtypes:       float32 (training), float64 (gradient checks)\n");
  std::printf("devices:      cpu\n");
  std::printf("MPI:          %s (%d rank%s)\n", seqlab::app::dist::mpi_version().c_str(), seqlab::app::dist::size(),
              seqlab::app::dist::size() == 1 ? "" : "s");
}

// SIGINT (Ctrl-C) and SIGTERM: training stops after the current step with checkpoint-last.h5
// written and seqlab exits with 130; a second signal ends the process at once (SA_RESETHAND).
extern "C" void on_interrupt(int) { seqlab::app::request_stop(); }

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

constexpr int kExitInterrupted = 130;  // 128 + SIGINT, what a shell reports for Ctrl-C

// One log line per error: a message never spans lines.
std::string one_line(std::string s) {
  for (auto& ch : s)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun: MPI starts here (docs/DISTRIBUTED.md); otherwise a single process as always.
  namespace dist = seqlab::app::dist;
  dist::Session mpi(argc, argv);
  CLI::App app{"seqlab: RNN, Transformer, S4 and Mamba sequence models trained side by side"};
  app.set_version_flag("--version", std::string("seqlab ") + SEQLAB_VERSION);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  int threads = 0;
  auto* threads_opt =
      app.add_option("--threads", threads, "worker threads (0: all cores; default: [train] threads of the config)")
          ->check(CLI::NonNegativeNumber);
  app.require_subcommand(1);

  auto* info = app.add_subcommand("info", "version, build type, threads and BLAS");
  bool info_options = false;
  info->add_flag("--options", info_options, "print every layer type's options (docs/CONFIG.md's tables)");

  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false;
  auto* train = app.add_subcommand("train", "train the [model] of a config into its [output] dir");
  train->add_option("config", config_path, "TOML config (docs/CONFIG.md)")->required();
  train->add_option("--set", overrides, "override a key: section.key=value (TOML value; repeatable)");
  train->add_flag("--resume", resume, "continue from checkpoint-last.h5 of the run directory");

  bool in_process = false;
  auto* compare = app.add_subcommand("compare", "train every [[models]] entry on the same data and budget");
  compare->add_option("config", config_path, "TOML config with [[models]] (docs/CONFIG.md)")->required();
  compare->add_option("--set", overrides, "override a key: section.key=value or models.<n|name>.key=value");
  compare->add_flag("--resume", resume, "continue every model from its checkpoint-last.h5");
  compare->add_flag("--in-process", in_process, "train the models in this process (peak RSS is then cumulative)");

  std::string run_dir, split = "test";
  auto* eval = app.add_subcommand("eval", "evaluate checkpoint-best.h5 (or checkpoint-last.h5) of a run directory");
  eval->add_option("run_dir", run_dir, "a run directory (or a comparison's)")->required();
  std::string checkpoint = "best";
  eval->add_option("--checkpoint", checkpoint, "best (the best-validation epoch, default) or last (the last written)");
  auto* split_opt = eval->add_option("--split", split, "val or test")->check(CLI::IsMember({"val", "test"}));
  // Length extrapolation (token tasks); the values are checked by the library (seqlab::Error, exit 1).
  std::string seq_lens, n_sequences, max_seconds, step_mode, key_distance;
  auto* seq_lens_opt = eval->add_option("--seq-lens", seq_lens,
                                        "token tasks: accuracy on fresh sequences of these lengths (256,512,...,65536 "
                                        "or 2^8,2^16), written to extrapolation.csv");
  auto* n_sequences_opt = eval->add_option("--n-sequences", n_sequences,
                                           "--seq-lens: sequences per length (default 64, fewer beyond 2^16)");
  auto* max_seconds_opt = eval->add_option("--max-seconds", max_seconds,
                                           "--seq-lens: skip a length projected to take longer, and every longer one "
                                           "(default 120)");
  auto* step_opt = eval->add_option("--step", step_mode,
                                    "--seq-lens: auto (step mode beyond the training length), always or never");
  auto* key_distance_opt = eval->add_option("--key-distance", key_distance,
                                            "--seq-lens, induction heads: the query comes this many positions after "
                                            "the first trigger (default: random); to extrapolation-d<D>.csv");

  std::vector<std::string> report_dirs;
  seqlab::app::ReportOptions report_opt;
  auto* report = app.add_subcommand("report", "SVG pictures from run directories: learning curves, a test "
                                              "forecast, accuracy against sequence length");
  report->add_option("run_dirs", report_dirs, "run directories of seqlab train or compare")->required();
  report->add_option("--out", report_opt.out, "directory for the pictures (default: the first run directory)");
  auto* report_window = report->add_option("--window", report_opt.window, "forecast.svg: the test window (default 0)");
  report->add_option("--channel", report_opt.channel,
                     "forecast.svg: a predicted column by name (default: the target, else the last)");
  report->add_flag("--scaled", report_opt.scaled, "forecast.svg: plot scaled values instead of the data's units");

  seqlab::bench::add_bench_subcommand(app);  // `seqlab bench`: runs from its own callback

  // Logs and the progress bar go to stderr; stdout carries only results (tables).
  spdlog::set_default_logger(spdlog::stderr_color_mt("seqlab"));
  // `seqlab bench` runs from its subcommand's callback, inside parse(): its errors end here too.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const seqlab::Error& e) {
    spdlog::error("{}", one_line(e.what()));
    return 1;
  } catch (const std::bad_alloc&) {
    spdlog::error("out of memory (a workspace outside the tensors; lower the batch size or sequence length)");
    return 1;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  const bool root = dist::rank() == 0;
  if (dist::size() > 1) {
    // Rank 0 logs as asked; the others only warnings and errors, each line tagged with its rank.
    spdlog::set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {}] [%^%l%$] %v", dist::rank()));
    if (!root) spdlog::set_level(std::max(spdlog::level::warn, spdlog::level::from_str(log_level)));
  }
  const bool threads_given = threads_opt->count() > 0;
  install_interrupt_handler();
  try {
    (void)seqlab::active_isa();  // a bad SEQLAB_ISA fails here, before any work
    seqlab::set_num_threads(threads);
    seqlab::app::RunOptions opt;
    opt.resume = resume;
    opt.threads = threads_given ? threads : -1;
    if (info->parsed() && root) {
      if (info_options) std::printf("%s", seqlab::app::layer_option_tables().c_str());
      else print_info();
    }
    if (train->parsed()) {
      auto config = seqlab::app::load_config(config_path, overrides);
      opt.data_parallel = true;  // under mpirun -np K: each global batch split over the K ranks
      auto r = seqlab::app::run_train(config, opt);
      if (r.interrupted) return kExitInterrupted;
      if (root) std::printf("%s", seqlab::app::results_md({r}).c_str());
    }
    if (compare->parsed()) {
      auto config = seqlab::app::load_config(config_path, overrides);
      if (!config.multi) spdlog::warn("{}: no [[models]]: comparing the one [model]", config_path);
      std::vector<std::string> child_args = {"--log-level", root ? log_level : "warn"};
      if (threads_given) child_args.insert(child_args.end(), {"--threads", std::to_string(threads)});
      auto rows = seqlab::app::run_compare(config, opt, in_process ? "" : std::filesystem::read_symlink("/proc/self/exe").string(), child_args);
      for (const auto& r : rows)
        if (r.interrupted) {
          spdlog::warn("compare: interrupted in model '{}'; rerun with --resume to continue", r.model);
          return kExitInterrupted;
        }
      if (root) std::printf("\n%s", seqlab::app::results_md(rows).c_str());
    }
    if (eval->parsed() && root && seq_lens_opt->count() == 0) {
      for (auto* o : {n_sequences_opt, max_seconds_opt, step_opt, key_distance_opt})
        if (o->count() > 0) throw seqlab::Error("eval " + o->get_name() + ": applies only with --seq-lens");
    }
    if (eval->parsed() && root && seq_lens_opt->count() > 0) {
      if (split_opt->count() > 0) throw seqlab::Error("eval --split: does not apply with --seq-lens (fresh sequences)");
      auto xo = seqlab::app::parse_extrapolate_options(seq_lens, n_sequences, max_seconds, step_mode, key_distance);
      xo.threads = threads_given ? threads : -1;
      xo.checkpoint = checkpoint;
      auto rows = seqlab::app::run_extrapolation(run_dir, xo);
      std::printf("%s", seqlab::app::extrapolation_md(rows).c_str());
      if (seqlab::app::stop_requested()) return kExitInterrupted;
    } else if (eval->parsed() && root) {
      auto rows = seqlab::app::run_eval(run_dir, split, threads_given ? threads : -1, checkpoint);
      std::printf("| model | checkpoint | step | epochs | %s_mse | %s_mae | %s_acc |\n|---|---|---:|---:|---:|---:|---:|\n",
                  split.c_str(), split.c_str(), split.c_str());
      for (const auto& r : rows)
        std::printf("| %s | %s | %lld | %lld | %.6f | %.6f | %s |\n", r.model.c_str(), r.checkpoint.c_str(),
                    static_cast<long long>(r.step), static_cast<long long>(r.epoch), r.mse, r.mae,
                    r.acc >= 0 ? std::to_string(r.acc).c_str() : "-");
    }
    if (report->parsed() && root) {
      report_opt.window_given = report_window->count() > 0;
      for (const auto& path : seqlab::app::run_report(report_dirs, report_opt)) std::printf("%s\n", path.c_str());
    }
  } catch (const seqlab::Error& e) {
    spdlog::error("{}", one_line(e.what()));
    if (dist::size() > 1) dist::abort(1);  // the other ranks may be waiting in a collective
    return 1;
  } catch (const std::bad_alloc&) {
    // Tensors say what they were allocating (seqlab::Error above); this is any other buffer.
    spdlog::error("out of memory (a workspace outside the tensors; lower the batch size or sequence length)");
    if (dist::size() > 1) dist::abort(1);
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("internal error: {}", one_line(e.what()));
    if (dist::size() > 1) dist::abort(2);
    return 2;
  }
  return 0;
}
