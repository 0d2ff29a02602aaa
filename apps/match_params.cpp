// [sweep] match_params: each model's width (d_model) chosen so that its parameter count is the
// closest to a common target, within 5%, so that a comparison does not set a model with 4x the
// parameters of another beside it. The count depends on the data (channels, length, vocabulary:
// the embedding and the head), so it is measured on models built for the config's data.
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdlib>
#include <optional>
#include <utility>

#include "apps/run.h"
#include "core/error.h"

namespace seqlab::app {

namespace {

constexpr double kTolerance = 0.05;
constexpr int64_t kMaxWidth = int64_t{1} << 16;
constexpr int64_t kScan = 32;  // widths tried past one the layer refuses (d_model % n_heads != 0, ...)

struct Sized {
  int64_t d_model = 0, params = 0;
};

// The model built at width d, or at the first width above d (up to kScan) that the layer accepts.
std::optional<Sized> params_at(const Config& c, ModelConfig mc, const TaskData& td, int64_t d) {
  for (int64_t w = d; w < d + kScan && w <= kMaxWidth; ++w) {
    mc.d_model = w;
    try {
      return Sized{w, make_model(c, mc, td)->num_parameters()};
    } catch (const Error&) {
      // this width is not allowed; try the next
    }
  }
  return std::nullopt;
}

// The accepted width at or below d (down to d - kScan), or nothing.
std::optional<Sized> params_below(const Config& c, const ModelConfig& mc, const TaskData& td, int64_t d) {
  for (int64_t w = d; w >= 1 && w > d - kScan; --w)
    if (auto s = params_at(c, mc, td, w); s && s->d_model == w) return s;
  return std::nullopt;
}

Sized match_one(const Config& c, const ModelConfig& mc, const TaskData& td, int64_t target) {
  auto fail = [&](const std::string& why) {
    return Error(str(c.file, ": [sweep] match_params = ", target, ": model '", mc.name, "' (", mc.type, "): ", why));
  };
  auto at = [&](int64_t d) {
    auto s = params_at(c, mc, td, d);
    if (!s) throw fail(str("no d_model from ", d, " to ", d + kScan - 1, " builds"));
    return *s;
  };
  // Bracket: lo below the target, hi at or above it (doubling or halving from the config's width).
  int64_t lo = std::max<int64_t>(1, mc.d_model), hi = lo;
  if (at(lo).params < target) {
    while (at(hi).params < target) {
      lo = hi;
      hi *= 2;
      if (hi > kMaxWidth) throw fail(str("d_model ", kMaxWidth, " still has fewer parameters"));
    }
  } else {
    while (lo > 1 && at(lo).params >= target) {
      hi = lo;
      lo /= 2;
    }
  }
  // Bisect to the first width whose (next accepted) model reaches the target.
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (at(mid).params < target ? lo : hi) = mid;
  }
  Sized best = at(hi);
  if (auto below = params_below(c, mc, td, hi - 1);
      below && std::llabs(below->params - target) < std::llabs(best.params - target))
    best = *below;
  const double off = static_cast<double>(best.params - target) / static_cast<double>(target);
  const bool gaps = best.d_model < hi - 1 || at(hi).d_model > hi;  // widths the layer refuses in between
  if (std::fabs(off) > kTolerance)
    throw fail(str("the closest width, d_model ", best.d_model, ", has ", best.params, " parameters (",
                   fmt("%+.1f", 100 * off), "%); expected within 5%",
                   gaps ? " (the layer refuses the widths in between: fewer heads, or a larger target)" : ""));
  return best;
}

}  // namespace

void match_params(Config& c) {
  if (c.match_params <= 0) return;
  const TaskData td = make_data(c);
  for (auto& mc : c.models) {
    const Sized s = match_one(c, mc, td, c.match_params);
    spdlog::info("match_params: '{}' ({}) d_model {} -> {} parameters ({:+.1f}% of {})", mc.name, mc.type, s.d_model,
                 s.params, 100.0 * static_cast<double>(s.params - c.match_params) / static_cast<double>(c.match_params),
                 c.match_params);
    mc.set_width(s.d_model);
  }
}

}  // namespace seqlab::app
