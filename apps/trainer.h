// Training runs from a Config: `seqlab train` (one model), `seqlab compare` (every [[models]] entry
// on the same data, optimizer, seed and budget, each in its own subdirectory, then one table) and
// `seqlab eval`. A run directory holds config.resolved.toml, metrics.h5, checkpoint-best.h5,
// checkpoint-last.h5, results.csv and results.md (docs/CONFIG.md, "Run directory").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "apps/config.h"
#include "core/tensor.h"
#include "data/forecast.h"
#include "layers/model.h"
#include "layers/module.h"

namespace seqlab::app {

/// Watches a training run at fixed points (tests steer runs through it: record losses, stop as if
/// killed, poison a gradient). Every hook does nothing by default.
class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  /// After backward and the data-parallel all-reduce of global step `step` (1-based), before the
  /// non-finite check.
  virtual void after_backward(const nn::Module& /*model*/, int64_t /*step*/) {}
  /// After step `step` with its loss; `applied`: the update was applied (not skipped as non-finite).
  virtual void on_step(int64_t /*step*/, double /*loss*/, bool /*applied*/) {}
  /// Asked after each step: true ends the run there, as if the process were killed (nothing after
  /// the last checkpoint is kept).
  virtual bool should_stop(int64_t /*step*/) { return false; }
  /// A finished run's model (every rank), after the run directory is written.
  virtual void on_finish(const nn::Module& /*model*/) {}
};

struct RunOptions {
  bool resume = false;          // continue from checkpoint-last.h5 when there is one
  int threads = -1;             // --threads when given (wins over [train] threads); -1: from the config
  bool quiet = false;           // no progress bar, no per-epoch log lines (tests)
  bool data_parallel = false;   // under mpirun: split each global batch over the ranks (seqlab train)
  TrainObserver* observer = nullptr;
  bool yes = false;             // compare: run a [sweep] of more than kSweepLimit cells
  bool keep_going = false;      // compare (a sweep's cell): a model that fails becomes a row with its reason
  int jobs = 1;                 // compare: models trained at once, each in its own child process
};

/// One row of the results table.
struct RunResult {
  std::string model;
  int64_t params = 0;
  int64_t epochs = 0;          // epochs completed
  double train_seconds = 0;    // wall time of the training steps (evaluation excluded)
  double step_ms = 0;          // train_seconds / steps
  double peak_rss_mib = 0;     // getrusage ru_maxrss of the process that trained it
  double val_mse = 0;          // at the best validation epoch (token tasks: cross-entropy)
  double test_mse = 0;         // at the best validation epoch (token tasks: cross-entropy)
  double test_mae = 0;         // at the best validation epoch (token tasks: NaN)
  double test_acc = -1;        // token tasks: token accuracy at the best epoch; -1 otherwise
  bool finished = false;       // false when stopped by an observer or request_stop()
  bool interrupted = false;    // stopped by request_stop() (SIGINT) after writing checkpoint-last.h5
  int64_t skipped_steps = 0;   // steps skipped for a non-finite loss or gradient ([train] on_nonfinite = "skip")
  int64_t d_model = 0;         // [sweep] match_params: the width chosen; 0 when widths were not matched
  std::string failed;          // compare with keep_going: why this model could not run ("" when it ran)
  std::string device = "cpu";  // where it trained ([train] device)
};

/// Asks train_model to stop after the current step, writing checkpoint-last.h5 first (`--resume`
/// continues from it). Async-signal-safe: main()'s SIGINT/SIGTERM handler calls it.
void request_stop() noexcept;
/// Whether request_stop() was called.
bool stop_requested() noexcept;

/// Trains model `index` of `config` into `dir` (created); writes every file of a run directory.
RunResult train_model(const Config& config, size_t index, const std::string& dir, const RunOptions& opt);
/// `seqlab train`: the config's single model into [output] dir. With opt.data_parallel under
/// mpirun: data-parallel over the ranks; only rank 0 writes the run directory.
RunResult run_train(const Config& config, const RunOptions& opt);
/// `seqlab compare`: every model in turn into [output] dir/<name>, then results.csv/.md in
/// [output] dir. Under mpirun the models are dealt round-robin to the ranks (each trains its own
/// single-process) and rank 0 gathers the rows and writes the table; other ranks return no rows. With `exe` non-empty each model trains in a child process `exe train ...`
/// (so peak RSS is per model); otherwise in this process.
std::vector<RunResult> run_compare(const Config& config, const RunOptions& opt, const std::string& exe = "",
                                   const std::vector<std::string>& child_args = {});
/// A [sweep] of more cells than this needs --yes.
inline constexpr int64_t kSweepLimit = 64;
/// The cells of c's [sweep] (the product of its value counts; 0 without one).
int64_t sweep_cells(const Config& c);
/// `seqlab compare` with a [sweep]: run_compare for every point of the product, each in
/// <output dir>/<key=value,...>/; results.csv in the output dir holds every row with one column per
/// swept key and the cell's status (ok, or failed: the reason) at the end, rewritten after each cell.
/// A cell that cannot run becomes rows with its reason and the sweep goes on; with opt.resume a
/// finished cell is read back and an interrupted one continues. Throws (nothing run) when the
/// product exceeds kSweepLimit without opt.yes.
std::vector<RunResult> run_sweep(const Config& c, const RunOptions& opt, const std::string& exe = "",
                                 const std::vector<std::string>& child_args = {});
/// `seqlab eval`: evaluates checkpoint-best.h5 (or checkpoint-last.h5: checkpoint "last") of a run
/// directory (or of each model of a comparison) on `split` (val | test); one row per model.
struct EvalRow {
  std::string model;
  double mse = 0, mae = 0, acc = -1;
  std::string checkpoint;  // best | last
  int64_t step = 0;        // the optimizer steps the checkpoint had taken
  int64_t epoch = 0;       // the epochs it had finished
};
/// device "cuda": the model is moved to the GPU (built with CUDA and one usable), batches follow it.
std::vector<EvalRow> run_eval(const std::string& run_dir, const std::string& split, int threads = -1,
                              const std::string& checkpoint = "best", const std::string& device = "cpu");
/// Checks an eval --device value (cpu | cuda) and, for cuda, that a GPU is usable; throws naming `what`.
void check_eval_device(const std::string& device, const std::string& what);
/// Checks a --checkpoint / init_checkpoint value: "best" or "last"; throws naming `what`.
void check_checkpoint_choice(const std::string& which, const std::string& what);

/// Token accuracy's counting, shared by the full-forward and the step-mode evaluation: of `rows` rows
/// of logits (each V floats, row r at logits + r * V) whose target (targets[r * target_stride]) is not
/// data::kIgnoreIndex, how many are scored and how many have the target as their first largest logit.
struct TokenHits {
  int64_t scored = 0, correct = 0;
};
TokenHits count_token_hits(const float* logits, int64_t rows, int64_t V, const int32_t* targets,
                           int64_t target_stride = 1);

/// `seqlab eval RUN_DIR --seq-lens ...` (token tasks): accuracy of checkpoint-best.h5 (or -last) on fresh
/// sequences of other lengths than the training one (length extrapolation, Mamba paper Table 2).
struct ExtrapolateOptions {
  std::vector<int64_t> seq_lens;  // evaluated in increasing order (duplicates dropped)
  int64_t n_sequences = 0;        // sequences per length; 0: default_sequences(T)
  double max_seconds = 120;       // a length projected (or seen) to take longer is skipped, and every longer one
  std::string step = "auto";      // auto: step mode beyond the training length; always; never (full forward)
  int64_t key_distance = 0;       // induction heads: > 0 fixes the trigger-to-query distance (0: random)
  std::string checkpoint = "best";  // best | last
  int threads = -1;               // -1: [train] threads of the run's config
  std::string device = "cpu";     // cpu | cuda: the full forward on the GPU (step mode runs on the CPU only)
};
/// One row of extrapolation.csv.
struct ExtrapolationRow {
  std::string model;
  int64_t seq_len = 0, n_sequences = 0;
  double accuracy = 0;            // fraction of scored tokens predicted exactly (argmax); NaN when not run
  double seconds = 0;             // wall time of the evaluation (data generation excluded)
  double peak_rss_mib = 0;        // process peak RSS (VmHWM, reset before each length); NaN when not run
  double alloc_peak_mib = 0;      // the tensor allocator's peak during this length (printed, not in the CSV)
  std::string mode;               // step | forward
  int64_t key_distance = 0;       // induction heads: the fixed trigger-to-query distance, 0 = random
  std::string checkpoint;         // best | last: which checkpoint was evaluated
  int64_t step = 0;               // the optimizer steps that checkpoint had taken
  std::string status;             // ok | skipped: time limit | memory limit | no step mode | interrupted | failed at T | failed: ...
  std::string device = "cpu";     // where it ran: cpu | cuda (alloc_peak_mib is then the device pool's peak)
};
/// The default number of sequences at length T: 64 up to 2^16, then 2^22 / T, at least 16.
int64_t default_sequences(int64_t seq_len);
/// Parses --seq-lens: "256,512,1024", powers "2^8,2^10", and "256,512,...,65536" (a geometric series
/// with the ratio of the two terms before "..." up to the last term). Throws naming --seq-lens.
std::vector<int64_t> parse_seq_lens(const std::string& text);
/// Builds options from the command line's strings (each may be empty: the default); throws
/// seqlab::Error naming the option and what was expected.
ExtrapolateOptions parse_extrapolate_options(const std::string& seq_lens, const std::string& n_sequences,
                                             const std::string& max_seconds, const std::string& step,
                                             const std::string& key_distance = "");
/// The file extrapolation rows go to: extrapolation.csv, or extrapolation-d<D>.csv with a fixed key distance D.
std::string extrapolation_file(const ExtrapolateOptions& opt);
/// Evaluates a token-task run (or every model of a comparison) at opt.seq_lens; writes
/// extrapolation.csv into each model's directory (and the combined rows into a comparison's),
/// rewritten after every length. Inputs are checked before anything runs. After request_stop()
/// (Ctrl-C) the remaining lengths are marked "skipped: interrupted".
std::vector<ExtrapolationRow> run_extrapolation(const std::string& run_dir, const ExtrapolateOptions& opt);
/// model,seq_len,n_sequences,accuracy,seconds,peak_rss_mib,mode,status,key_distance,checkpoint,step,device
std::string extrapolation_csv(const std::vector<ExtrapolationRow>& rows);
/// A Markdown table of the rows (with the allocator peak).
std::string extrapolation_md(const std::vector<ExtrapolationRow>& rows);

/// One model's run directory rebuilt from its config.resolved.toml: the data as it was trained on
/// (the scaler refitted and checked against the checkpoint's) and the model with checkpoint-best.h5
/// (checkpoint "best") or checkpoint-last.h5 ("last") loaded, in eval mode. Used by `seqlab eval`
/// and `seqlab report`.
struct LoadedRun {
  Config config;
  std::shared_ptr<nn::SequenceModel> model;
  bool token = false;
  data::ForecastData fc;                    // forecasting: the splits, scaler and windows
  std::vector<std::string> columns, dates;  // forecasting: the series' column names and dates (may be empty)
  std::vector<data::Batch> val_batches, test_batches;  // token tasks: the fixed evaluation sets
  std::string checkpoint;                   // best | last
  int64_t step = 0, epoch = 0;              // the checkpoint's optimizer steps and finished epochs
};
/// Loads `run_dir` (one model, not a comparison); throws seqlab::Error naming the missing or
/// mismatching file.
LoadedRun load_run_model(const std::string& run_dir, const std::string& checkpoint = "best");

/// The results table: CSV (the columns model,params,...,test_mae, then d_model when some row's
/// width was matched) and Markdown (with test_acc after them for token tasks).
std::string results_csv(const std::vector<RunResult>& rows);
std::string results_md(const std::vector<RunResult>& rows);
/// Reads a results.csv written by results_csv (or by a sweep: columns after the first nine are
/// ignored but d_model).
std::vector<RunResult> read_results_csv(const std::string& path);

}  // namespace seqlab::app
