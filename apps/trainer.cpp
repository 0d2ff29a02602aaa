// The training loop: seeded model, optimizer and schedule from the config; each epoch trains on at
// most max_steps batches, evaluates on every validation and test example under NoGradGuard, keeps
// the best-validation checkpoint and stops after `patience` epochs without improvement. A resumed
// run restores parameters, optimizer moments, the default generator and the loader position, so it
// takes exactly the steps the uninterrupted run would have taken.
#include "apps/trainer.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <csignal>
#include <limits>
#include <memory>
#include <sstream>

#include "apps/checkpoint.h"
#include "apps/distributed.h"
#include "apps/run.h"
#include "autograd/ops.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/random.h"
#include "data/forecast.h"
#include "data/loader.h"
#include "layers/model.h"
#include "optim/clip.h"
#include "optim/schedule.h"


namespace seqlab::app {
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------------------------
// Progress: a bar redrawn in place on a terminal, nothing otherwise (the epoch lines are logged).

class Progress {
 public:
  Progress(bool enabled, std::string model, int64_t epochs, int64_t steps)
      : on_(enabled), model_(std::move(model)), epochs_(epochs), steps_(steps) {}
  void start_epoch(int64_t first_step) {
    t0_ = Clock::now();
    first_ = first_step;
    last_draw_ = {};
  }
  void update(int64_t epoch, int64_t step, double loss) {
    if (!on_) return;
    auto now = Clock::now();
    if (step < steps_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    double el = seconds_since(t0_);
    double rate = el > 0 ? static_cast<double>(step - first_) / el : 0;
    int64_t eta = rate > 0 ? static_cast<int64_t>(static_cast<double>(steps_ - step) / rate) : 0;
    const int width = 24;
    int fill = static_cast<int>(width * step / std::max<int64_t>(steps_, 1));
    std::string bar(static_cast<size_t>(fill), '#');
    bar.resize(width, '-');
    std::fprintf(stderr, "\r[%s] epoch %lld/%lld [%s] %lld/%lld loss %.5f %.1f steps/s ETA %lld:%02lld\x1b[K",
                 model_.c_str(), static_cast<long long>(epoch + 1), static_cast<long long>(epochs_), bar.c_str(),
                 static_cast<long long>(step), static_cast<long long>(steps_), loss, rate,
                 static_cast<long long>(eta / 60), static_cast<long long>(eta % 60));
    std::fflush(stderr);
  }
  void clear() {
    if (!on_) return;
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
  }

 private:
  bool on_;
  std::string model_;
  int64_t epochs_, steps_, first_ = 0;
  Clock::time_point t0_{}, last_draw_{};
};

// ---------------------------------------------------------------------------------------------
// Results.

const char* kMetricNames[] = {"train_loss", "val_loss", "val_mse", "val_mae", "test_mse", "test_mae", "seconds",
                              "eval_seconds", "lr"};

// ---------------------------------------------------------------------------------------------
// Checkpoint state of a run.

struct RunState {
  int64_t epoch = 0, batch = 0, global_step = 0, bad_epochs = 0;
  bool done = false;
  double best_val = std::numeric_limits<double>::infinity();
  double loss_sum = 0;       // running train loss of the current epoch
  int64_t loss_count = 0;
  double epoch_seconds = 0;  // training time of the current epoch so far
  double peak_rss = 0;       // MiB, the highest of the processes that worked on this run
  int64_t skipped = 0;       // steps skipped for a non-finite loss or gradient (on_nonfinite = "skip")
  Metrics metrics;
};

Checkpoint make_checkpoint(const nn::Module& model, const optim::Optimizer& opt, const TaskData& td, const RunState& s) {
  Checkpoint c;
  c.params = model.state_dict();
  c.optim = opt.state_dict();
  if (!td.token && td.fc.scaler.fitted()) c.scaler = td.fc.scaler.state();
  c.rng = default_generator().state();
  c.counters = {{"epoch", s.epoch},           {"batch", s.batch},
                {"global_step", s.global_step}, {"bad_epochs", s.bad_epochs},
                {"done", s.done ? 1 : 0},      {"loss_count", s.loss_count},
                {"skipped_steps", s.skipped}};
  c.values = {{"best_val_loss", s.best_val}, {"loss_sum", s.loss_sum}, {"epoch_seconds", s.epoch_seconds},
              {"peak_rss_mib", std::max(s.peak_rss, peak_rss_mib())}};
  c.metrics = s.metrics;
  return c;
}

int64_t counter(const Checkpoint& c, const std::string& path, const char* key) {
  auto it = c.counters.find(key);
  SEQLAB_CHECK(it != c.counters.end(), path, ": checkpoint has no counter '", key, "'");
  return it->second;
}

RunState restore(const Checkpoint& c, const std::string& path, nn::Module& model, optim::Optimizer& opt) {
  RunState s;
  s.epoch = counter(c, path, "epoch");
  s.batch = counter(c, path, "batch");
  s.global_step = counter(c, path, "global_step");
  s.bad_epochs = counter(c, path, "bad_epochs");
  s.done = counter(c, path, "done") != 0;
  s.loss_count = counter(c, path, "loss_count");
  if (c.counters.count("skipped_steps")) s.skipped = c.counters.at("skipped_steps");
  auto value = [&](const char* key) {
    auto it = c.values.find(key);
    SEQLAB_CHECK(it != c.values.end(), path, ": checkpoint has no value '", key, "'");
    return it->second;
  };
  s.best_val = value("best_val_loss");
  s.loss_sum = value("loss_sum");
  s.epoch_seconds = value("epoch_seconds");
  if (c.values.count("peak_rss_mib")) s.peak_rss = c.values.at("peak_rss_mib");
  s.metrics = c.metrics;
  try {
    model.load_state_dict(c.params);
    opt.load_state_dict(c.optim);
  } catch (const Error& e) {
    throw Error(str(path, ": does not match the config's model or optimizer: ", e.what()));
  }
  default_generator().set_state(c.rng);
  return s;
}

// [train] init_from: the parameters (only: the optimizer, counters and history start fresh) of a
// checkpoint file, of <dir>/<model name>/checkpoint-<which>.h5 (a compare run) or of
// <dir>/checkpoint-<which>.h5 (a single run), which = [train] init_checkpoint (best | last). Names
// and shapes must match the config's model; the sequence length may differ (curriculum: train
// short, continue long).
void warm_start(const Config& c, const std::string& name, nn::Module& model) {
  const fs::path from(c.train.init_from);
  fs::path file = from;
  if (fs::is_directory(from)) {
    const std::string ck_file = "checkpoint-" + c.train.init_checkpoint + ".h5";
    file = from / name / ck_file;
    if (!fs::exists(file)) file = from / ck_file;
    SEQLAB_CHECK(fs::exists(file), c.file, ": [train] init_from: ", from.string(), " holds neither ", name, "/",
                 ck_file, " nor ", ck_file);
  } else {
    SEQLAB_CHECK(fs::exists(from), c.file, ": [train] init_from: ", from.string(),
                 ": no such file (expected a checkpoint .h5 or a run directory)");
  }
  Checkpoint ck = load_checkpoint(file);
  try {
    model.load_state_dict(ck.params);
  } catch (const Error& e) {
    throw Error(str(c.file, ": [train] init_from: ", file.string(), " does not match the model of [", name, "]: ",
                    e.what()));
  }
  spdlog::info("[{}] parameters initialised from {} (step {}, epoch {})", name, file.string(),
               ck.counters.count("global_step") ? ck.counters.at("global_step") : 0,
               ck.counters.count("epoch") ? ck.counters.at("epoch") : 0);
}

// Tests (RunOptions::nonfinite_at_step): a NaN in the first parameter's gradient.
void poison_first_gradient(const nn::Module& m) {
  for (const auto& p : m.named_parameters()) {
    Tensor g = p.tensor.grad();
    if (!g.defined() || g.numel() == 0) continue;
    if (g.dtype() == DType::f32) g.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
    else if (g.dtype() == DType::f64) g.data<double>()[0] = kNaN;
    return;
  }
}

std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "request_stop() runs in a signal handler");

}  // namespace

void request_stop() noexcept { g_stop_requested.store(true); }
bool stop_requested() noexcept { return g_stop_requested.load(); }

// ---------------------------------------------------------------------------------------------

RunResult train_model(const Config& c, size_t index, const std::string& dir_str, const RunOptions& opt) {
  const ModelConfig& mc = c.models.at(index);
  const fs::path dir(dir_str);
  // Data-parallel under mpirun (docs/DISTRIBUTED.md): every rank trains on its slice of each global
  // batch; only rank 0 (the writer) writes the run directory.
  const bool dp = opt.data_parallel && dist::size() > 1;
  const bool writer = !dp || dist::rank() == 0;
  set_num_threads(opt.threads >= 0 ? opt.threads : static_cast<int>(c.train.threads));

  const std::string resolved = to_toml_single(c, index, dir.string());
  const fs::path last_path = dir / "checkpoint-last.h5", best_path = dir / "checkpoint-best.h5";
  const bool resuming = opt.resume && fs::exists(last_path);
  SEQLAB_CHECK(!dp || dist::all_equal(resuming), "[", mc.name, "] --resume: ", last_path.string(),
               " must be visible to every rank (a shared file system) or to none");
  if (resuming && fs::exists(dir / "config.resolved.toml")) {
    std::ifstream in(dir / "config.resolved.toml");
    std::stringstream old;
    old << in.rdbuf();
    if (old.str() != resolved)
      spdlog::warn("[{}] {}: the config differs from the one the run started with; the result may differ from an "
                   "uninterrupted run", mc.name, (dir / "config.resolved.toml").string());
  }
  if (opt.resume && !resuming) spdlog::info("[{}] no {} yet: starting from scratch", mc.name, last_path.string());
  if (!opt.resume && fs::exists(last_path))
    spdlog::warn("[{}] {} exists: starting over (use --resume to continue it)", mc.name, last_path.string());
  spdlog::info("[{}] config (resolved):\n{}", mc.name, resolved);

  TaskData td = make_data(c);
  manual_seed(c.train.seed);
  auto model = make_model(c, mc, td);
  const int64_t n_params = model->num_parameters();
  spdlog::info("[{}] {} parameters, {} threads", mc.name, n_params, num_threads());

  auto optimizer = make_optimizer(c, *model);
  const double base_lr = c.optim.lr;
  std::unique_ptr<dist::GradientReducer> reducer;
  if (dp) {
    SEQLAB_CHECK(c.train.batch_size >= dist::size(), c.file, ": [train] batch_size: expected at least one example "
                 "per rank (", dist::size(), " ranks), got ", c.train.batch_size);
    reducer = std::make_unique<dist::GradientReducer>(model->parameters());
    dist::check_identical(model->parameters(), str("[", mc.name, "] initial parameters"));
    spdlog::info("[{}] data-parallel: {} ranks, global batch {} (about {} per rank), {} threads per rank", mc.name,
                 dist::size(), c.train.batch_size, c.train.batch_size / dist::size(), num_threads());
  }

  // Steps per epoch: the whole training set (or n_train_batches), capped by max_steps.
  std::unique_ptr<data::Loader> loader;
  int64_t steps_per_epoch;
  if (td.token) {
    steps_per_epoch = c.data.n_train_batches;
  } else {
    data::LoaderOptions lo = data::LoaderOptions::train(c.train.batch_size, c.train.seed);
    lo.prefetch = c.train.prefetch > 0;
    if (dp) lo.shard_rank = dist::rank(), lo.shard_count = dist::size();
    SEQLAB_CHECK(c.train.batch_size <= td.fc.train->size(), c.file, ": [train] batch_size: expected at most the ",
                 td.fc.train->size(), " training windows, got ", c.train.batch_size);
    loader = std::make_unique<data::Loader>(td.fc.train, lo);
    steps_per_epoch = loader->num_batches();
    SEQLAB_CHECK(steps_per_epoch > 0, c.file, ": [train] batch_size: expected at most the ", td.fc.train->size(),
                 " training windows, got ", c.train.batch_size);
  }
  if (c.train.max_steps > 0) steps_per_epoch = std::min(steps_per_epoch, c.train.max_steps);
  const int64_t total_steps = steps_per_epoch * c.train.epochs;

  optim::ScheduleOptions so;
  so.name = c.optim.schedule;
  so.step_size = c.optim.step_size;
  so.gamma = c.optim.gamma;
  so.warmup_steps = c.optim.warmup_steps;
  so.total_steps = total_steps;
  so.min_lr_ratio = c.optim.min_lr_ratio;
  if (so.name == "cosine")
    SEQLAB_CHECK(so.warmup_steps < total_steps, c.file, ": [optim] warmup_steps: expected fewer than the ",
                 total_steps, " training steps (epochs x steps per epoch), got ", so.warmup_steps);
  std::unique_ptr<optim::Schedule> schedule;
  try {
    schedule = std::make_unique<optim::Schedule>(so);
  } catch (const Error& e) {
    throw Error(str(c.file, ": [optim]: ", e.what()));
  }

  RunState st;
  if (resuming) {
    st = restore(load_checkpoint(last_path), last_path.string(), *model, *optimizer);
    spdlog::info("[{}] resumed from {}: epoch {}, batch {}, step {}", mc.name, last_path.string(), st.epoch + 1,
                 st.batch, st.global_step);
    // A run that ended because it reached its epochs continues when the config now asks for more
    // (`--resume --set train.epochs=N`); an early stop stays a stop.
    const bool early_stopped = c.train.patience > 0 && st.bad_epochs >= c.train.patience;
    if (st.done && !early_stopped && st.epoch < c.train.epochs) {
      spdlog::info("[{}] extending the finished run from {} to {} epochs", mc.name, st.epoch, c.train.epochs);
      st.done = false;
    }
  } else {
    if (!c.train.init_from.empty()) warm_start(c, mc.name, *model);
    for (const char* k : kMetricNames) st.metrics[k];
    if (td.token) st.metrics["val_acc"], st.metrics["test_acc"];
    std::error_code ec;
    if (writer) fs::remove(best_path, ec);
  }
  // Only now, with the data, model and checkpoint checked, is the run directory touched: a bad
  // input leaves nothing behind (tests/bad_inputs).
  if (writer) {
    fs::create_directories(dir);
    write_text_atomic(dir / "config.resolved.toml", resolved);
  }
  int64_t saved_step = resuming ? st.global_step : -1;  // the step checkpoint-last.h5 holds (-1: none yet)

  Progress progress(!opt.quiet && isatty(fileno(stderr)), mc.name, c.train.epochs, steps_per_epoch);
  model->train();
  data::Batch batch;
  for (; !st.done && st.epoch < c.train.epochs; ++st.epoch) {
    if (loader) {
      if (st.batch > 0) loader->load_state({st.epoch, st.batch});
      else loader->reset(st.epoch);
    }
    progress.start_epoch(st.batch);
    auto t_epoch = Clock::now();
    const int64_t skipped_before_epoch = st.skipped;
    double lr = base_lr * schedule->lr_at(st.global_step);
    while (st.batch < steps_per_epoch) {
      if (td.token) batch = td.task->batch(c.train.batch_size, c.data.data_seed, st.global_step);
      else if (!loader->next(batch)) break;
      if (dp && td.token) batch = shard_rows(batch);
      // Data-parallel dropout: a stream per (seed, rank, step), so ranks draw different masks and a
      // resumed run draws the same ones without saving every rank's generator.
      if (dp) manual_seed(c.train.seed ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(st.global_step + 1)) ^
                          (0xBF58476D1CE4E5B9ULL * static_cast<uint64_t>(dist::rank() + 1)));
      lr = base_lr * schedule->lr_at(st.global_step);
      optimizer->set_lr(lr);
      std::function<void()> before_check;
      if (opt.nonfinite_at_step == st.global_step + 1) before_check = [&] { poison_first_gradient(*model); };
      const StepOutcome so = train_step(*model, *optimizer, batch, td.token, c.optim.grad_clip, reducer.get(),
                                        stop_requested(), before_check);
      const double l = so.loss;
      // A NaN/Inf loss or gradient never reaches the parameters: stop (checkpoint-last.h5 keeps the
      // last good state) or skip the step ([train] on_nonfinite).
      if (!so.applied) {
        const std::string& bad = so.bad_gradient;
        const std::string what = str("non-finite ", std::isfinite(l) ? "gradient" : "loss", " (loss ", l, ") at step ",
                                     st.global_step + 1, " (epoch ", st.epoch + 1, ", batch ", st.batch + 1, "); ",
                                     bad.empty() ? std::string("every gradient finite")
                                                 : str("first parameter with a non-finite gradient: '", bad, "'"));
        SEQLAB_CHECK(c.train.on_nonfinite == "skip", "[", mc.name, "] ", what, "; training stopped ([train] "
                     "on_nonfinite = \"stop\"); ", saved_step >= 0 ? str(last_path.string(), " holds step ",
                     saved_step, ", the last good state") : std::string("no checkpoint was written before it"),
                     " (lower [optim] lr, set [optim] grad_clip, or set [train] on_nonfinite = \"skip\")");
        ++st.skipped;
        if (st.skipped <= 10)
          spdlog::warn("[{}] {}: step skipped ({} skipped so far{})", mc.name, what, st.skipped,
                       st.skipped == 10 ? "; further skips are counted at each epoch end" : "");
      } else {
        const std::string& bad_param = so.bad_parameter;
        SEQLAB_CHECK(bad_param.empty(), "[", mc.name, "] parameter '", bad_param, "' became non-finite after the update "
                     "of step ", st.global_step + 1, " (epoch ", st.epoch + 1, ", finite loss and gradients: lower "
                     "[optim] lr); ", saved_step >= 0 ? str(last_path.string(), " holds step ", saved_step,
                     ", the last good state") : std::string("no checkpoint was written before it"));
        st.loss_sum += l;
        ++st.loss_count;
        if (opt.step_losses) opt.step_losses->push_back(l);
      }
      ++st.batch;
      ++st.global_step;
      progress.update(st.epoch, st.batch, st.loss_sum / static_cast<double>(st.loss_count));
      if (opt.stop_after_steps > 0 && st.global_step >= opt.stop_after_steps) {
        progress.clear();
        RunResult r;
        r.model = mc.name;
        r.params = n_params;
        return r;  // as if killed here: nothing after the last checkpoint is kept
      }
      // SIGINT (request_stop): write checkpoint-last.h5 at this step and return; --resume continues.
      const bool interrupt = (reducer ? reducer->any_stop() : stop_requested()) && st.batch < steps_per_epoch;
      if (writer && st.batch < steps_per_epoch &&
          (interrupt || (c.train.checkpoint_every > 0 && st.global_step % c.train.checkpoint_every == 0))) {
        RunState snap = st;
        snap.epoch_seconds += seconds_since(t_epoch);
        save_checkpoint(last_path, make_checkpoint(*model, *optimizer, td, snap));
        saved_step = st.global_step;
      }
      if (interrupt) {
        progress.clear();
        spdlog::warn("[{}] interrupted at step {} (epoch {}): {} written; --resume continues from it", mc.name,
                     st.global_step, st.epoch + 1, last_path.string());
        RunResult r;
        r.model = mc.name;
        r.params = n_params;
        r.interrupted = true;
        r.skipped_steps = st.skipped;
        return r;
      }
    }
    st.epoch_seconds += seconds_since(t_epoch);
    progress.clear();

    auto t_eval = Clock::now();
    EvalStats val = td.token ? eval_tokens(*model, td.val_batches, dp)
                             : eval_forecast(*model, td.fc.val, c.train.eval_batch_size, dp);
    EvalStats test = td.token ? eval_tokens(*model, td.test_batches, dp)
                              : eval_forecast(*model, td.fc.test, c.train.eval_batch_size, dp);
    Metrics& m = st.metrics;
    m["train_loss"].push_back(st.loss_sum / static_cast<double>(std::max<int64_t>(st.loss_count, 1)));
    m["val_loss"].push_back(val.loss);
    m["val_mse"].push_back(val.mse);
    m["val_mae"].push_back(val.mae);
    m["test_mse"].push_back(test.mse);
    m["test_mae"].push_back(test.mae);
    m["seconds"].push_back(st.epoch_seconds);
    m["eval_seconds"].push_back(seconds_since(t_eval));
    m["lr"].push_back(lr);
    if (td.token) {
      m["val_acc"].push_back(val.acc);
      m["test_acc"].push_back(test.acc);
    }
    const bool improved = val.loss < st.best_val;
    if (improved) {
      st.best_val = val.loss;
      st.bad_epochs = 0;
    } else {
      ++st.bad_epochs;
    }
    if (td.token)
      spdlog::info("[{}] epoch {}/{}: train_loss {:.5f} val_loss {:.5f} val_acc {:.4f} test_acc {:.4f} lr {:.3g} "
                   "{:.1f}s{}", mc.name, st.epoch + 1, c.train.epochs, m["train_loss"].back(), val.loss, val.acc,
                   test.acc, lr, st.epoch_seconds, improved ? " *" : "");
    else
      spdlog::info("[{}] epoch {}/{}: train_loss {:.5f} val_mse {:.5f} val_mae {:.5f} test_mse {:.5f} test_mae "
                   "{:.5f} lr {:.3g} {:.1f}s{}", mc.name, st.epoch + 1, c.train.epochs, m["train_loss"].back(),
                   val.mse, val.mae, test.mse, test.mae, lr, st.epoch_seconds, improved ? " *" : "");

    const bool stop = c.train.patience > 0 && st.bad_epochs >= c.train.patience;
    // The state as of the start of the next epoch.
    RunState next = st;
    next.epoch = st.epoch + 1;
    next.batch = 0;
    next.loss_sum = 0;
    next.loss_count = 0;
    next.epoch_seconds = 0;
    next.done = stop || next.epoch >= c.train.epochs;
    if (dp) dist::check_identical(model->parameters(), str("[", mc.name, "] parameters after epoch ", st.epoch + 1));
    if (writer) {
      Checkpoint ck = make_checkpoint(*model, *optimizer, td, next);
      if (improved) save_checkpoint(best_path, ck);  // before last: a crash in between redoes this epoch
      save_checkpoint(last_path, ck);
      saved_step = st.global_step;
      write_metrics(dir / "metrics.h5", m);
    }
    if (st.skipped > skipped_before_epoch)
      spdlog::warn("[{}] epoch {}: {} step(s) skipped for a non-finite loss or gradient ({} in the run)", mc.name,
                   st.epoch + 1, st.skipped - skipped_before_epoch, st.skipped);
    st.batch = 0;
    st.loss_sum = 0;
    st.loss_count = 0;
    st.epoch_seconds = 0;
    if (stop) {
      spdlog::info("[{}] early stop: no validation improvement in {} epochs", mc.name, c.train.patience);
      st.done = true;
      ++st.epoch;
      break;
    }
    if ((dp ? dist::any(stop_requested()) : stop_requested()) && !next.done) {
      spdlog::warn("[{}] interrupted after epoch {}: {} written; --resume continues from it", mc.name, st.epoch + 1,
                   last_path.string());
      RunResult r;
      r.model = mc.name;
      r.params = n_params;
      r.interrupted = true;
      r.skipped_steps = st.skipped;
      return r;
    }
  }
  // Always rewritten: a run killed between the last checkpoint and metrics.h5 resumes as done.
  if (writer) write_metrics(dir / "metrics.h5", st.metrics);
  if (opt.final_params) *opt.final_params = model->parameters();

  RunResult r = result_from(mc.name, n_params, st.metrics, st.global_step, td.token);
  r.finished = true;
  r.skipped_steps = st.skipped;
  if (st.skipped > 0)
    spdlog::warn("[{}] {} of {} steps skipped for a non-finite loss or gradient ([train] on_nonfinite = \"skip\")",
                 mc.name, st.skipped, st.global_step);
  r.peak_rss_mib = std::max(r.peak_rss_mib, st.peak_rss);  // a resumed run reports the whole run's peak
  if (reducer && reducer->calls() > 0 && r.step_ms > 0) {
    const double ms = 1e3 * reducer->seconds() / static_cast<double>(reducer->calls());
    spdlog::info("[{}] all-reduce: {} floats per step, {:.3f} ms/step ({:.3f} ms in MPI_Allreduce), {:.1f}% of a "
                 "{:.2f} ms step", mc.name, reducer->buffer_size(), ms,
                 1e3 * reducer->mpi_seconds() / static_cast<double>(reducer->calls()), 100.0 * ms / r.step_ms, r.step_ms);
  }
  if (writer) {
    write_text_atomic(dir / "results.csv", results_csv({r}));
    write_text_atomic(dir / "results.md", results_md({r}));
  }
  spdlog::info("[{}] done: {} epochs, {:.1f}s training, {:.2f} ms/step, best val {:.5f}, test_mse {:.5f}", mc.name,
               r.epochs, r.train_seconds, r.step_ms, r.val_mse, r.test_mse);
  return r;
}

RunResult run_train(const Config& c, const RunOptions& opt) {
  SEQLAB_CHECK(!c.multi, c.file, ": lists [[models]]: use `seqlab compare` (or a config with one [model])");
  return train_model(c, 0, c.output.dir, opt);
}

}  // namespace seqlab::app
