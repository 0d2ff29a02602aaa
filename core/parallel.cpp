#include "core/parallel.h"

#include <cblas.h>

#include <memory>
#include <mutex>
#include <thread>

#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/task_group.h>

namespace seqlab {
namespace {
std::mutex g_mu;
std::unique_ptr<tbb::global_control> g_control;
int g_threads = 0;
}  // namespace

void set_num_threads(int n) {
  std::lock_guard lock(g_mu);
  if (n <= 0) n = static_cast<int>(tbb::info::default_concurrency());
  g_control.reset();  // the old limit must go first: two live controls apply the lower
  g_control = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                    static_cast<size_t>(n));
  g_threads = n;
  openblas_set_num_threads(1);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

struct TaskGroup::Impl {
  tbb::task_group group;
};

TaskGroup::TaskGroup() : impl_(std::make_unique<Impl>()) {}
TaskGroup::~TaskGroup() = default;
void TaskGroup::run(std::function<void()> task) { impl_->group.run(std::move(task)); }
void TaskGroup::wait() { impl_->group.wait(); }

}  // namespace seqlab
