// Building a run from a Config (apps/run.h): the model from the registry, the optimizer, the one
// training step and the non-finite checks.
#include "apps/run.h"

#include "core/cuda/optim.h"
#include "core/device.h"

#include "apps/trainer.h"  // count_token_hits
#include <functional>
#include "optim/clip.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "apps/distributed.h"
#include "autograd/ops.h"
#include "core/error.h"
#include "data/forecast.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "layers/model.h"
#include "optim/adam.h"
#include "optim/sgd.h"

namespace seqlab::app {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}
std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& c, const nn::Module& m) {
  const OptimConfig& o = c.optim;
  try {
    if (o.name == "sgd")
      return std::make_unique<optim::SGD>(
          m.named_parameters(),
          optim::SGDOptions{.lr = o.lr, .momentum = o.momentum, .nesterov = o.nesterov, .weight_decay = o.weight_decay});
    optim::AdamOptions a{.lr = o.lr, .beta1 = o.betas[0], .beta2 = o.betas[1], .eps = o.eps, .weight_decay = o.weight_decay};
    if (o.name == "adam") return std::make_unique<optim::Adam>(m.named_parameters(), a);
    return std::make_unique<optim::AdamW>(m.named_parameters(), a);
  } catch (const Error& e) {
    throw Error(str(c.file, ": [optim]: ", e.what()));
  }
}

// The learning-rate schedule of `c` over `total_steps`; errors name [optim].
std::unique_ptr<optim::Schedule> make_schedule(const Config& c, int64_t total_steps) {
  optim::ScheduleOptions so;
  so.name = c.optim.schedule;
  so.step_size = c.optim.step_size;
  so.gamma = c.optim.gamma;
  so.warmup_steps = c.optim.warmup_steps;
  so.total_steps = total_steps;
  so.min_lr_ratio = c.optim.min_lr_ratio;
  if (so.name == "cosine")
    SEQLAB_CHECK(so.warmup_steps < total_steps, c.file, ": [optim] warmup_steps: expected fewer than the ",
                 total_steps, " training steps (epochs x steps per epoch, or [train] steps), got ", so.warmup_steps);
  try {
    return std::make_unique<optim::Schedule>(so);
  } catch (const Error& e) {
    throw Error(str(c.file, ": [optim]: ", e.what()));
  }
}

std::shared_ptr<nn::SequenceModel> make_model(const Config& c, const ModelConfig& mc, const TaskData& td) {
  try {
    nn::ModelOptions mo = td.token ? mc.options(c.data, 0, 0, td.task->vocab_size())
                                   : mc.options(c.data, td.in_channels, td.out_channels, 0);
    return std::make_shared<nn::SequenceModel>(std::move(mo));
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind(mc.args.where(), 0) == 0) throw;
    throw Error(str(mc.args.where(), ": ", msg));
  }
}

// Numeric faults: the first parameter (registration order) whose gradient (or value) holds a NaN
// or an Inf; "" when every one is finite. O(parameters), negligible next to a training step.
std::string first_nonfinite(const nn::Module& m, bool gradients, double* sum_sq) {
  if constexpr (kCuda) if (m.device() == Device::cuda) {
    // One reduction over every tensor (a NaN or Inf makes the sum of squares non-finite, and a float32's
    // square cannot overflow a double); only when it is not finite, one tensor at a time for the name.
    std::vector<Tensor> ts;
    for (const auto& p : m.named_parameters())
      if (Tensor t = gradients ? p.tensor.grad() : p.tensor; t.defined()) ts.push_back(t);
    if (const double s = cuda::sum_of_squares(ts); std::isfinite(s)) {
      if (sum_sq) *sum_sq = s;
      return "";
    }
    for (const auto& p : m.named_parameters())
      if (Tensor t = gradients ? p.tensor.grad() : p.tensor; t.defined() && !std::isfinite(cuda::sum_of_squares({t})))
        return p.name;
    return "";
  }
  for (const auto& p : m.named_parameters()) {
    Tensor t = gradients ? p.tensor.grad() : p.tensor;
    if (!t.defined()) continue;
    const int64_t n = t.numel();
    bool ok = true;
    if (t.dtype() == DType::f32) {
      const float* d = t.data<float>();
      for (int64_t i = 0; i < n; ++i) ok = ok && std::isfinite(d[i]);
    } else if (t.dtype() == DType::f64) {
      const double* d = t.data<double>();
      for (int64_t i = 0; i < n; ++i) ok = ok && std::isfinite(d[i]);
    }
    if (!ok) return p.name;
  }
  return "";
}

StepOutcome train_step(nn::SequenceModel& model, optim::Optimizer& opt, const data::Batch& batch,
                       const Objective& objective, const StepPolicy& policy) {
  StepOutcome so;
  opt.zero_grad();
  // The batch goes where the model is (a cuda model: through pinned staging, asynchronously).
  const Device dev = model.device();
  Tensor out = model.forward(batch.x.to(dev));
  Tensor loss = objective.loss(out, batch.y.to(dev));
  backward(loss);
  // Data-parallel: gradients and loss become the global batch's mean, identical on every rank.
  so.loss = policy.reducer ? policy.reducer->reduce(loss.item(), objective.weight(batch), policy.stop) : loss.item();
  if (policy.after_backward) policy.after_backward(model);
  double grad_sq = -1;  // cuda: the gradients' sum of squares, reduced once for the check and the clip
  so.bad_gradient = first_nonfinite(model, true, &grad_sq);
  if (!std::isfinite(so.loss) || !so.bad_gradient.empty()) return so;  // never reaches the parameters
  if (policy.grad_clip > 0) optim::clip_grad_norm(model.parameters(), policy.grad_clip, grad_sq);
  opt.step();
  so.applied = true;
  so.bad_parameter = first_nonfinite(model, false);
  return so;
}

}  // namespace seqlab::app
