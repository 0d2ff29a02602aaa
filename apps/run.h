// Building a run from a Config, in one place for train, compare, eval, extrapolation, report and
// bench: the model from the layer registry and the optimizer (the data and its task: apps/task.h);
// the one training step; the non-finite checks; the result-table helpers and small utilities the
// commands share. Internal to seqlab_app (the commands' API is trainer.h).
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
#include "apps/task.h"
#include "apps/trainer.h"    // RunResult
#include "data/forecast.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "layers/model.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace seqlab::app {

using Clock = std::chrono::steady_clock;
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double seconds_since(Clock::time_point t0);
/// The process's peak RSS so far (getrusage), MiB.
double peak_rss_mib();
/// printf of one double into a string.
std::string fmt(const char* f, double v);

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& c, const nn::Module& m);
/// The learning-rate schedule of `c` over `total_steps`; errors name [optim].
std::unique_ptr<optim::Schedule> make_schedule(const Config& c, int64_t total_steps);
std::shared_ptr<nn::SequenceModel> make_model(const Config& c, const ModelConfig& mc, const TaskData& td);
/// [sweep] match_params > 0: sets each model's d_model to the width whose parameter count (on the
/// config's data) is the closest to the target; throws naming the model when none is within 5%.
void match_params(Config& c);

/// The first parameter (registration order) whose gradient (gradients = true) or value holds a NaN or
/// an Inf; "" when every one is finite. O(parameters), negligible next to a training step.
/// sum_sq (cuda parameters, when every value is finite): receives the sum of squares the check
/// reduced (one copy back), which clip_grad_norm can reuse for the same gradients.
std::string first_nonfinite(const nn::Module& m, bool gradients, double* sum_sq = nullptr);

/// What one training step did.
struct StepOutcome {
  double loss = 0;            // the step's mean loss (data-parallel: the global batch's)
  std::string bad_gradient;   // the first parameter with a non-finite gradient, "" when all are finite
  bool applied = false;       // loss and gradients were finite and the update was applied
  std::string bad_parameter;  // after the update: the first parameter that became non-finite, ""
};
/// How train_step treats a step beyond forward and backward.
struct StepPolicy {
  double grad_clip = 0;                      // max global gradient norm; 0: none
  dist::GradientReducer* reducer = nullptr;  // data-parallel: the gradient all-reduce
  bool stop = false;                         // this rank's stop request, shared with the others by the reducer
  std::function<void(const nn::Module&)> after_backward = nullptr;  // observers (tests: poison a gradient)
};
/// One training step, the same for train, compare, the data-parallel path and `seqlab bench`:
/// zero_grad, forward, the objective's loss, backward, the gradient all-reduce, after_backward, the
/// non-finite check, clipping and the optimizer update. A non-finite loss or gradient skips the
/// update (the caller stops or goes on).
StepOutcome train_step(nn::SequenceModel& model, optim::Optimizer& opt, const data::Batch& batch,
                       const Objective& objective, const StepPolicy& policy = {});

/// Results: the first epoch with the lowest validation loss (-1 when none); metric `key` at epoch i
/// (NaN when absent); the row of a finished run at its best epoch; seconds as m:ss.
int64_t best_epoch(const Metrics& m);
double at(const Metrics& m, const char* key, int64_t i);
RunResult result_from(const std::string& name, int64_t params, const Metrics& m, int64_t steps, bool token);
std::string time_str(double s);

}  // namespace seqlab::app
