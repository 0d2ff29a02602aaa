// The seqlab command: CLI11 subcommands, spdlog logging. Library code throws seqlab::Error; this
// is the one place that catches it, logs it and returns non-zero.
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <thread>

#include "apps/config.h"
#include "apps/distributed.h"
#include "apps/predict.h"
#include "apps/report.h"
#include "apps/trainer.h"
#include "bench/step_bench.h"  // seqlab bench: BenchOptions, run_bench
#include "core/cuda/runtime.h"
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
  std::printf("devices:      cpu; cuda: %s\n", seqlab::cuda::describe_devices().c_str());
  std::printf("MPI:          %s (%d rank%s)\n", seqlab::app::dist::mpi_version().c_str(), seqlab::app::dist::size(),
              seqlab::app::dist::size() == 1 ? "" : "s");
}

// SIGINT (Ctrl-C) and SIGTERM: training stops after the current step with checkpoint-last.h5
// written and seqlab exits with 130; a second signal ends the process at once (SA_RESETHAND).
// SIGUSR1 is the same request, idempotent (no reset): how `seqlab compare` and `bench` pass a stop on
// to their children (apps/child.cpp), which may have had the terminal's SIGINT already.
extern "C" void on_interrupt(int) { seqlab::app::request_stop(); }

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction again {};
  again.sa_handler = on_interrupt;
  sigemptyset(&again.sa_mask);
  sigaction(SIGUSR1, &again, nullptr);
}

constexpr int kExitInterrupted = 130;  // 128 + SIGINT, what a shell reports for Ctrl-C

// One log line per error: a message never spans lines.
std::string one_line(std::string s) {
  for (auto& ch : s)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return s;
}

// The error line, also written to the file SEQLAB_ERROR_FILE names when set (seqlab compare sets it
// for each model's child, so that a failed model's row can say why).
void report_error(const std::string& line) {
  spdlog::error("{}", line);
  if (const char* path = std::getenv("SEQLAB_ERROR_FILE"); path && *path) {
    if (std::FILE* f = std::fopen(path, "w")) {
      std::fprintf(f, "%s\n", line.c_str());
      std::fclose(f);
    }
  }
}

// The command line: the subcommands and every option they take (parsed into these members).
struct Cli {
  CLI::App app{"seqlab: RNN, Transformer, S4 and Mamba sequence models trained side by side"};
  std::string log_level = "info";
  int threads = 0;
  CLI::Option* threads_opt = nullptr;
  CLI::App *info = nullptr, *train = nullptr, *compare = nullptr, *eval = nullptr, *predict = nullptr,
           *report = nullptr, *bench = nullptr;
  bool info_options = false;
  // train, compare
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false, in_process = false, yes = false;
  int jobs = 1;
  // eval (and its length extrapolation: the values are checked by the library, seqlab::Error, exit 1)
  std::string run_dir, split = "test", checkpoint = "best";
  std::string seq_lens, n_sequences, max_seconds, step_mode, key_distance, eval_device = "cpu";
  CLI::Option *split_opt = nullptr, *seq_lens_opt = nullptr;
  std::vector<CLI::Option*> seq_lens_only;  // options that apply only with --seq-lens
  // predict
  seqlab::app::PredictOptions predict_opt;
  // report
  std::vector<std::string> report_dirs;
  seqlab::app::ReportOptions report_opt;
  CLI::Option* report_window = nullptr;
  // bench
  seqlab::bench::BenchOptions bench_opt;

  Cli() {
    app.set_version_flag("--version", std::string("seqlab ") + SEQLAB_VERSION);
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
    threads_opt =
        app.add_option("--threads", threads, "worker threads (0: all cores; default: [train] threads of the config)")
            ->check(CLI::NonNegativeNumber);
    app.require_subcommand(1);
    info = app.add_subcommand("info", "version, build type, threads and BLAS");
    info->add_flag("--options", info_options, "print every layer type's options (docs/CONFIG.md's tables)");
    add_train_compare();
    add_eval();
    add_predict();
    add_report();
    add_bench();
  }
  bool threads_given() const { return threads_opt->count() > 0; }

 private:
  void add_train_compare() {
    train = app.add_subcommand("train", "train the [model] of a config into its [output] dir");
    train->add_option("config", config_path, "TOML config (docs/CONFIG.md)")->required();
    train->add_option("--set", overrides, "override a key: section.key=value (TOML value; repeatable)");
    train->add_flag("--resume", resume, "continue from checkpoint-last.h5 of the run directory");
    compare = app.add_subcommand("compare", "train every [[models]] entry on the same data and budget");
    compare->add_option("config", config_path, "TOML config with [[models]] (docs/CONFIG.md)")->required();
    compare->add_option("--set", overrides, "override a key: section.key=value or models.<n|name>.key=value");
    compare->add_flag("--resume", resume, "continue every model from its checkpoint-last.h5");
    compare->add_flag("--in-process", in_process, "train the models in this process (peak RSS is then cumulative)");
    compare->add_option("--jobs", jobs, "train up to N models at once, each in its own process (default 1; small "
                                        "models leave a GPU mostly idle)")
        ->check(CLI::Range(1, 256));
    compare->add_flag("--yes", yes, "run a [sweep] of more than 64 cells");
  }
  void add_eval() {
    eval = app.add_subcommand("eval", "evaluate checkpoint-best.h5 (or checkpoint-last.h5) of a run directory");
    eval->add_option("run_dir", run_dir, "a run directory (or a comparison's)")->required();
    eval->add_option("--checkpoint", checkpoint, "best (the best-validation epoch, default) or last (the last written)");
    split_opt = eval->add_option("--split", split, "val or test")->check(CLI::IsMember({"val", "test"}));
    eval->add_option("--device", eval_device, "cpu (default) or cuda: the model on the GPU (--seq-lens: the full "
                                              "forward at every length; step mode runs on the CPU only)");
    seq_lens_opt = eval->add_option("--seq-lens", seq_lens,
                                    "token tasks: accuracy on fresh sequences of these lengths (256,512,...,65536 "
                                    "or 2^8,2^16), written to extrapolation.csv");
    seq_lens_only = {
        eval->add_option("--n-sequences", n_sequences, "--seq-lens: sequences per length (default 64, fewer beyond 2^16)"),
        eval->add_option("--max-seconds", max_seconds,
                         "--seq-lens: skip a length projected to take longer, and every longer one (default 120)"),
        eval->add_option("--step", step_mode, "--seq-lens: auto (step mode beyond the training length), always or never"),
        eval->add_option("--key-distance", key_distance,
                         "--seq-lens, induction heads: the query comes this many positions after the first trigger "
                         "(default: random); to extrapolation-d<D>.csv")};
  }
  void add_predict() {
    predict = app.add_subcommand("predict", "forecast the pred_len steps after the last row of the data (the run's "
                                            "own, or --data) in the data's units");
    predict->add_option("run_dir", run_dir, "one model's run directory (a forecasting run)")->required();
    predict->add_option("--data", predict_opt.data, "a CSV with the training data's columns (default: the run's data)");
    predict->add_option("--out", predict_opt.out, "the forecast CSV (default: RUN_DIR/forecast.csv)");
    predict->add_option("--checkpoint", predict_opt.checkpoint, "best (default) or last");
    predict->add_option("--plot", predict_opt.plot, "also an SVG of the history and the forecast");
  }
  void add_report() {
    report = app.add_subcommand("report", "SVG pictures from run directories: learning curves, a test "
                                          "forecast, accuracy against sequence length, cost against "
                                          "accuracy; of a sweep: cost, time and memory against the swept value");
    report->add_option("run_dirs", report_dirs, "run directories of seqlab train or compare, or one sweep directory")
        ->required();
    report->add_option("--out", report_opt.out, "directory for the pictures (default: the first run directory)");
    report_window = report->add_option("--window", report_opt.window, "forecast.svg: the test window (default 0)");
    report->add_option("--channel", report_opt.channel,
                       "forecast.svg: a predicted column by name (default: the target, else the last)");
    report->add_flag("--scaled", report_opt.scaled, "forecast.svg: plot scaled values instead of the data's units");
  }
  void add_bench() {
    seqlab::bench::BenchOptions& o = bench_opt;
    bench = app.add_subcommand(
        "bench", "time one training step (forward, MSE, backward, AdamW) per model family and sequence length");
    bench->add_option("--models", o.models, "layer types of the registry (rnn, lstm, gru, transformer, s4d, s4, lssl, "
                                            "mamba, mlp, ...)")->delimiter(',');
    bench->add_option("--seq-lens", o.seq_lens, "sequence lengths T")->delimiter(',');
    bench->add_option("--batch", o.batch, "batch size B")->check(CLI::PositiveNumber);
    bench->add_option("--steps", o.steps, "timed steps per case (the median is reported)")->check(CLI::Range(1, 100000));
    bench->add_option("--warmup", o.warmup, "untimed steps before timing")->check(CLI::Range(0, 1000));
    bench->add_option("--threads", o.threads, "worker threads")->check(CLI::Range(1, 1024));
    bench->add_option("--device", o.device, "cpu or cuda (peak memory is then the device pool's peak)")
        ->check(CLI::IsMember({"cpu", "cuda"}));
    bench->add_option("--matmul-precision", o.matmul_precision,
                      "cuda: highest (strict fp32, the default), high (cuBLAS GEMMs on TF32 tensor cores) or "
                      "medium (on bfloat16 tensor cores)")
        ->check(CLI::IsMember({"highest", "high", "medium"}));
    bench->add_flag("--cuda-graph", o.cuda_graph,
                    "cuda: the training step captured once as a CUDA graph and replayed (one launch a step)");
    bench->add_option("--csv", o.csv, "write the results as CSV to FILE");
    bench->add_option("--single", o.single, "internal: run one case in this process")->expected(2)->group("");
  }
};

int run_train_command(const Cli& cli, seqlab::app::RunOptions opt) {
  auto config = seqlab::app::load_config(cli.config_path, cli.overrides);
  opt.data_parallel = true;  // under mpirun -np K: each global batch split over the K ranks
  auto r = seqlab::app::run_train(config, opt);
  if (r.interrupted) return kExitInterrupted;
  if (seqlab::app::dist::rank() == 0) std::printf("%s", seqlab::app::results_md({r}).c_str());
  return 0;
}

int run_compare_command(const Cli& cli, const seqlab::app::RunOptions& opt) {
  const bool root = seqlab::app::dist::rank() == 0;
  auto config = seqlab::app::load_config(cli.config_path, cli.overrides);
  if (!config.multi) spdlog::warn("{}: no [[models]]: comparing the one [model]", cli.config_path);
  std::vector<std::string> child_args = {"--log-level", root ? cli.log_level : "warn"};
  if (cli.threads_given()) child_args.insert(child_args.end(), {"--threads", std::to_string(cli.threads)});
  const std::string exe = cli.in_process ? "" : std::filesystem::read_symlink("/proc/self/exe").string();
  seqlab::app::RunOptions run_opt = opt;
  run_opt.yes = cli.yes;
  run_opt.jobs = cli.jobs;
  if (cli.jobs > 1 && cli.in_process) throw seqlab::Error("compare --jobs: needs child processes; drop --in-process");
  auto rows = config.sweep.empty() ? seqlab::app::run_compare(config, run_opt, exe, child_args)
                                   : seqlab::app::run_sweep(config, run_opt, exe, child_args);
  for (const auto& r : rows)
    if (r.interrupted) {
      spdlog::warn("compare: interrupted in model '{}'; rerun with --resume to continue", r.model);
      return kExitInterrupted;
    }
  if (root && config.sweep.empty()) std::printf("\n%s", seqlab::app::results_md(rows).c_str());
  if (root && !config.sweep.empty()) {
    std::ifstream md(std::filesystem::path(config.output.dir) / "results.md");
    std::printf("\n%s", std::string(std::istreambuf_iterator<char>(md), {}).c_str());
    std::printf("%s/results.csv: %zu rows of %lld cells\n", config.output.dir.c_str(), rows.size(),
                static_cast<long long>(seqlab::app::sweep_cells(config)));
  }
  return 0;
}

int run_eval_command(const Cli& cli) {
  const int threads = cli.threads_given() ? cli.threads : -1;
  if (cli.seq_lens_opt->count() == 0) {
    for (auto* o : cli.seq_lens_only)
      if (o->count() > 0) throw seqlab::Error("eval " + o->get_name() + ": applies only with --seq-lens");
    auto rows = seqlab::app::run_eval(cli.run_dir, cli.split, threads, cli.checkpoint, cli.eval_device);
    const char* s = cli.split.c_str();
    std::printf("| model | checkpoint | step | epochs | %s_mse | %s_mae | %s_acc |\n|---|---|---:|---:|---:|---:|---:|\n",
                s, s, s);
    for (const auto& r : rows)
      std::printf("| %s | %s | %lld | %lld | %.6f | %.6f | %s |\n", r.model.c_str(), r.checkpoint.c_str(),
                  static_cast<long long>(r.step), static_cast<long long>(r.epoch), r.mse, r.mae,
                  r.acc >= 0 ? std::to_string(r.acc).c_str() : "-");
    return 0;
  }
  if (cli.split_opt->count() > 0) throw seqlab::Error("eval --split: does not apply with --seq-lens (fresh sequences)");
  auto xo = seqlab::app::parse_extrapolate_options(cli.seq_lens, cli.n_sequences, cli.max_seconds, cli.step_mode,
                                                   cli.key_distance);
  xo.threads = threads;
  xo.checkpoint = cli.checkpoint;
  xo.device = cli.eval_device;
  auto rows = seqlab::app::run_extrapolation(cli.run_dir, xo);
  std::printf("%s", seqlab::app::extrapolation_md(rows).c_str());
  return seqlab::app::stop_requested() ? kExitInterrupted : 0;
}

// The parsed subcommand, run; what it returns is the exit status.
int run_command(Cli& cli) {
  const bool root = seqlab::app::dist::rank() == 0;
  (void)seqlab::active_isa();  // a bad SEQLAB_ISA fails here, before any work
  seqlab::set_num_threads(cli.threads);
  seqlab::app::RunOptions opt;
  opt.resume = cli.resume;
  opt.threads = cli.threads_given() ? cli.threads : -1;
  if (cli.info->parsed() && root) {
    if (cli.info_options) std::printf("%s", seqlab::app::layer_option_tables().c_str());
    else print_info();
  }
  if (cli.train->parsed()) return run_train_command(cli, opt);
  if (cli.compare->parsed()) return run_compare_command(cli, opt);
  if (cli.eval->parsed() && root) return run_eval_command(cli);
  if (cli.predict->parsed() && root) {
    const auto f = seqlab::app::run_predict(cli.run_dir, cli.predict_opt);
    std::printf("%s", seqlab::app::forecast_csv(f).c_str());
  }
  if (cli.report->parsed() && root) {
    cli.report_opt.window_given = cli.report_window->count() > 0;
    for (const auto& path : seqlab::app::run_report(cli.report_dirs, cli.report_opt)) std::printf("%s\n", path.c_str());
  }
  if (cli.bench->parsed()) seqlab::bench::run_bench(cli.bench_opt);
  return 0;
}

// Logs go to stderr (stdout carries only results); under mpirun rank 0 logs as asked, the others
// only warnings and errors, each line tagged with its rank.
void set_up_logging(const std::string& level) {
  namespace dist = seqlab::app::dist;
  spdlog::set_level(spdlog::level::from_str(level));
  if (dist::size() > 1) {
    spdlog::set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {}] [%^%l%$] %v", dist::rank()));
    if (dist::rank() != 0) spdlog::set_level(std::max(spdlog::level::warn, spdlog::level::from_str(level)));
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun: MPI starts here (docs/DISTRIBUTED.md); otherwise a single process as always.
  namespace dist = seqlab::app::dist;
  dist::Session mpi(argc, argv);
  Cli cli;
  spdlog::set_default_logger(spdlog::stderr_color_mt("seqlab"));
  try {
    cli.app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.app.exit(e);
  }
  set_up_logging(cli.log_level);
  install_interrupt_handler();
  try {
    return run_command(cli);
  } catch (const seqlab::Error& e) {
    report_error(one_line(e.what()));
    if (dist::size() > 1) dist::abort(1);  // the other ranks may be waiting in a collective
    return 1;
  } catch (const std::bad_alloc&) {
    // Tensors say what they were allocating (seqlab::Error above); this is any other buffer.
    report_error("out of memory (a workspace outside the tensors; lower the batch size or sequence length)");
    if (dist::size() > 1) dist::abort(1);
    return 1;
  } catch (const std::exception& e) {
    report_error("internal error: " + one_line(e.what()));
    if (dist::size() > 1) dist::abort(2);
    return 2;
  }
}
