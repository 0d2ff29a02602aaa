// Synthetic tasks generated on the fly from a seed: two token tasks that separate models by
// content-aware memory (selective copying and induction heads, as in the Mamba paper, Gu & Dao
// 2023, section 4.1) and a noisy sine + AR(1) series that goes through the forecasting path.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/random.h"
#include "data/dataset.h"
#include "data/series.h"

namespace seqlab::data {

constexpr int32_t kIgnoreIndex = -100;  // target value that the loss skips

/// A token task: batches of x int32 (B, T) in [0, vocab) and y int32 (B, T), y = -100 where not scored.
class TokenTask {
 public:
  virtual ~TokenTask() = default;
  /// "selective_copy" or "induction_heads".
  virtual std::string name() const = 0;
  /// Number of token values V (x and scored y lie in [0, V)).
  virtual int64_t vocab_size() const = 0;
  /// Sequence length T.
  virtual int64_t seq_len() const = 0;
  /// Number of scored positions per sequence.
  virtual int64_t scored_per_sequence() const = 0;
  /// A fresh batch of B sequences drawn from gen (same gen state -> same batch).
  virtual Batch sample(int64_t batch_size, Generator& gen) const = 0;
  /// Batch number `step` of a stream seeded by `seed`: a pure function of (seed, step).
  Batch batch(int64_t batch_size, uint64_t seed, int64_t step) const;
};

/// Selective copying. Vocabulary 16: 0 = noise, 1 = marker, 2..15 = data tokens.
/// x (T >= 2 * 16): positions [0, T - 16) are noise except 16 random distinct positions (in
/// increasing order) holding data tokens d_0..d_15 drawn uniformly from 2..15; positions
/// [T - 16, T) are markers. y = -100 except y[T - 16 + i] = d_i: at the i-th marker a causal model
/// outputs the i-th data token, so it must remember the data tokens and skip the noise.
class SelectiveCopy : public TokenTask {
 public:
  static constexpr int32_t kNoise = 0, kMarker = 1, kFirstData = 2;
  static constexpr int64_t kVocab = 16, kCopy = 16;
  /// Throws seqlab::Error when seq_len < 32.
  explicit SelectiveCopy(int64_t seq_len);
  std::string name() const override { return "selective_copy"; }
  int64_t vocab_size() const override { return kVocab; }
  int64_t seq_len() const override { return seq_len_; }
  int64_t scored_per_sequence() const override { return kCopy; }
  Batch sample(int64_t batch_size, Generator& gen) const override;

 private:
  int64_t seq_len_;
};

/// Induction heads. Vocabulary 16: 0 = trigger, 1..15 = ordinary tokens.
/// x (T >= 3): ordinary tokens drawn uniformly from 1..15, except the trigger at one random
/// position p in [0, T - 3] followed by the key k = x[p + 1] (an ordinary token), and the trigger
/// again at T - 1; the trigger appears nowhere else. y = -100 except y[T - 1] = k: after seeing the
/// trigger again the model must recall the token that followed it the first time.
/// key_distance d > 0 fixes p = T - 1 - d (the query comes d positions after the first trigger, so
/// the key must be held for d - 1 steps): a probe of how far back a model remembers, at any length.
class InductionHeads : public TokenTask {
 public:
  static constexpr int32_t kTrigger = 0;
  static constexpr int64_t kVocab = 16;
  /// Throws seqlab::Error when seq_len < 3, or key_distance is not 0 or in [2, seq_len - 1].
  explicit InductionHeads(int64_t seq_len, int64_t key_distance = 0);
  std::string name() const override { return "induction_heads"; }
  int64_t vocab_size() const override { return kVocab; }
  int64_t seq_len() const override { return seq_len_; }
  int64_t scored_per_sequence() const override { return 1; }
  Batch sample(int64_t batch_size, Generator& gen) const override;
  /// 0: the first trigger at a uniformly random position; d: at T - 1 - d.
  int64_t key_distance() const { return key_distance_; }

 private:
  int64_t seq_len_;
  int64_t key_distance_;
};

/// "selective_copy" or "induction_heads" of length seq_len; throws listing the choices otherwise.
/// key_distance (induction_heads only; 0 = random): see InductionHeads.
std::unique_ptr<TokenTask> make_token_task(const std::string& name, int64_t seq_len, int64_t key_distance = 0);

struct SineOptions {
  int64_t rows = 2000;
  int64_t channels = 3;  // columns "x0", ..., "x{C-2}", "OT" (the last is the default target)
  double noise = 0.1;    // std of the AR(1) noise innovations
  double ar = 0.5;       // AR(1) coefficient of the noise
  uint64_t seed = 0;
};

/// Channel c < C - 1: sin(2 pi t / 24 + phi_c) + 0.5 sin(2 pi t / 168 + 2 phi_c) + n_c(t), phi_c
/// uniform in [0, 2 pi), n_c(t) = ar * n_c(t - 1) + noise * N(0, 1); the last channel "OT" is the
/// mean of the others plus its own AR(1) noise (a plain channel when C = 1). Deterministic in the
/// options; source = "synthetic:sine", no dates.
Series sine_series(const SineOptions& opt);

}  // namespace seqlab::data
