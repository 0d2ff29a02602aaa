// Building a run from a Config, in one place for train, compare, eval, extrapolation and report:
// the task's data (a forecasting split or a token task with its fixed evaluation sets), the model
// from the layer registry, the optimizer; the token loss, the data-parallel loss weight and row
// slicing; evaluation of a model on a split. Internal to seqlab_app (the commands' API is trainer.h).
#pragma once
#include <chrono>
#include <functional>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "apps/checkpoint.h"  // Metrics
#include "apps/config.h"
#include "apps/distributed.h"
#include "apps/trainer.h"    // RunResult
#include "data/forecast.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "layers/model.h"
#include "optim/optimizer.h"

namespace seqlab::app {

using Clock = std::chrono::steady_clock;
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double seconds_since(Clock::time_point t0);
/// The process's peak RSS so far (getrusage), MiB.
double peak_rss_mib();
/// printf of one double into a string.
std::string fmt(const char* f, double v);

// Data: a forecasting split (ETT/CSV/HDF5 or the sine series) or a token task.
struct TaskData {
  bool token = false;
  data::ForecastData fc;                    // forecasting
  int64_t in_channels = 0, out_channels = 0;
  std::unique_ptr<data::TokenTask> task;    // token tasks
  std::vector<data::Batch> val_batches, test_batches;
  std::vector<std::string> columns, dates;  // forecasting: the series' column names and dates (may be empty)
};

TaskData make_data(const Config& c);
std::unique_ptr<optim::Optimizer> make_optimizer(const Config& c, const nn::Module& m);
std::shared_ptr<nn::SequenceModel> make_model(const Config& c, const ModelConfig& mc, const TaskData& td);

/// Cross-entropy over (B, T, V) logits against (B, T) targets, positions at data::kIgnoreIndex skipped.
Tensor token_loss(const Tensor& logits, const Tensor& y);
/// Data-parallel: the number of terms the batch's mean loss averages (forecast: every target value;
/// tokens: the scored positions), the weight of this rank's loss and gradients in the global mean.
double loss_weight(bool token, const data::Batch& b);
/// Rows [lo, hi) of a token batch.
data::Batch batch_rows(const data::Batch& b, int64_t lo, int64_t hi);
/// Data-parallel token tasks: every rank draws the global batch and keeps its contiguous rows.
data::Batch shard_rows(const data::Batch& b);

struct EvalStats {
  double loss = 0, mse = kNaN, mae = kNaN, acc = -1;
};

/// MSE/MAE of a forecasting model on every window of `ds`. Data-parallel (`sharded`): each rank
/// evaluates its slice of every batch and the sums are reduced, so every rank gets the same metrics.
EvalStats eval_forecast(nn::SequenceModel& m, const std::shared_ptr<data::ForecastDataset>& ds, int64_t bs,
                        bool sharded = false);
/// Loss and token accuracy on fixed token batches (sharded: rank r takes batches r, r + K, ...).
EvalStats eval_tokens(nn::SequenceModel& m, const std::vector<data::Batch>& batches, bool sharded = false);

/// The first parameter (registration order) whose gradient (gradients = true) or value holds a NaN or
/// an Inf; "" when every one is finite. O(parameters), negligible next to a training step.
std::string first_nonfinite(const nn::Module& m, bool gradients);

/// What one training step did.
struct StepOutcome {
  double loss = 0;            // the step's mean loss (data-parallel: the global batch's)
  std::string bad_gradient;   // the first parameter with a non-finite gradient, "" when all are finite
  bool applied = false;       // loss and gradients were finite and the update was applied
  std::string bad_parameter;  // after the update: the first parameter that became non-finite, ""
};
/// One training step, the same for train, compare, the data-parallel path and `seqlab bench`:
/// zero_grad, forward, the task's loss, backward, the gradient all-reduce (`reducer`, data-parallel;
/// `stop` is this rank's stop request, shared with the others), the non-finite check, clipping to
/// `grad_clip` (0: none) and the optimizer update. A non-finite loss or gradient skips the update (the
/// caller stops or goes on); `before_check` (tests: poison a gradient) runs just before the check.
StepOutcome train_step(nn::SequenceModel& model, optim::Optimizer& opt, const data::Batch& batch, bool token,
                       double grad_clip, dist::GradientReducer* reducer = nullptr, bool stop = false,
                       const std::function<void()>& before_check = {});

/// Results: the first epoch with the lowest validation loss (-1 when none); metric `key` at epoch i
/// (NaN when absent); the row of a finished run at its best epoch; seconds as m:ss.
int64_t best_epoch(const Metrics& m);
double at(const Metrics& m, const char* key, int64_t i);
RunResult result_from(const std::string& name, int64_t params, const Metrics& m, int64_t steps, bool token);
std::string time_str(double s);

}  // namespace seqlab::app
