// GELU on float32, compiled once per ISA path (core/kernels/isa_target.h): explicit kIsaLanes-wide
// vectors over vmath::erf_exp_of. The generic map in unary.cpp leaves these loops scalar where GCC
// cannot if-convert the erf's branches (seen on AVX2: 18% of a transformer step); the double and
// any-dtype paths stay there.
//   gelu(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2;  dx = dy (Phi(x) + x phi(x))
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/kernels/vmath.h"
#include "core/parallel.h"
#include "core/kernels/isa_target.h"  // last: the ISA of everything below

namespace seqlab::kernels::SEQLAB_ISA_NS {
namespace {

using VF = vmath::VecTypes<kIsaLanes>::f;
constexpr int64_t kGrain = 32768;  // as core/kernels/loops.h

// f over [lo, hi): full vectors, then one zero-padded vector for the tail (same lanes, same maths).
template <typename F>
[[gnu::always_inline]] inline void vec_loop(int64_t lo, int64_t hi, F&& f) {
  int64_t i = lo;
  for (; i + kIsaLanes <= hi; i += kIsaLanes) f(i, kIsaLanes);
  if (i < hi) f(i, static_cast<int>(hi - i));
}
[[gnu::always_inline]] inline VF load(const float* p, int cnt) {
  VF v{};
  std::memcpy(&v, p, sizeof(float) * static_cast<size_t>(cnt));
  return v;
}
[[gnu::always_inline]] inline void store(float* p, VF v, int cnt) {
  std::memcpy(p, &v, sizeof(float) * static_cast<size_t>(cnt));
}

}  // namespace

void gelu_forward_f32(const float* x, float* y, int64_t n) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    vec_loop(lo, hi, [&](int64_t i, int cnt) {
      const VF v = load(x + i, cnt);
      VF e;
      store(y + i, 0.5f * v * (1.0f + vmath::erf_exp_of(v * float(M_SQRT1_2), e)), cnt);
    });
  });
}

void gelu_backward_f32(const float* dy, const float* x, float* dx, int64_t n) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    vec_loop(lo, hi, [&](int64_t i, int cnt) {
      const VF v = load(x + i, cnt);
      VF e;  // e^{-v^2/2}, from the erf's own exponential
      const VF cdf = 0.5f * (1.0f + vmath::erf_exp_of(v * float(M_SQRT1_2), e));
      const VF pdf = float(0.5 * M_2_SQRTPI * M_SQRT1_2) * e;  // 1/sqrt(2 pi) e^{-v^2/2}
      store(dx + i, load(dy + i, cnt) * (cdf + v * pdf), cnt);
    });
  });
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
