// Helpers shared by the suites that run whole trainings (test_train, test_reliability,
// test_distributed): a scratch directory per test process, a scope that quiets logging and cleans
// up, a checkpoint comparison used by every resume test, and the observer that steers a run.
#pragma once
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "apps/checkpoint.h"
#include "apps/trainer.h"
#include "core/parallel.h"
#include "testing.h"

namespace seqlab::testing {

/// Steers a training run (app::TrainObserver): stop after global step `stop_after` as if killed,
/// a NaN in the first parameter's gradient at step `poison_at` (0: neither); records each applied
/// step's loss and a finished run's parameters.
struct TestObserver : app::TrainObserver {
  int64_t stop_after = 0;
  int64_t poison_at = 0;
  std::vector<double> losses;
  std::vector<Tensor> final_params;

  void after_backward(const nn::Module& m, int64_t step) override {
    if (step != poison_at) return;
    for (const auto& p : m.named_parameters()) {
      Tensor g = p.tensor.grad();
      if (!g.defined() || g.numel() == 0) continue;
      if (g.dtype() == DType::f32) g.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
      else if (g.dtype() == DType::f64) g.data<double>()[0] = std::numeric_limits<double>::quiet_NaN();
      return;
    }
  }
  void on_step(int64_t, double loss, bool applied) override {
    if (applied) losses.push_back(loss);
  }
  bool should_stop(int64_t step) override { return stop_after > 0 && step >= stop_after; }
  void on_finish(const nn::Module& m) override { final_params = m.parameters(); }
};
inline TestObserver stop_after(int64_t step, int64_t poison_at = 0) {
  TestObserver o;
  o.stop_after = step;
  o.poison_at = poison_at;
  return o;
}
inline TestObserver poison_at(int64_t step) { return stop_after(0, step); }

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

/// A tiny sweep of two models (gru, mlp) on the sine task writing to `dir`, with `sweep` as the
/// body of its [sweep] table (test_sweep.cpp, test_report_sweep.cpp).
inline std::string sweep_config(const std::filesystem::path& dir, const std::string& sweep) {
  return str("[data]\ntask = \"sine\"\nrows = 400\nseq_len = 16\npred_len = 4\nchannels = 2\n",
             "[model]\nd_model = 8\nn_layers = 1\n",
             "[[models]]\nname = \"gru\"\ntype = \"gru\"\n[[models]]\nname = \"mlp\"\ntype = \"mlp\"\n",
             "[train]\nepochs = 1\nbatch_size = 16\nmax_steps = 3\nthreads = 1\npatience = 0\n",
             "[output]\ndir = \"", dir.string(), "\"\n[sweep]\n", sweep);
}

}  // namespace seqlab::testing
