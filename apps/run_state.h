// The state of a training run that a checkpoint holds beside the parameters and the optimizer: the
// position (epoch, batch, step), early stopping, the running loss, the metrics so far; and the two
// ways a run starts from a file: resuming its own checkpoint-last.h5, or a warm start ([train]
// init_from: parameters only).
#pragma once
#include <cstdint>
#include <limits>
#include <string>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "layers/module.h"
#include "optim/optimizer.h"

namespace seqlab::app {

struct TaskData;

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

/// Everything a resumed run needs: parameters, optimizer moments, the scaler, the default
/// generator, the counters and metrics of `s`.
Checkpoint make_checkpoint(const nn::Module& model, const optim::Optimizer& opt, const TaskData& td, const RunState& s);
/// Loads `c` (read from `path`) into the model and optimizer and the default generator; returns its
/// counters. Throws naming `path` when a counter is missing or the model does not match.
RunState restore(const Checkpoint& c, const std::string& path, nn::Module& model, optim::Optimizer& opt);
/// [train] init_from: the parameters (only: the optimizer, counters and history start fresh) of a
/// checkpoint file, of <dir>/<model name>/checkpoint-<which>.h5 (a compare run) or of
/// <dir>/checkpoint-<which>.h5 (a single run), which = [train] init_checkpoint (best | last). Names
/// and shapes must match the config's model; the sequence length may differ (curriculum: train
/// short, continue long).
void warm_start(const Config& c, const std::string& name, nn::Module& model);

}  // namespace seqlab::app
