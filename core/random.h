// Seeded random numbers, reproducible across runs and thread counts: a counter-free xoshiro256**
// stream seeded through splitmix64. Tensors are filled sequentially from one generator.
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace seqlab {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { manual_seed(seed); }
  void manual_seed(uint64_t seed);
  /// Next raw 64-bit value.
  uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Standard normal (Box-Muller; the second value is cached).
  double normal();
  /// Uniform integer in [0, n).
  uint64_t randint(uint64_t n);

  /// The full state, for checkpoints.
  std::array<uint64_t, 6> state() const;
  void set_state(const std::array<uint64_t, 6>& s);

 private:
  std::array<uint64_t, 4> s_{};
  bool has_spare_ = false;
  double spare_ = 0;
};

/// The process-wide generator that initialisers and dropout use by default.
Generator& default_generator();
/// Seeds the default generator.
void manual_seed(uint64_t seed);

/// Tensor of uniform values in [lo, hi).
Tensor rand_uniform(const Shape& shape, double lo, double hi, DType dtype = DType::f32,
                    Generator& gen = default_generator());
/// Tensor of normal values with the given mean and standard deviation.
Tensor randn(const Shape& shape, double mean = 0, double std = 1, DType dtype = DType::f32,
             Generator& gen = default_generator());

}  // namespace seqlab
