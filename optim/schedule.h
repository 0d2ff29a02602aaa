// Learning-rate schedules as multipliers of the base lr, by step (0-based):
//   constant: 1
//   step:     gamma^floor(step / step_size)                            (torch StepLR)
//   cosine:   (step + 1) / warmup_steps while step < warmup_steps, then
//             min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * progress)) / 2,
//             progress = (step - warmup_steps) / (total_steps - warmup_steps), clamped to [0, 1]
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace seqlab::optim {

enum class ScheduleKind { constant, step, cosine };

struct ScheduleOptions {
  std::string name = "constant";  // constant | step | cosine
  int64_t step_size = 1000;       // step: decay every step_size steps
  double gamma = 0.1;             // step: factor per decay
  int64_t warmup_steps = 0;       // cosine: linear warm-up length
  int64_t total_steps = 0;        // cosine: step at which min_lr_ratio is reached
  double min_lr_ratio = 0.0;      // cosine: final multiplier
  /// Throws seqlab::Error naming the field: unknown name (listing the valid ones), step_size <= 0,
  /// gamma <= 0, warmup_steps < 0, total_steps <= warmup_steps, min_lr_ratio outside [0, 1].
  void validate() const;
};

/// The accepted names: constant, step, cosine.
const std::vector<std::string>& schedule_names();
/// Parses a name; throws seqlab::Error listing the valid names when unknown.
ScheduleKind parse_schedule(const std::string& name);

class Schedule {
 public:
  explicit Schedule(const ScheduleOptions& options = {});
  /// Multiplier of the base learning rate at `step` (0-based, >= 0).
  double lr_at(int64_t step) const;
  const ScheduleOptions& options() const { return options_; }

 private:
  ScheduleOptions options_;
  ScheduleKind kind_;
};

}  // namespace seqlab::optim
