// GELU and GLU on float32, compiled once per ISA path (core/kernels/isa_target.h): explicit
// kIsaLanes-wide vectors over vmath's vector forms. Generic loops over these functions stay scalar
// where GCC cannot if-convert the branches of erf or exp (seen on AVX2: GELU 18% of a transformer
// step, GLU 22% of an S4D step); the double paths stay with the generic loops.
//   gelu(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2;  dx = dy (Phi(x) + x phi(x))
//   glu(a, b) = a sigmoid(b);  da = g s,  db = g a s (1 - s)
#include <algorithm>
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

void glu_forward_f32(const float* z, float* out, int64_t R, int64_t D) {
  parallel_for(0, R, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, D)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *a = z + r * 2 * D, *b = a + D;
      float* o = out + r * D;
      for_each_vec(0, D, [&](int64_t d, int cnt) {
        store_lanes(o + d, load_lanes(a + d, cnt) * vmath::sigmoid_of(load_lanes(b + d, cnt)), cnt);
      });
    }
  });
}

void glu_backward_f32(const float* dout, const float* z, float* dz, int64_t R, int64_t D) {
  parallel_for(0, R, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, D)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *a = z + r * 2 * D, *b = a + D, *g = dout + r * D;
      float *da = dz + r * 2 * D, *db = da + D;
      for_each_vec(0, D, [&](int64_t d, int cnt) {
        const VecF s = vmath::sigmoid_of(load_lanes(b + d, cnt)), gv = load_lanes(g + d, cnt);
        store_lanes(da + d, gv * s, cnt);
        store_lanes(db + d, gv * load_lanes(a + d, cnt) * s * (1.0f - s), cnt);
      });
    }
  });
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
