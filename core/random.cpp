#include "core/random.h"

#include <cmath>
#include <cstring>
#include <numbers>

namespace seqlab {
namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Generator::manual_seed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& v : s_) v = splitmix64(x);
  has_spare_ = false;
  spare_ = 0;
}

uint64_t Generator::next_u64() {
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = 0;
  while (u1 <= 0) u1 = uniform();
  double u2 = uniform();
  double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2 * std::numbers::pi * u2);
  has_spare_ = true;
  return r * std::cos(2 * std::numbers::pi * u2);
}

uint64_t Generator::randint(uint64_t n) { return n == 0 ? 0 : next_u64() % n; }

std::array<uint64_t, 6> Generator::state() const {
  uint64_t spare_bits;
  static_assert(sizeof(spare_bits) == sizeof(spare_));
  std::memcpy(&spare_bits, &spare_, sizeof(spare_));
  return {s_[0], s_[1], s_[2], s_[3], has_spare_ ? 1ULL : 0ULL, spare_bits};
}

void Generator::set_state(const std::array<uint64_t, 6>& s) {
  for (int i = 0; i < 4; ++i) s_[i] = s[i];
  has_spare_ = s[4] != 0;
  std::memcpy(&spare_, &s[5], sizeof(spare_));
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

Tensor rand_uniform(const Shape& shape, double lo, double hi, DType dtype, Generator& gen) {
  Tensor t = Tensor::empty(shape, dtype);
  dispatch_float(dtype, "rand_uniform", [&]<typename T>() {
    T* p = t.data<T>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<T>(lo + (hi - lo) * gen.uniform());
  });
  return t;
}

Tensor randn(const Shape& shape, double mean, double std, DType dtype, Generator& gen) {
  Tensor t = Tensor::empty(shape, dtype);
  dispatch_float(dtype, "randn", [&]<typename T>() {
    T* p = t.data<T>();
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<T>(mean + std * gen.normal());
  });
  return t;
}

}  // namespace seqlab
