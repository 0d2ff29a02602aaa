// The progress bar of a training run: redrawn in place on a terminal, nothing otherwise (the epoch
// lines are logged either way).
#pragma once
#include <cstdint>
#include <string>
#include <utility>

#include "apps/run.h"  // Clock

namespace seqlab::app {

class Progress {
 public:
  Progress(bool enabled, std::string model, int64_t epochs, int64_t steps)
      : on_(enabled), model_(std::move(model)), epochs_(epochs), steps_(steps) {}
  void start_epoch(int64_t first_step) {
    t0_ = Clock::now();
    first_ = first_step;
    last_draw_ = {};
  }
  void update(int64_t epoch, int64_t step, double loss);
  void clear();

 private:
  bool on_;
  std::string model_;
  int64_t epochs_, steps_, first_ = 0;
  Clock::time_point t0_{}, last_draw_{};
};

}  // namespace seqlab::app
