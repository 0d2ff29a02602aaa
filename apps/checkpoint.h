// Checkpoints and metrics as HDF5 files (the C API, included here only). A checkpoint holds
// everything a run needs to continue exactly where it stopped: parameters and optimizer state by
// name, the scaler, the default generator (dropout), the loader position and the run's counters
// and metric history. Every file is written to a temporary name in the same directory, flushed and
// renamed over the old one, so a crash leaves either the old file or the new one, never half of one.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace seqlab::app {

/// Per-epoch series by name (train_loss, val_loss, ...), all the same length.
using Metrics = std::map<std::string, std::vector<double>>;

struct Checkpoint {
  std::map<std::string, Tensor> params;  // Module::state_dict()
  std::map<std::string, Tensor> optim;   // Optimizer::state_dict()
  std::map<std::string, Tensor> scaler;  // StandardScaler::state() (empty when unscaled)
  std::array<uint64_t, 6> rng{};         // default_generator().state()
  std::map<std::string, int64_t> counters;  // epoch, batch, global_step, bad_epochs, done, ...
  std::map<std::string, double> values;     // best_val_loss, running sums, ...
  Metrics metrics;                          // history up to this point
};

/// Writes `c` to `path` through `path`.tmp and a rename. Throws seqlab::Error naming the file.
void save_checkpoint(const std::filesystem::path& path, const Checkpoint& c);
/// Reads a checkpoint; throws seqlab::Error naming the file and the missing part.
Checkpoint load_checkpoint(const std::filesystem::path& path);

/// Writes one float64 1-D dataset per metric (temporary file + rename).
void write_metrics(const std::filesystem::path& path, const Metrics& m);
/// Reads every 1-D dataset of a metrics file.
Metrics read_metrics(const std::filesystem::path& path);

/// Writes `text` to `path` through a temporary file and a rename.
void write_text_atomic(const std::filesystem::path& path, const std::string& text);

}  // namespace seqlab::app
