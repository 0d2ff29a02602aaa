// Synthetic tasks: selective copying and induction heads (Gu & Dao 2023, "Mamba", section 4.1;
// Olsson et al. 2022 for induction heads), generated from a Generator so a (seed, step) pair
// always gives the same batch; and a noisy sine + AR(1) series for forecasting smoke tests.
#include "data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>

#include "core/error.h"

namespace seqlab::data {

Batch TokenTask::batch(int64_t batch_size, uint64_t seed, int64_t step) const {
  Generator gen(seed ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(step + 1)));
  return sample(batch_size, gen);
}

namespace {
Batch token_batch(int64_t B, int64_t T) {
  SEQLAB_CHECK(B >= 1, "token task: batch_size must be at least 1, got ", B);
  Batch b{Tensor::empty({B, T}, DType::i32), Tensor::full({B, T}, kIgnoreIndex, DType::i32), B};
  return b;
}
int32_t draw(Generator& gen, int32_t lo, int32_t hi) {  // uniform in [lo, hi]
  return lo + static_cast<int32_t>(gen.randint(static_cast<uint64_t>(hi - lo + 1)));
}
}  // namespace

SelectiveCopy::SelectiveCopy(int64_t seq_len) : seq_len_(seq_len) {
  SEQLAB_CHECK(seq_len >= 2 * kCopy, "selective_copy: seq_len must be at least ", 2 * kCopy, " (", kCopy,
               " data tokens and ", kCopy, " markers), got ", seq_len);
}

Batch SelectiveCopy::sample(int64_t batch_size, Generator& gen) const {
  const int64_t T = seq_len_, body = T - kCopy;
  Batch b = token_batch(batch_size, T);
  std::vector<int64_t> pos(static_cast<size_t>(body));
  for (int64_t s = 0; s < batch_size; ++s) {
    int32_t* x = b.x.data<int32_t>() + s * T;
    int32_t* y = b.y.data<int32_t>() + s * T;
    std::fill(x, x + body, kNoise);
    std::fill(x + body, x + T, kMarker);
    // kCopy distinct positions in [0, body): a partial Fisher-Yates shuffle, then in order.
    std::iota(pos.begin(), pos.end(), int64_t{0});
    for (int64_t i = 0; i < kCopy; ++i)
      std::swap(pos[static_cast<size_t>(i)], pos[static_cast<size_t>(i) + gen.randint(static_cast<uint64_t>(body - i))]);
    std::sort(pos.begin(), pos.begin() + kCopy);
    for (int64_t i = 0; i < kCopy; ++i) {
      const int32_t tok = draw(gen, kFirstData, static_cast<int32_t>(kVocab - 1));
      x[pos[static_cast<size_t>(i)]] = tok;
      y[body + i] = tok;
    }
  }
  return b;
}

InductionHeads::InductionHeads(int64_t seq_len, int64_t key_distance) : seq_len_(seq_len), key_distance_(key_distance) {
  SEQLAB_CHECK(seq_len >= 3, "induction_heads: seq_len must be at least 3 (trigger, key, trigger), got ", seq_len);
  SEQLAB_CHECK(key_distance == 0 || (key_distance >= 2 && key_distance <= seq_len - 1),
               "induction_heads: key distance must be 0 (random) or in [2, seq_len - 1] = [2, ", seq_len - 1,
               "], got ", key_distance);
}

Batch InductionHeads::sample(int64_t batch_size, Generator& gen) const {
  const int64_t T = seq_len_;
  Batch b = token_batch(batch_size, T);
  for (int64_t s = 0; s < batch_size; ++s) {
    int32_t* x = b.x.data<int32_t>() + s * T;
    int32_t* y = b.y.data<int32_t>() + s * T;
    for (int64_t t = 0; t < T - 1; ++t) x[t] = draw(gen, 1, static_cast<int32_t>(kVocab - 1));
    const int64_t p = key_distance_ > 0 ? T - 1 - key_distance_
                                        : static_cast<int64_t>(gen.randint(static_cast<uint64_t>(T - 2)));  // [0, T - 3]
    x[p] = kTrigger;  // x[p + 1] (an ordinary token, p + 1 <= T - 2) is the key
    x[T - 1] = kTrigger;
    y[T - 1] = x[p + 1];
  }
  return b;
}

std::unique_ptr<TokenTask> make_token_task(const std::string& name, int64_t seq_len, int64_t key_distance) {
  SEQLAB_CHECK(key_distance == 0 || name == "induction_heads", "token task '", name,
               "': a key distance applies only to induction_heads, got ", key_distance);
  if (name == "selective_copy") return std::make_unique<SelectiveCopy>(seq_len);
  if (name == "induction_heads") return std::make_unique<InductionHeads>(seq_len, key_distance);
  throw Error(str("token task: unknown name '", name, "', expected one of selective_copy, induction_heads"));
}

Series sine_series(const SineOptions& opt) {
  SEQLAB_CHECK(opt.rows >= 1, "sine_series: rows must be at least 1, got ", opt.rows);
  SEQLAB_CHECK(opt.channels >= 1, "sine_series: channels must be at least 1, got ", opt.channels);
  SEQLAB_CHECK(opt.noise >= 0, "sine_series: noise must be >= 0, got ", opt.noise);
  SEQLAB_CHECK(std::abs(opt.ar) < 1, "sine_series: ar must lie in (-1, 1) for a stationary AR(1), got ", opt.ar);
  const int64_t R = opt.rows, C = opt.channels;
  const double two_pi = 2 * std::numbers::pi;
  Generator gen(opt.seed);
  std::vector<double> phase(static_cast<size_t>(C)), ar_state(static_cast<size_t>(C), 0.0);
  for (auto& ph : phase) ph = two_pi * gen.uniform();
  Series s;
  s.source = "synthetic:sine";
  for (int64_t c = 0; c + 1 < C; ++c) s.columns.push_back(str("x", c));
  s.columns.push_back("OT");
  s.values = Tensor::empty({R, C}, DType::f64);
  double* v = s.values.data<double>();
  for (int64_t t = 0; t < R; ++t) {
    const auto tt = static_cast<double>(t);
    double others = 0;
    for (int64_t c = 0; c < C; ++c) {
      double& n = ar_state[static_cast<size_t>(c)];
      n = opt.ar * n + opt.noise * gen.normal();
      const double ph = phase[static_cast<size_t>(c)];
      double x = std::sin(two_pi * tt / 24 + ph) + 0.5 * std::sin(two_pi * tt / 168 + 2 * ph) + n;
      if (c + 1 == C && C > 1) x = others / static_cast<double>(C - 1) + n;  // OT follows the others
      others += x;
      v[t * C + c] = x;
    }
  }
  return s;
}

}  // namespace seqlab::data
