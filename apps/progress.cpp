// The progress bar (apps/progress.h).
#include "apps/progress.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace seqlab::app {

void Progress::update(int64_t epoch, int64_t step, double loss) {
  if (!on_) return;
  auto now = Clock::now();
  if (step < steps_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  double el = seconds_since(t0_);
  double rate = el > 0 ? static_cast<double>(step - first_) / el : 0;
  int64_t eta = rate > 0 ? static_cast<int64_t>(static_cast<double>(steps_ - step) / rate) : 0;
  const int width = 24;
  int fill = static_cast<int>(width * step / std::max<int64_t>(steps_, 1));
  std::string bar(static_cast<size_t>(fill), '#');
  bar.resize(width, '-');
  std::fprintf(stderr, "\r[%s] epoch %lld/%lld [%s] %lld/%lld loss %.5f %.1f steps/s ETA %lld:%02lld\x1b[K",
               model_.c_str(), static_cast<long long>(epoch + 1), static_cast<long long>(epochs_), bar.c_str(),
               static_cast<long long>(step), static_cast<long long>(steps_), loss, rate,
               static_cast<long long>(eta / 60), static_cast<long long>(eta % 60));
  std::fflush(stderr);
}
void Progress::clear() {
  if (!on_) return;
  std::fprintf(stderr, "\r\x1b[K");
  std::fflush(stderr);
}

}  // namespace seqlab::app
