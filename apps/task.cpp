// The two kinds of task (apps/task.h): forecasting windows and the token tasks.
#include "apps/task.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "apps/distributed.h"
#include "apps/run.h"
#include "apps/trainer.h"  // count_token_hits
#include "autograd/ops.h"
#include "core/error.h"
#include "data/loader.h"
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
  std::vector<std::string> metric_names() const override {
    return {"val_loss", "val_mse", "val_mae", "test_mse", "test_mae"};
  }
  void record(Metrics& m, const EvalStats& val, const EvalStats& test) const override {
    m["val_loss"].push_back(val.loss);
    m["val_mse"].push_back(val.mse);
    m["val_mae"].push_back(val.mae);
    m["test_mse"].push_back(test.mse);
    m["test_mae"].push_back(test.mae);
  }
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
    return {"val_loss", "val_mse", "val_mae", "test_mse", "test_mae", "val_acc", "test_acc"};
  }
  void record(Metrics& m, const EvalStats& val, const EvalStats& test) const override {
    m["val_loss"].push_back(val.loss);
    m["val_mse"].push_back(val.mse);
    m["val_mae"].push_back(val.mae);
    m["test_mse"].push_back(test.mse);
    m["test_mae"].push_back(test.mae);
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
