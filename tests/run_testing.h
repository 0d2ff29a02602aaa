// Helpers shared by the suites that run whole trainings (test_train, test_reliability): a scratch
// directory per test process, a scope that quiets logging and cleans up, and a checkpoint
// comparison used by every resume test.
#pragma once
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "apps/checkpoint.h"
#include "core/parallel.h"
#include "testing.h"

namespace seqlab::testing {

/// The scratch root of this test process (removed by RunScope).
inline std::filesystem::path scratch_root() {
  return std::filesystem::temp_directory_path() / ("seqlab_test_runs_" + std::to_string(::getpid()));
}

/// A fresh, empty directory under the scratch root.
inline std::filesystem::path scratch(const std::string& name) {
  std::filesystem::path p = scratch_root() / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

/// Sets the log level for one test; restores it, the thread count and removes the scratch root after.
struct RunScope {
  explicit RunScope(spdlog::level::level_enum level) { spdlog::set_level(level); }
  ~RunScope() {
    spdlog::set_level(spdlog::level::info);
    set_num_threads(0);
    std::error_code ec;
    std::filesystem::remove_all(scratch_root(), ec);
  }
  RunScope(const RunScope&) = delete;
  RunScope& operator=(const RunScope&) = delete;
};

/// Two checkpoints hold the same parameters, optimizer state size, generator state and counters.
inline void check_same_params(const std::filesystem::path& a, const std::filesystem::path& b) {
  app::Checkpoint ca = app::load_checkpoint(a), cb = app::load_checkpoint(b);
  REQUIRE(ca.params.size() == cb.params.size());
  for (const auto& [k, t] : ca.params) {
    CAPTURE(k);
    REQUIRE(cb.params.count(k));
    CHECK(t.to_vector() == cb.params.at(k).to_vector());
  }
  CHECK(ca.optim.size() == cb.optim.size());
  CHECK(ca.rng == cb.rng);
  CHECK(ca.counters == cb.counters);
}

}  // namespace seqlab::testing
