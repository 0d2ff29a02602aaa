// The two kinds of task (apps/task.h): forecasting windows and the token tasks.
#include "apps/task.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "apps/distributed.h"
#include "apps/trainer.h"  // count_token_hits
#include "autograd/ops.h"
#include "core/error.h"
#include "data/loader.h"
#include "data/forecast.h"
#include "data/synthetic.h"
#include "layers/model.h"

namespace seqlab::app {

namespace {

class MseObjective final : public Objective {
 public:
  Tensor loss(const Tensor& out, const Tensor& y) const override { return mse_loss(out, y); }
  double weight(const data::Batch& b) const override { return static_cast<double>(b.y.numel()); }
};

class TokenObjective final : public Objective {
 public:
  Tensor loss(const Tensor& logits, const Tensor& y) const override {
    const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
    return cross_entropy(reshape(logits, {B * T, V}), y.view({B * T}), data::kIgnoreIndex);
  }
  double weight(const data::Batch& b) const override {
    const int32_t* y = b.y.data<int32_t>();
    int64_t n = 0;
    for (int64_t i = 0; i < b.y.numel(); ++i) n += y[i] != data::kIgnoreIndex;
    return static_cast<double>(n);
  }
};

// What every task records per epoch: the loss and the error figures of both splits.
const std::vector<std::string> kLossMetrics = {"val_loss", "val_mse", "val_mae", "test_mse", "test_mae"};
void record_losses(Metrics& m, const EvalStats& val, const EvalStats& test) {
  m["val_loss"].push_back(val.loss);
  m["val_mse"].push_back(val.mse);
  m["val_mae"].push_back(val.mae);
  m["test_mse"].push_back(test.mse);
  m["test_mae"].push_back(test.mae);
}

// Windows of a series: the Loader shuffles (seeded by [train] seed and the epoch), prefetches and,
// data-parallel, hands each rank its slice of every global batch.
class ForecastTask final : public Task {
 public:
  ForecastTask(const Config& c, TaskData& td, bool sharded) : td_(td), eval_batch_(c.train.eval_batch_size), sharded_(sharded) {
    const int64_t windows = td.fc.train->size();
    SEQLAB_CHECK(c.train.batch_size <= windows, c.file, ": [train] batch_size: expected at most the ", windows,
                 " training windows, got ", c.train.batch_size);
    data::LoaderOptions lo = data::LoaderOptions::train(c.train.batch_size, c.train.seed);
    lo.prefetch = c.train.prefetch > 0;
    if (sharded) lo.shard_rank = dist::rank(), lo.shard_count = dist::size();
    loader_ = std::make_unique<data::Loader>(td.fc.train, lo);
    SEQLAB_CHECK(loader_->num_batches() > 0, c.file, ": [train] batch_size: expected at most the ", windows,
                 " training windows, got ", c.train.batch_size);
  }
  bool scores_tokens() const override { return false; }
  const Objective& objective() const override { return mse_objective(); }
  int64_t batches_per_epoch() const override { return loader_->num_batches(); }
  void seek(int64_t epoch, int64_t batch) override {
    if (batch > 0) loader_->load_state({epoch, batch});
    else loader_->reset(epoch);
  }
  bool next(int64_t, data::Batch& b) override { return loader_->next(b); }
  EvalStats evaluate(nn::SequenceModel& m, Split split) const override {
    return eval_forecast(m, split == Split::val ? td_.fc.val : td_.fc.test, eval_batch_, sharded_);
  }
  std::vector<std::string> metric_names() const override { return kLossMetrics; }
  void record(Metrics& m, const EvalStats& val, const EvalStats& test) const override { record_losses(m, val, test); }
  std::string summary(const EvalStats& val, const EvalStats& test) const override {
    return fmt::format("val_mse {:.5f} val_mae {:.5f} test_mse {:.5f} test_mae {:.5f}", val.mse, val.mae, test.mse,
                       test.mae);
  }

 private:
  TaskData& td_;
  int64_t eval_batch_;
  bool sharded_;
  std::unique_ptr<data::Loader> loader_;
};

// Selective copying, induction heads: step s trains on batch s of the stream seeded by [data]
// data_seed (never repeated, so a resumed run needs only the step); data-parallel, every rank draws
// the global batch and keeps its contiguous rows.
class TokenTask final : public Task {
 public:
  TokenTask(const Config& c, TaskData& td, bool sharded)
      : td_(td), batch_size_(c.train.batch_size), seed_(c.data.data_seed), batches_(c.data.n_train_batches),
        sharded_(sharded) {}
  bool scores_tokens() const override { return true; }
  const Objective& objective() const override { return token_objective(); }
  int64_t batches_per_epoch() const override { return batches_; }
  void seek(int64_t, int64_t) override {}
  bool next(int64_t step, data::Batch& b) override {
    b = td_.task->batch(batch_size_, seed_, step);
    if (sharded_) b = shard_rows(b);
    return true;
  }
  EvalStats evaluate(nn::SequenceModel& m, Split split) const override {
    return eval_tokens(m, split == Split::val ? td_.val_batches : td_.test_batches, sharded_);
  }
  std::vector<std::string> metric_names() const override {
    std::vector<std::string> names = kLossMetrics;
    names.insert(names.end(), {"val_acc", "test_acc"});
    return names;
  }
  void record(Metrics& m, const EvalStats& val, const EvalStats& test) const override {
    record_losses(m, val, test);
    m["val_acc"].push_back(val.acc);
    m["test_acc"].push_back(test.acc);
  }
  std::string summary(const EvalStats& val, const EvalStats& test) const override {
    return fmt::format("val_loss {:.5f} val_acc {:.4f} test_acc {:.4f}", val.loss, val.acc, test.acc);
  }

 private:
  TaskData& td_;
  int64_t batch_size_;
  uint64_t seed_;
  int64_t batches_;
  bool sharded_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Data: a forecasting split (ETT/CSV/HDF5 or the sine series) or a token task.

data::Series read_task_series(const DataConfig& d) {
  return d.task == "sine" ? data::sine_series({.rows = d.rows, .channels = d.channels, .noise = d.noise, .ar = d.ar,
                                               .seed = d.data_seed})
                          : data::read_series(d.path, d.dataset);
}

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
    data::Series s = read_task_series(d);
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
    Tensor pred = m.forward(b.x.to(m.device())).to(Device::cpu);
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
    Tensor logits = m.forward(b.x.to(m.device())).to(Device::cpu);  // (B, T, V)
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
const Objective& mse_objective() {
  static const MseObjective o;
  return o;
}
const Objective& token_objective() {
  static const TokenObjective o;
  return o;
}

std::unique_ptr<Task> make_task(const Config& c, TaskData& td, bool sharded) {
  if (td.token) return std::make_unique<TokenTask>(c, td, sharded);
  return std::make_unique<ForecastTask>(c, td, sharded);
}

}  // namespace seqlab::app
