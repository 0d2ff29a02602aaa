// Loader: seeded per-epoch permutations and background prefetch (a core/parallel.h TaskGroup on
// the TBB pool). A prefetched batch is built by the same make_batch() into fresh tensors, so
// results do not depend on whether prefetch is on.
#include "data/loader.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "core/error.h"
#include "core/parallel.h"
#include "core/random.h"

namespace seqlab::data {

LoaderOptions LoaderOptions::train(int64_t batch_size, uint64_t seed) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = true;
  o.drop_last = true;
  o.seed = seed;
  return o;
}

LoaderOptions LoaderOptions::eval(int64_t batch_size) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = false;
  o.drop_last = false;
  return o;
}

struct Loader::Prefetch {
  TaskGroup group;
  int64_t batch = -1;  // index of the batch in flight or ready; -1 when none
  Batch result;
};

Loader::Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions opt)
    : dataset_(std::move(dataset)), opt_(opt), prefetch_(std::make_unique<Prefetch>()) {
  SEQLAB_CHECK(dataset_, "Loader: no dataset");
  SEQLAB_CHECK(opt_.batch_size >= 1, "Loader: batch_size must be at least 1, got ", opt_.batch_size);
  SEQLAB_CHECK(opt_.shard_count >= 1 && opt_.shard_rank >= 0 && opt_.shard_rank < opt_.shard_count,
               "Loader: shard_rank ", opt_.shard_rank, " outside [0, shard_count = ", opt_.shard_count, ")");
  SEQLAB_CHECK(dataset_->size() >= 1, "Loader: the dataset is empty");
  SEQLAB_CHECK(num_batches() >= 1, "Loader: drop_last with batch_size ", opt_.batch_size, " leaves no batch of the ",
               dataset_->size(), " examples");
  reset(0);
}

Loader::~Loader() {
  try {
    wait_prefetch();
  } catch (...) {  // a failed prefetch nobody asked for
  }
}

int64_t Loader::num_batches() const {
  const int64_t n = dataset_->size(), b = opt_.batch_size;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> Loader::order(int64_t epoch) const {
  std::vector<int64_t> idx(static_cast<size_t>(dataset_->size()));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  if (!opt_.shuffle) return idx;
  // One generator per (seed, epoch): epoch e's order needs no replay of epochs 0..e-1.
  Generator gen(opt_.seed ^ (0xD1B54A32D192ED03ULL * static_cast<uint64_t>(epoch + 1)));
  for (size_t i = idx.size() - 1; i > 0; --i) std::swap(idx[i], idx[gen.randint(i + 1)]);  // Fisher-Yates
  return idx;
}

void Loader::reset(int64_t epoch) {
  SEQLAB_CHECK(epoch >= 0, "Loader.reset: epoch must be >= 0, got ", epoch);
  wait_prefetch();
  prefetch_->batch = -1;
  prefetch_->result = Batch{};
  if (epoch != epoch_ || order_.empty()) order_ = order(epoch);
  epoch_ = epoch;
  batch_ = 0;
}

void Loader::load_state(const LoaderState& s) {
  reset(s.epoch);
  SEQLAB_CHECK(s.batch >= 0 && s.batch <= num_batches(), "Loader.load_state: batch ", s.batch, " outside [0, ",
               num_batches(), "]");
  batch_ = s.batch;
}

std::pair<int64_t, int64_t> Loader::shard_range(int64_t n, int64_t r, int64_t k) {
  const int64_t base = n / k, extra = n % k;
  const int64_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

Batch Loader::make_batch(int64_t batch) const {
  const int64_t first = batch * opt_.batch_size;
  const int64_t n = std::min<int64_t>(opt_.batch_size, static_cast<int64_t>(order_.size()) - first);
  const auto [begin, end] = shard_range(n, opt_.shard_rank, opt_.shard_count);
  if (begin == end) return Batch{};  // a short last batch with fewer examples than shards
  return dataset_->get(std::span<const int64_t>(order_.data() + first + begin, static_cast<size_t>(end - begin)));
}

void Loader::start_prefetch() {
  prefetch_->batch = batch_;
  prefetch_->group.run([this, k = batch_] { prefetch_->result = make_batch(k); });
}

void Loader::wait_prefetch() {
  if (prefetch_->batch < 0) return;
  try {
    prefetch_->group.wait();  // rethrows an exception of the task
  } catch (...) {
    prefetch_->batch = -1;
    throw;
  }
}

bool Loader::next(Batch& b) {
  if (batch_ >= num_batches()) return false;
  if (prefetch_->batch == batch_) {
    wait_prefetch();
    b = std::move(prefetch_->result);
    prefetch_->result = Batch{};
  } else {
    wait_prefetch();  // a stale prefetch (after load_state) must finish before order_ is reused
    b = make_batch(batch_);
  }
  prefetch_->batch = -1;
  ++batch_;
  if (opt_.prefetch && batch_ < num_batches()) start_prefetch();
  return true;
}

}  // namespace seqlab::data
