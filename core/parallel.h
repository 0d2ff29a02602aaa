// Parallel loops. The only header that includes oneTBB. One thread pool (TBB's) runs everything:
// OpenBLAS is pinned to one thread and large GEMMs are split over TBB tasks instead (see
// docs/ARCHITECTURE.md, "Threads"), because two pools of 2 threads on 2 cores fight each other.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

namespace seqlab {

/// Sets the number of worker threads for TBB (and keeps OpenBLAS at one thread). n <= 0: all cores.
void set_num_threads(int n);
/// Threads seqlab currently uses.
int num_threads();

/// Runs f(lo, hi) over [begin, end) in chunks of about `grain` elements, in parallel when worthwhile.
/// Chunks write disjoint outputs, so the result does not depend on scheduling.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  if (end <= begin) return;
  if (grain < 1) grain = 1;
  if (end - begin <= grain || num_threads() == 1) {
    f(begin, end);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(begin, end, grain),
                    [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
}

/// Deterministic parallel sum: [begin, end) is cut into fixed chunks of `chunk` elements whatever
/// the thread count, each chunk's partial is computed by f(lo, hi), and partials are added in order.
template <typename Acc, typename F>
Acc parallel_sum(int64_t begin, int64_t end, int64_t chunk, F&& f) {
  if (end <= begin) return Acc(0);
  if (chunk < 1) chunk = 1;
  int64_t n_chunks = (end - begin + chunk - 1) / chunk;
  if (n_chunks == 1) return f(begin, end);
  std::vector<Acc> partial(static_cast<size_t>(n_chunks));
  parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t lo = begin + c * chunk;
      partial[static_cast<size_t>(c)] = f(lo, std::min(end, lo + chunk));
    }
  });
  Acc s(0);
  for (const Acc& p : partial) s += p;
  return s;
}

/// Fire-and-forget tasks on the same TBB pool, waited for later (the loader's prefetch). wait()
/// rethrows an exception thrown by a task. The one place outside core/ that needs tasks, not loops,
/// gets them here, so TBB stays behind this header.
class TaskGroup {
 public:
  TaskGroup();
  ~TaskGroup();
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;
  void run(std::function<void()> task);
  void wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace seqlab
