// Learning-rate schedules: constant, step decay, cosine with linear warm-up.
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace seqlab::optim {

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names{"constant", "step", "cosine"};
  return names;
}

ScheduleKind parse_schedule(const std::string& name) {
  const auto& names = schedule_names();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<ScheduleKind>(i);
  std::string valid;
  for (const std::string& n : names) valid += (valid.empty() ? "" : ", ") + n;
  throw Error(str("schedule: unknown name '", name, "', expected one of: ", valid));
}

void ScheduleOptions::validate() const {
  ScheduleKind kind;
  try {
    kind = parse_schedule(name);
  } catch (const Error& e) {
    throw Error(str("ScheduleOptions.name: ", e.what()));
  }
  if (kind == ScheduleKind::step) {
    SEQLAB_CHECK(step_size > 0, "ScheduleOptions.step_size: expected > 0, got ", step_size);
    SEQLAB_CHECK(gamma > 0, "ScheduleOptions.gamma: expected > 0, got ", gamma);
  }
  if (kind == ScheduleKind::cosine) {
    SEQLAB_CHECK(warmup_steps >= 0, "ScheduleOptions.warmup_steps: expected >= 0, got ", warmup_steps);
    SEQLAB_CHECK(total_steps > warmup_steps, "ScheduleOptions.total_steps: expected > warmup_steps (",
                 warmup_steps, "), got ", total_steps);
    SEQLAB_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1, "ScheduleOptions.min_lr_ratio: expected in [0, 1], got ",
                 min_lr_ratio);
  }
}

Schedule::Schedule(const ScheduleOptions& options) : options_(options), kind_(ScheduleKind::constant) {
  options_.validate();
  kind_ = parse_schedule(options_.name);
}

double Schedule::lr_at(int64_t step) const {
  SEQLAB_CHECK(step >= 0, "schedule: step must be >= 0, got ", step);
  switch (kind_) {
    case ScheduleKind::constant: return 1.0;
    case ScheduleKind::step:
      return std::pow(options_.gamma, static_cast<double>(step / options_.step_size));
    case ScheduleKind::cosine: {
      const int64_t w = options_.warmup_steps;
      // (step + 1) / w: the first step already moves, the last warm-up step reaches 1.
      if (step < w) return static_cast<double>(step + 1) / static_cast<double>(w);
      double progress = static_cast<double>(step - w) / static_cast<double>(options_.total_steps - w);
      progress = std::clamp(progress, 0.0, 1.0);
      double r = options_.min_lr_ratio;
      return r + (1 - r) * 0.5 * (1 + std::cos(std::numbers::pi * progress));
    }
  }
  return 1.0;
}

}  // namespace seqlab::optim
