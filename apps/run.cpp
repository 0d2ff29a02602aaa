// Building a run from a Config (apps/run.h): the data of the task, the model from the registry,
// the optimizer; the losses and the evaluation every command shares.
#include "apps/run.h"

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

// ---------------------------------------------------------------------------------------------
// Data: a forecasting split (ETT/CSV/HDF5 or the sine series) or a token task.

TaskData make_data(const Config& c) {
  const DataConfig& d = c.data;
  TaskData td;
  try {
    if (d.is_token_task()) {
      td.token = true;
      td.task = data::make_token_task(d.task == "selective-copying" ? "selective_copy" : "induction_heads", d.seq_len,
                                      d.key_distance);
      // Validation and test are fixed sets drawn from streams of their own.
      for (int64_t i = 0; i < d.n_eval_batches; ++i) {
        td.val_batches.push_back(td.task->batch(c.train.eval_batch_size, d.data_seed + 1, i));
        td.test_batches.push_back(td.task->batch(c.train.eval_batch_size, d.data_seed + 2, i));
      }
      return td;
    }
    data::Series s = d.task == "sine"
                         ? data::sine_series({.rows = d.rows, .channels = d.channels, .noise = d.noise, .ar = d.ar,
                                              .seed = d.data_seed})
                         : data::read_series(d.path, d.dataset);
    data::ForecastOptions fo;
    fo.seq_len = d.seq_len;
    fo.pred_len = d.pred_len;
    fo.features = data::parse_features(d.features);
    fo.target = d.target;
    fo.scale = d.scale;
    std::string split = d.task == "sine" ? "ratio" : d.split;
    fo.split.kind = split == "ett-hour" ? data::SplitKind::ett_hour
                    : split == "ett-minute" ? data::SplitKind::ett_minute
                                            : data::SplitKind::ratio;
    fo.split.train = d.ratios[0];
    fo.split.val = d.ratios[1];
    fo.split.test = d.ratios[2];
    td.fc = data::make_forecast_data(s, fo);
    td.columns = s.columns;
    td.dates = s.dates;
    td.in_channels = td.fc.train->input_channels();
    td.out_channels = td.fc.train->output_channels();
  } catch (const Error& e) {
    throw Error(str(c.file, ": [data]: ", e.what()));
  }
  return td;
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

// ---------------------------------------------------------------------------------------------
// Loss and evaluation.

// Rows [lo, hi) of a token batch.
data::Batch batch_rows(const data::Batch& b, int64_t lo, int64_t hi) {
  auto rows = [&](const Tensor& t) {
    Shape s = t.shape();
    const size_t row = t.nbytes() / static_cast<size_t>(s[0]);
    s[0] = hi - lo;
    Tensor out = Tensor::empty(s, t.dtype());
    std::memcpy(out.raw_data(), static_cast<const char*>(t.raw_data()) + static_cast<size_t>(lo) * row,
                static_cast<size_t>(hi - lo) * row);
    return out;
  };
  return {rows(b.x), rows(b.y), hi - lo};
}

// Data-parallel token tasks: every rank draws the global batch and keeps its contiguous rows.
data::Batch shard_rows(const data::Batch& b) {
  const auto [lo, hi] = data::Loader::shard_range(b.size, dist::rank(), dist::size());
  return batch_rows(b, lo, hi);
}

// Data-parallel (`sharded`): each rank evaluates its slice of every batch and the sums are reduced,
// so every rank gets the same metrics (and the same early-stopping decision).
EvalStats eval_forecast(nn::SequenceModel& m, const std::shared_ptr<data::ForecastDataset>& ds, int64_t bs,
                        bool sharded) {
  NoGradGuard ng;
  m.eval();
  data::LoaderOptions lo = data::LoaderOptions::eval(bs);
  if (sharded) lo.shard_rank = dist::rank(), lo.shard_count = dist::size();
  data::Loader loader(ds, lo);
  loader.reset(0);
  data::Batch b;
  double sse = 0, sae = 0;
  int64_t n = 0;
  while (loader.next(b)) {
    if (b.size == 0) continue;  // this rank's slice of a short last batch is empty
    Tensor pred = m.forward(b.x);
    const float* p = pred.data<float>();
    const float* y = b.y.data<float>();
    const int64_t k = b.y.numel();
    SEQLAB_CHECK(pred.numel() == k, "eval: prediction ", to_string(pred.shape()), " vs target ", to_string(b.y.shape()));
    for (int64_t i = 0; i < k; ++i) {
      double e = static_cast<double>(p[i]) - static_cast<double>(y[i]);
      sse += e * e;
      sae += std::abs(e);
    }
    n += k;
  }
  m.train();
  if (sharded) {
    double sums[3] = {sse, sae, static_cast<double>(n)};
    dist::allreduce_sum(sums, 3);
    sse = sums[0], sae = sums[1], n = static_cast<int64_t>(sums[2]);
  }
  EvalStats s;
  s.mse = sse / static_cast<double>(n);
  s.mae = sae / static_cast<double>(n);
  s.loss = s.mse;
  return s;
}

// Sharded: rank r evaluates batches r, r + K, ... and the sums are reduced.
EvalStats eval_tokens(nn::SequenceModel& m, const std::vector<data::Batch>& batches, bool sharded) {
  NoGradGuard ng;
  m.eval();
  double loss_sum = 0;
  int64_t scored = 0, correct = 0;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    if (sharded && static_cast<int>(bi % static_cast<size_t>(dist::size())) != dist::rank()) continue;
    const data::Batch& b = batches[bi];
    Tensor logits = m.forward(b.x);  // (B, T, V)
    const int64_t V = logits.size(2);
    const TokenHits hits = count_token_hits(logits.data<float>(), b.y.numel(), V, b.y.data<int32_t>());
    const int64_t here = hits.scored;
    correct += hits.correct;
    if (here > 0) loss_sum += token_objective().loss(logits, b.y).item() * static_cast<double>(here);
    scored += here;
  }
  m.train();
  if (sharded) {
    double sums[3] = {loss_sum, static_cast<double>(scored), static_cast<double>(correct)};
    dist::allreduce_sum(sums, 3);
    loss_sum = sums[0], scored = static_cast<int64_t>(sums[1]), correct = static_cast<int64_t>(sums[2]);
  }
  EvalStats s;
  s.loss = loss_sum / static_cast<double>(std::max<int64_t>(scored, 1));
  s.mse = s.loss;
  s.acc = static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(scored, 1));
  return s;
}
// Numeric faults: the first parameter (registration order) whose gradient (or value) holds a NaN
// or an Inf; "" when every one is finite. O(parameters), negligible next to a training step.
std::string first_nonfinite(const nn::Module& m, bool gradients) {
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
  Tensor out = model.forward(batch.x);
  Tensor loss = objective.loss(out, batch.y);
  backward(loss);
  // Data-parallel: gradients and loss become the global batch's mean, identical on every rank.
  so.loss = policy.reducer ? policy.reducer->reduce(loss.item(), objective.weight(batch), policy.stop) : loss.item();
  if (policy.after_backward) policy.after_backward(model);
  so.bad_gradient = first_nonfinite(model, true);
  if (!std::isfinite(so.loss) || !so.bad_gradient.empty()) return so;  // never reaches the parameters
  if (policy.grad_clip > 0) optim::clip_grad_norm(model.parameters(), policy.grad_clip);
  opt.step();
  so.applied = true;
  so.bad_parameter = first_nonfinite(model, false);
  return so;
}

}  // namespace seqlab::app
