// What a run learns: its data (TaskData, built from the config's [data]) and, behind one
// interface, how it is trained and scored. A Task owns its training batches (and their split over
// data-parallel ranks), its loss and the weight of a batch in a data-parallel mean, and its
// evaluation on the validation and test sets. Two kinds: forecasting (windows of a series through
// data::Loader, MSE) and the token tasks (selective copying, induction heads: a fresh batch per
// step from a seeded stream, fixed evaluation sets, cross-entropy and token accuracy). The trainer,
// train_step and `seqlab eval` see only this interface; a new task is one more class here.
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "apps/checkpoint.h"  // Metrics
#include "apps/config.h"
#include "core/tensor.h"
#include "data/dataset.h"
#include "data/forecast.h"
#include "data/synthetic.h"

namespace seqlab::nn {
class SequenceModel;
}

namespace seqlab::app {


/// Figures of a model on one split (token tasks: mse = loss = cross-entropy, mae NaN; forecasting:
/// loss = mse, acc -1).
struct EvalStats {
  double loss = 0, mse = std::numeric_limits<double>::quiet_NaN(), mae = std::numeric_limits<double>::quiet_NaN();
  double acc = -1;
};

/// A batch's mean loss, and how many terms that mean averages (its weight in a data-parallel mean).
class Objective {
 public:
  virtual ~Objective() = default;
  virtual Tensor loss(const Tensor& out, const Tensor& y) const = 0;
  virtual double weight(const data::Batch& b) const = 0;
};
/// MSE over every target value.
const Objective& mse_objective();
/// Cross-entropy over (B, T, V) logits against (B, T) targets, positions at data::kIgnoreIndex skipped.
const Objective& token_objective();

enum class Split { val, test };

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
/// A forecasting config's series as make_data reads it: the sine series, or [data] path (and dataset).
data::Series read_task_series(const DataConfig& d);

/// Rows [lo, hi) of a token batch.
data::Batch batch_rows(const data::Batch& b, int64_t lo, int64_t hi);
/// Data-parallel token tasks: every rank draws the global batch and keeps its contiguous rows.
data::Batch shard_rows(const data::Batch& b);

/// MSE/MAE of a forecasting model on every window of `ds`. Data-parallel (`sharded`): each rank
/// evaluates its slice of every batch and the sums are reduced, so every rank gets the same metrics.
EvalStats eval_forecast(nn::SequenceModel& m, const std::shared_ptr<data::ForecastDataset>& ds, int64_t bs,
                        bool sharded = false);
/// Loss and token accuracy on fixed token batches (sharded: rank r takes batches r, r + K, ...).
EvalStats eval_tokens(nn::SequenceModel& m, const std::vector<data::Batch>& batches, bool sharded = false);


class Task {
 public:
  virtual ~Task() = default;
  /// Token tasks score accuracy beside the loss (val_acc, test_acc; the results' test_acc column).
  virtual bool scores_tokens() const = 0;
  virtual const Objective& objective() const = 0;
  /// Training batches in one epoch, before [train] max_steps.
  virtual int64_t batches_per_epoch() const = 0;
  /// Positions the training stream at batch `batch` of epoch `epoch` (a resumed run: mid-epoch).
  virtual void seek(int64_t epoch, int64_t batch) = 0;
  /// The batch of global step `step` (data-parallel: this rank's rows); false at the epoch's end.
  virtual bool next(int64_t step, data::Batch& b) = 0;
  /// `m` on a split, in eval mode under NoGradGuard (data-parallel: each rank its share, every rank
  /// the same figures).
  virtual EvalStats evaluate(nn::SequenceModel& m, Split split) const = 0;
  /// The per-split metric names of metrics.h5 (val_loss, val_mse, ...), and one epoch's values.
  virtual std::vector<std::string> metric_names() const = 0;
  virtual void record(Metrics& m, const EvalStats& val, const EvalStats& test) const = 0;
  /// The epoch's figures for the log line, e.g. "val_mse 0.81 val_mae 0.60 test_mse 0.47 test_mae 0.46".
  virtual std::string summary(const EvalStats& val, const EvalStats& test) const = 0;
};

/// The task of `c` on its data `td` (which must outlive it). `sharded`: data-parallel over the ranks.
std::unique_ptr<Task> make_task(const Config& c, TaskData& td, bool sharded);

}  // namespace seqlab::app
