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
constexpr int64_t kGrain = 32768;  // as core/kernels/loops.h
}  // namespace

void gelu_forward_f32(const float* x, float* y, int64_t n) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    for_each_vec(lo, hi, [&](int64_t i, int cnt) {
      const VecF v = load_lanes(x + i, cnt);
      VecF e;
      store_lanes(y + i, 0.5f * v * (1.0f + vmath::erf_exp_of(v * float(M_SQRT1_2), e)), cnt);
    });
  });
}

void gelu_backward_f32(const float* dy, const float* x, float* dx, int64_t n) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    for_each_vec(lo, hi, [&](int64_t i, int cnt) {
      const VecF v = load_lanes(x + i, cnt);
      VecF e;  // e^{-v^2/2}, from the erf's own exponential
      const VecF cdf = 0.5f * (1.0f + vmath::erf_exp_of(v * float(M_SQRT1_2), e));
      const VecF pdf = float(0.5 * M_2_SQRTPI * M_SQRT1_2) * e;  // 1/sqrt(2 pi) e^{-v^2/2}
      store_lanes(dx + i, load_lanes(dy + i, cnt) * (cdf + v * pdf), cnt);
    });
  });
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
