// Loader: batches of a Dataset in a seeded order. The permutation of epoch e is a pure function of
// (seed, e), so a run resumed from (epoch, batch) sees exactly the batches it would have seen.
// The next batch is gathered in the background on oneTBB while the caller trains on this one; the
// batches are identical with and without prefetch (each batch is its own fresh tensors).
// Data-parallel training shards each batch: with shard_count K, rank r gets its contiguous slice of
// every global batch of the (seed, epoch) permutation, so the K ranks see each example once per epoch.
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "data/dataset.h"

namespace seqlab::data {

struct LoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = true;     // a new permutation per epoch, from (seed, epoch)
  bool drop_last = false;  // drop a short last batch; training only (evaluation counts every example)
  uint64_t seed = 0;
  bool prefetch = true;  // gather the next batch on a background TBB task
  int64_t shard_rank = 0;   // this process's slice of each batch (data-parallel rank) ...
  int64_t shard_count = 1;  // ... of this many: sizes differ by at most one, the first ranks get more
  /// Shuffled, drop_last: the training loader.
  static LoaderOptions train(int64_t batch_size, uint64_t seed);
  /// In order, every example: validation and test.
  static LoaderOptions eval(int64_t batch_size);
};

/// Where a Loader is, for checkpoints: the next batch `batch` of epoch `epoch`.
struct LoaderState {
  int64_t epoch = 0;
  int64_t batch = 0;
};

class Loader {
 public:
  /// Throws seqlab::Error when batch_size < 1 or the dataset is empty. Starts at epoch 0.
  Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions opt);
  /// Waits for a prefetch in flight.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Batches per epoch: floor(N / B) with drop_last, else ceil(N / B) (global batches: every shard
  /// has the same count).
  int64_t num_batches() const;
  /// The examples [begin, end) of a global batch of n that shard r of k takes.
  static std::pair<int64_t, int64_t> shard_range(int64_t n, int64_t r, int64_t k);
  /// Starts epoch `epoch` at its first batch (the order depends only on seed and epoch).
  void reset(int64_t epoch);
  /// The next batch of the current epoch into b (this shard's slice; b.size == 0 when a short last
  /// batch leaves this shard nothing); false (b untouched) when the epoch is done.
  bool next(Batch& b);

  /// The example order of epoch `epoch` (identity without shuffle).
  std::vector<int64_t> order(int64_t epoch) const;
  /// Current position, for checkpoints.
  LoaderState state() const { return {epoch_, batch_}; }
  /// Resumes at state(): the same batches follow as in the run that saved it.
  void load_state(const LoaderState& s);
  int64_t epoch() const { return epoch_; }
  const LoaderOptions& options() const { return opt_; }
  const Dataset& dataset() const { return *dataset_; }

 private:
  Batch make_batch(int64_t batch) const;
  void start_prefetch();
  void wait_prefetch();

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions opt_;
  int64_t epoch_ = 0, batch_ = 0;
  std::vector<int64_t> order_;
  struct Prefetch;
  std::unique_ptr<Prefetch> prefetch_;  // the prefetch task lives in loader.cpp
};

}  // namespace seqlab::data
