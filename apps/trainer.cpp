// The training loop: seeded model, optimizer and schedule from the config; each epoch trains on at
// most max_steps batches of the task, evaluates on every validation and test example under
// NoGradGuard, keeps the best-validation checkpoint and stops after `patience` epochs without
// improvement. A resumed run restores parameters, optimizer moments, the default generator and the
// task's position, so it takes exactly the steps the uninterrupted run would have taken. Each step
// is train_step (apps/run.h); everything task-specific is behind apps/task.h.
#include "apps/trainer.h"

#include "core/cuda/runtime.h"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "apps/checkpoint.h"
#include "apps/distributed.h"
#include "apps/graph_step.h"
#include "apps/progress.h"
#include "apps/run.h"
#include "apps/run_state.h"
#include "apps/task.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/model.h"

namespace seqlab::app {
namespace fs = std::filesystem;

namespace {

const char* kMetricNames[] = {"train_loss", "seconds", "eval_seconds", "lr"};

std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "request_stop() runs in a signal handler");

// One model's training run, from its config to its run directory. The phases, in order: check
// what is on disk (build), build data, model, optimizer and task (build), restore or start fresh
// and only then touch the directory (start), the epochs (train_epoch, end_epoch), the result
// (finish). Data-parallel under mpirun (docs/DISTRIBUTED.md): every rank trains on its share of
// each global batch; only rank 0 (the writer) writes the run directory.
class Training {
 public:
  Training(const Config& c, size_t index, const fs::path& dir, const RunOptions& opt)
      : c_(c), mc_(c.models.at(index)), dir_(dir), last_path_(dir / "checkpoint-last.h5"),
        best_path_(dir / "checkpoint-best.h5"), opt_(opt), dp_(opt.data_parallel && dist::size() > 1),
        writer_(!dp_ || dist::rank() == 0), resolved_(to_toml_single(c, index, dir.string())) {}

  RunResult run() {
    set_num_threads(opt_.threads >= 0 ? opt_.threads : static_cast<int>(c_.train.threads));
    check_disk();
    build();
    start();
    Progress progress(!opt_.quiet && isatty(fileno(stderr)), mc_.name, planned_epochs(), steps_per_epoch_);
    progress_ = &progress;
    model_->train();
    while (!st_.done && (c_.train.budgeted() || st_.epoch < c_.train.epochs)) {
      if (auto r = train_epoch()) return *r;
      if (end_epoch()) return early_exit(true);
      ++st_.epoch;
    }
    return finish();
  }

 private:
  // Resuming: is there a checkpoint, and was it made with this config? Only messages; nothing written.
  void check_disk() {
    resuming_ = opt_.resume && fs::exists(last_path_);
    SEQLAB_CHECK(!dp_ || dist::all_equal(resuming_), "[", mc_.name, "] --resume: ", last_path_.string(),
                 " must be visible to every rank (a shared file system) or to none");
    if (resuming_ && fs::exists(dir_ / "config.resolved.toml")) {
      std::ifstream in(dir_ / "config.resolved.toml");
      std::stringstream old;
      old << in.rdbuf();
      if (old.str() != resolved_)
        spdlog::warn("[{}] {}: the config differs from the one the run started with; the result may differ from "
                     "an uninterrupted run", mc_.name, (dir_ / "config.resolved.toml").string());
    }
    if (opt_.resume && !resuming_) spdlog::info("[{}] no {} yet: starting from scratch", mc_.name, last_path_.string());
    if (!opt_.resume && fs::exists(last_path_))
      spdlog::warn("[{}] {} exists: starting over (use --resume to continue it)", mc_.name, last_path_.string());
    spdlog::info("[{}] config (resolved):\n{}", mc_.name, resolved_);
  }

  void build() {
    const bool gpu = c_.train.device == "cuda";
    if (gpu) cuda::require(str(c_.file, ": [train] device = \"cuda\""));
    SEQLAB_CHECK(!(gpu && dp_), c_.file, ": [train] device = \"cuda\" with mpirun: data-parallel training runs on "
                 "the CPU only (docs/GPU.md)");
    td_ = make_data(c_);
    manual_seed(c_.train.seed);
    model_ = make_model(c_, mc_, td_);  // initialised on the host: the same weights on either device
    if (gpu) {
      model_->to(Device::cuda);
      cuda::set_matmul_precision(cuda::matmul_precision_of(c_.train.matmul_precision));
    }
    n_params_ = model_->num_parameters();
    spdlog::info("[{}] {} parameters, {}", mc_.name, n_params_,
                 gpu ? str("on ", cuda::describe_devices()) : str(num_threads(), " threads"));
    optimizer_ = make_optimizer(c_, *model_);  // its state is made where the parameters are
    if (dp_) {
      SEQLAB_CHECK(c_.train.batch_size >= dist::size(), c_.file, ": [train] batch_size: expected at least one "
                   "example per rank (", dist::size(), " ranks), got ", c_.train.batch_size);
      reducer_ = std::make_unique<dist::GradientReducer>(model_->parameters());
      dist::check_identical(model_->parameters(), str("[", mc_.name, "] initial parameters"));
      spdlog::info("[{}] data-parallel: {} ranks, global batch {} (about {} per rank), {} threads per rank", mc_.name,
                   dist::size(), c_.train.batch_size, c_.train.batch_size / dist::size(), num_threads());
    }
    task_ = make_task(c_, td_, dp_);
    // Steps per epoch: the whole training set (token tasks: n_train_batches), capped by max_steps.
    steps_per_epoch_ = task_->batches_per_epoch();
    if (c_.train.max_steps > 0) steps_per_epoch_ = std::min(steps_per_epoch_, c_.train.max_steps);
    schedule_ = make_schedule(c_, c_.train.steps > 0 ? c_.train.steps : steps_per_epoch_ * c_.train.epochs);
    if (c_.train.budgeted())
      spdlog::info("[{}] budget: {}; early stopping off", mc_.name,
                   c_.train.steps > 0 ? str(c_.train.steps, " optimizer steps") : str(c_.train.time_budget, " s of training"));
  }

  // The epochs the progress bar counts: a step budget's (the last may be partial), else [train] epochs.
  int64_t planned_epochs() const {
    return c_.train.steps > 0 ? (c_.train.steps + steps_per_epoch_ - 1) / steps_per_epoch_ : c_.train.epochs;
  }

  // [train] steps / time_budget: reached at a step boundary. `running`: the current epoch's training
  // seconds not yet in the metrics. Every rank agrees (their clocks differ).
  bool budget_reached(double running) const {
    const TrainConfig& t = c_.train;
    if (t.steps > 0) return st_.global_step >= t.steps;
    if (t.time_budget <= 0) return false;
    double trained = running;
    if (auto it = st_.metrics.find("seconds"); it != st_.metrics.end())
      for (double s : it->second) trained += s;
    return dp_ ? dist::any(trained >= t.time_budget) : trained >= t.time_budget;
  }

  // Restores checkpoint-last.h5 (--resume) or starts fresh (maybe warm); only then, with the data,
  // model and checkpoint checked, is the run directory touched: a bad input leaves nothing behind.
  void start() {
    if (resuming_) {
      st_ = restore(load_checkpoint(last_path_), last_path_.string(), *model_, *optimizer_);
      spdlog::info("[{}] resumed from {}: epoch {}, batch {}, step {}", mc_.name, last_path_.string(), st_.epoch + 1,
                   st_.batch, st_.global_step);
      // A run that ended because it reached its epochs continues when the config now asks for more
      // (`--resume --set train.epochs=N`); an early stop stays a stop.
      const bool early_stopped = !c_.train.budgeted() && c_.train.patience > 0 && st_.bad_epochs >= c_.train.patience;
      if (c_.train.budgeted() && st_.done && !budget_reached(0)) {
        spdlog::info("[{}] extending the finished run to the larger budget", mc_.name);
        st_.done = false;
      } else if (st_.done && !early_stopped && !c_.train.budgeted() && st_.epoch < c_.train.epochs) {
        spdlog::info("[{}] extending the finished run from {} to {} epochs", mc_.name, st_.epoch, c_.train.epochs);
        st_.done = false;
      }
      saved_step_ = st_.global_step;
    } else {
      if (!c_.train.init_from.empty()) warm_start(c_, mc_.name, *model_);
      for (const char* k : kMetricNames) st_.metrics[k];
      for (const std::string& k : task_->metric_names()) st_.metrics[k];
      std::error_code ec;
      if (writer_) fs::remove(best_path_, ec);
    }
    if (writer_) {
      fs::create_directories(dir_);
      write_text_atomic(dir_ / "config.resolved.toml", resolved_);
    }
  }

  // The steps of epoch st_.epoch from batch st_.batch on. Returns a result when the run ends here
  // (an observer's stop, or an interrupt after writing checkpoint-last.h5).
  std::optional<RunResult> train_epoch() {
    task_->seek(st_.epoch, st_.batch);
    progress_->start_epoch(st_.batch);
    t_epoch_ = Clock::now();
    skipped_before_epoch_ = st_.skipped;
    lr_ = c_.optim.lr * schedule_->lr_at(st_.global_step);
    data::Batch batch;
    while (st_.batch < steps_per_epoch_) {
      if (!task_->next(st_.global_step, batch)) break;
      step(batch);
      progress_->update(st_.epoch, st_.batch, st_.loss_sum / static_cast<double>(st_.loss_count));
      if (opt_.observer && opt_.observer->should_stop(st_.global_step)) {
        progress_->clear();
        return early_exit(false);  // as if killed here: nothing after the last checkpoint is kept
      }
      // SIGINT (request_stop): write checkpoint-last.h5 at this step and return; --resume continues.
      const bool interrupt = (reducer_ ? reducer_->any_stop() : stop_requested()) && st_.batch < steps_per_epoch_;
      if (writer_ && st_.batch < steps_per_epoch_ &&
          (interrupt || (c_.train.checkpoint_every > 0 && st_.global_step % c_.train.checkpoint_every == 0))) {
        RunState snap = st_;
        snap.epoch_seconds += seconds_since(t_epoch_);
        save_checkpoint(last_path_, make_checkpoint(*model_, *optimizer_, td_, snap));
        saved_step_ = st_.global_step;
      }
      if (interrupt) {
        progress_->clear();
        spdlog::warn("[{}] interrupted at step {} (epoch {}): {} written; --resume continues from it", mc_.name,
                     st_.global_step, st_.epoch + 1, last_path_.string());
        return early_exit(true);
      }
      if (c_.train.budgeted() && budget_reached(st_.epoch_seconds + seconds_since(t_epoch_)))
        break;  // the budget ends this epoch early
    }
    st_.epoch_seconds += seconds_since(t_epoch_);
    progress_->clear();
    return std::nullopt;
  }

  // One step: train_step, then the non-finite policy ([train] on_nonfinite) and the counters.
  void step(const data::Batch& batch) {
    // Data-parallel dropout: a stream per (seed, rank, step), so ranks draw different masks and a
    // resumed run draws the same ones without saving every rank's generator.
    if (dp_) manual_seed(c_.train.seed ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(st_.global_step + 1)) ^
                         (0xBF58476D1CE4E5B9ULL * static_cast<uint64_t>(dist::rank() + 1)));
    lr_ = c_.optim.lr * schedule_->lr_at(st_.global_step);
    optimizer_->set_lr(lr_);
    StepPolicy policy{.grad_clip = c_.optim.grad_clip, .reducer = reducer_.get(), .stop = stop_requested()};
    if (opt_.observer)
      policy.after_backward = [this](const nn::Module& m) { opt_.observer->after_backward(m, st_.global_step + 1); };
    StepOutcome so;
    // A graph's policy is fixed when it is made; the data-parallel stop flag changes every step, so
    // those runs (and observed ones) take the eager step.
    const bool graphable = !policy.reducer && !policy.after_backward;
    if (c_.train.cuda_graph && graphable) {
      if (!graphed_) graphed_ = std::make_unique<GraphedStep>(*model_, *optimizer_, task_->objective(), policy);
      so = (*graphed_)(batch);
      if (!graph_told_ && (graphed_->captured() || !graphed_->why_eager().empty())) {
        graph_told_ = true;
        if (graphed_->captured()) spdlog::info("[{}] [train] cuda_graph: the training step is one CUDA graph", mc_.name);
        else spdlog::warn("[{}] [train] cuda_graph: steps run eagerly: {}", mc_.name, graphed_->why_eager());
      }
    } else {
      if (c_.train.cuda_graph && !graph_told_) {
        graph_told_ = true;
        spdlog::warn("[{}] [train] cuda_graph: steps run eagerly: data-parallel training or an observer", mc_.name);
      }
      so = train_step(*model_, *optimizer_, batch, task_->objective(), policy);
    }
    // A NaN/Inf loss or gradient never reaches the parameters: stop (checkpoint-last.h5 keeps the
    // last good state) or skip the step.
    if (!so.applied) {
      const std::string what =
          str("non-finite ", std::isfinite(so.loss) ? "gradient" : "loss", " (loss ", so.loss, ") at step ",
              st_.global_step + 1, " (epoch ", st_.epoch + 1, ", batch ", st_.batch + 1, "); ",
              so.bad_gradient.empty() ? std::string("every gradient finite")
                                      : str("first parameter with a non-finite gradient: '", so.bad_gradient, "'"));
      SEQLAB_CHECK(c_.train.on_nonfinite == "skip", "[", mc_.name, "] ", what, "; training stopped ([train] "
                   "on_nonfinite = \"stop\"); ", last_good(), " (lower [optim] lr, set [optim] grad_clip, or set "
                   "[train] on_nonfinite = \"skip\")");
      ++st_.skipped;
      if (st_.skipped <= 10)
        spdlog::warn("[{}] {}: step skipped ({} skipped so far{})", mc_.name, what, st_.skipped,
                     st_.skipped == 10 ? "; further skips are counted at each epoch end" : "");
    } else {
      SEQLAB_CHECK(so.bad_parameter.empty(), "[", mc_.name, "] parameter '", so.bad_parameter, "' became non-finite "
                   "after the update of step ", st_.global_step + 1, " (epoch ", st_.epoch + 1, ", finite loss and "
                   "gradients: lower [optim] lr); ", last_good());
      st_.loss_sum += so.loss;
      ++st_.loss_count;
    }
    if (opt_.observer) opt_.observer->on_step(st_.global_step + 1, so.loss, so.applied);
    ++st_.batch;
    ++st_.global_step;
  }

  std::string last_good() const {
    return saved_step_ >= 0 ? str(last_path_.string(), " holds step ", saved_step_, ", the last good state")
                            : std::string("no checkpoint was written before it");
  }

  // Evaluation, metrics, checkpoints and early stopping at the end of epoch st_.epoch. Returns true
  // when the run was interrupted (Ctrl-C) with epochs left.
  bool end_epoch() {
    const auto t_eval = Clock::now();
    const EvalStats val = task_->evaluate(*model_, Split::val);
    const EvalStats test = task_->evaluate(*model_, Split::test);
    Metrics& m = st_.metrics;
    m["train_loss"].push_back(st_.loss_sum / static_cast<double>(std::max<int64_t>(st_.loss_count, 1)));
    task_->record(m, val, test);
    m["seconds"].push_back(st_.epoch_seconds);
    m["eval_seconds"].push_back(seconds_since(t_eval));
    m["lr"].push_back(lr_);
    const bool improved = val.loss < st_.best_val;
    if (improved) {
      st_.best_val = val.loss;
      st_.bad_epochs = 0;
    } else {
      ++st_.bad_epochs;
    }
    spdlog::info("[{}] epoch {}/{}: train_loss {:.5f} {} lr {:.3g} {:.1f}s{}", mc_.name, st_.epoch + 1,
                 c_.train.time_budget > 0 ? std::string("?") : std::to_string(planned_epochs()), m["train_loss"].back(), task_->summary(val, test), lr_, st_.epoch_seconds,
                 improved ? " *" : "");
    const bool stop = !c_.train.budgeted() && c_.train.patience > 0 && st_.bad_epochs >= c_.train.patience;
    const bool done = stop || (c_.train.budgeted() ? budget_reached(0) : st_.epoch + 1 >= c_.train.epochs);
    save_epoch(improved, done);
    st_.done = done;
    if (st_.skipped > skipped_before_epoch_)
      spdlog::warn("[{}] epoch {}: {} step(s) skipped for a non-finite loss or gradient ({} in the run)", mc_.name,
                   st_.epoch + 1, st_.skipped - skipped_before_epoch_, st_.skipped);
    st_.batch = 0;
    st_.loss_sum = 0;
    st_.loss_count = 0;
    st_.epoch_seconds = 0;
    if (stop) {
      spdlog::info("[{}] early stop: no validation improvement in {} epochs", mc_.name, c_.train.patience);
      st_.done = true;
      return false;
    }
    if ((dp_ ? dist::any(stop_requested()) : stop_requested()) && !done) {
      spdlog::warn("[{}] interrupted after epoch {}: {} written; --resume continues from it", mc_.name, st_.epoch + 1,
                   last_path_.string());
      return true;
    }
    return false;
  }

  // The checkpoints (best when improved, before last: a crash in between redoes this epoch) and
  // metrics.h5, holding the state as of the start of the next epoch.
  void save_epoch(bool improved, bool done) {
    RunState next = st_;
    next.epoch = st_.epoch + 1;
    next.batch = 0;
    next.loss_sum = 0;
    next.loss_count = 0;
    next.epoch_seconds = 0;
    next.done = done;
    if (dp_) dist::check_identical(model_->parameters(), str("[", mc_.name, "] parameters after epoch ", st_.epoch + 1));
    if (!writer_) return;
    Checkpoint ck = make_checkpoint(*model_, *optimizer_, td_, next);
    if (improved) save_checkpoint(best_path_, ck);
    save_checkpoint(last_path_, ck);
    saved_step_ = st_.global_step;
    write_metrics(dir_ / "metrics.h5", st_.metrics);
  }

  // A run that ends before its epochs: killed (an observer) or interrupted (checkpoint written).
  RunResult early_exit(bool interrupted) const {
    RunResult r;
    r.model = mc_.name;
    r.params = n_params_;
    if (interrupted) {
      r.interrupted = true;
      r.skipped_steps = st_.skipped;
    }
    return r;
  }

  RunResult finish() {
    // Always rewritten: a run killed between the last checkpoint and metrics.h5 resumes as done.
    if (writer_) write_metrics(dir_ / "metrics.h5", st_.metrics);
    if (opt_.observer) opt_.observer->on_finish(*model_);
    RunResult r = result_from(mc_.name, n_params_, st_.metrics, st_.global_step, task_->scores_tokens());
    r.device = c_.train.device;
    r.finished = true;
    r.skipped_steps = st_.skipped;
    if (st_.skipped > 0)
      spdlog::warn("[{}] {} of {} steps skipped for a non-finite loss or gradient ([train] on_nonfinite = \"skip\")",
                   mc_.name, st_.skipped, st_.global_step);
    r.peak_rss_mib = std::max(r.peak_rss_mib, st_.peak_rss);  // a resumed run reports the whole run's peak
    if (reducer_ && reducer_->calls() > 0 && r.step_ms > 0) {
      const double calls = static_cast<double>(reducer_->calls());
      const double ms = 1e3 * reducer_->seconds() / calls;
      spdlog::info("[{}] all-reduce: {} floats per step, {:.3f} ms/step ({:.3f} ms in MPI_Allreduce), {:.1f}% of a "
                   "{:.2f} ms step", mc_.name, reducer_->buffer_size(), ms, 1e3 * reducer_->mpi_seconds() / calls,
                   100.0 * ms / r.step_ms, r.step_ms);
    }
    if (writer_) {
      write_text_atomic(dir_ / "results.csv", results_csv({r}));
      write_text_atomic(dir_ / "results.md", results_md({r}));
    }
    spdlog::info("[{}] done: {} epochs, {:.1f}s training, {:.2f} ms/step, best val {:.5f}, test_mse {:.5f}", mc_.name,
                 r.epochs, r.train_seconds, r.step_ms, r.val_mse, r.test_mse);
    return r;
  }

  const Config& c_;
  const ModelConfig& mc_;
  const fs::path dir_, last_path_, best_path_;
  const RunOptions opt_;
  const bool dp_, writer_;
  const std::string resolved_;
  bool resuming_ = false;
  TaskData td_;
  std::shared_ptr<nn::SequenceModel> model_;
  int64_t n_params_ = 0;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<dist::GradientReducer> reducer_;
  std::unique_ptr<GraphedStep> graphed_;  // [train] cuda_graph: made at the first step
  bool graph_told_ = false;
  std::unique_ptr<Task> task_;
  int64_t steps_per_epoch_ = 0;
  std::unique_ptr<optim::Schedule> schedule_;
  RunState st_;
  int64_t saved_step_ = -1;  // the step checkpoint-last.h5 holds (-1: none yet)
  double lr_ = 0;
  Clock::time_point t_epoch_{};
  int64_t skipped_before_epoch_ = 0;
  Progress* progress_ = nullptr;
};

}  // namespace

void request_stop() noexcept { g_stop_requested.store(true); }
bool stop_requested() noexcept { return g_stop_requested.load(); }

RunResult train_model(const Config& c, size_t index, const std::string& dir, const RunOptions& opt) {
  return Training(c, index, fs::path(dir), opt).run();
}

RunResult run_train(const Config& c, const RunOptions& opt) {
  SEQLAB_CHECK(!c.multi, c.file, ": lists [[models]]: use `seqlab compare` (or a config with one [model])");
  SEQLAB_CHECK(c.sweep.empty(), c.file, ": has a [sweep]: use `seqlab compare` (or drop the [sweep] table)");
  if (c.match_params <= 0) return train_model(c, 0, c.output.dir, opt);
  Config matched = c;
  match_params(matched);
  RunResult r = train_model(matched, 0, matched.output.dir, opt);
  r.d_model = matched.models[0].d_model;
  return r;
}

}  // namespace seqlab::app
