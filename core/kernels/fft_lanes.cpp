// LaneFFT's transforms (core/kernels/fft.h), compiled once per ISA path (isa_target.h): the
// butterflies are plain vector arithmetic on kLanes = 8 signals, one AVX2 register per LaneVec, two
// SSE2 registers on the generic path. The plan (radices, twiddles) is built once in fft.cpp.
// Stage i turns x into y with y[q + s (r p + k)] = (sum_j x[q + s (p + j m)] w_r^{jk}) w_n^{pk}
// (m = n_cur / r, s the product of the earlier radices); no bit reversal is needed.
#include <complex>
#include <cstring>
#include <utility>

#include "core/kernels/fft.h"
#include "core/kernels/isa_target.h"  // last: the ISA of everything below

namespace seqlab::kernels::SEQLAB_ISA_NS {
namespace {

using V = LaneVec;
using P = LanePoint;

[[gnu::always_inline]] inline P add(P a, P b) { return {a.re + b.re, a.im + b.im}; }
[[gnu::always_inline]] inline P sub(P a, P b) { return {a.re - b.re, a.im - b.im}; }
// a * (-i) forward, a * (+i) inverse
template <bool Inv>
[[gnu::always_inline]] inline P rot(P a) {
  if constexpr (Inv) return {-a.im, a.re};
  else return {a.im, -a.re};
}
// a * w, w a scalar twiddle (conjugated for the inverse)
template <bool Inv>
[[gnu::always_inline]] inline P twiddle(P a, std::complex<float> w) {
  const float wr = w.real(), wi = Inv ? -w.imag() : w.imag();
  return {a.re * wr - a.im * wi, a.re * wi + a.im * wr};
}

template <bool Inv>
void stage2(const P* x, P* y, int64_t m, int64_t s, const std::complex<float>* tw) {
  for (int64_t p = 0; p < m; ++p) {
    const std::complex<float> w1 = tw[p];
    for (int64_t q = 0; q < s; ++q) {
      const P a0 = x[q + s * p], a1 = x[q + s * (p + m)];
      y[q + s * (2 * p)] = add(a0, a1);
      y[q + s * (2 * p + 1)] = twiddle<Inv>(sub(a0, a1), w1);
    }
  }
}

template <bool Inv>
void stage4(const P* x, P* y, int64_t m, int64_t s, const std::complex<float>* tw) {
  for (int64_t p = 0; p < m; ++p) {
    const std::complex<float> w1 = tw[3 * p], w2 = tw[3 * p + 1], w3 = tw[3 * p + 2];
    for (int64_t q = 0; q < s; ++q) {
      const P a0 = x[q + s * p], a1 = x[q + s * (p + m)], a2 = x[q + s * (p + 2 * m)], a3 = x[q + s * (p + 3 * m)];
      const P t0 = add(a0, a2), t1 = sub(a0, a2), t2 = add(a1, a3), t3 = rot<Inv>(sub(a1, a3));
      P* o = y + q + s * (4 * p);
      o[0] = add(t0, t2);
      o[s] = twiddle<Inv>(add(t1, t3), w1);
      o[2 * s] = twiddle<Inv>(sub(t0, t2), w2);
      o[3 * s] = twiddle<Inv>(sub(t1, t3), w3);
    }
  }
}

template <bool Inv>
void stage3(const P* x, P* y, int64_t m, int64_t s, const std::complex<float>* tw) {
  const float h = 0.866025403784438647f;  // sin(2 pi / 3)
  for (int64_t p = 0; p < m; ++p) {
    const std::complex<float> w1 = tw[2 * p], w2 = tw[2 * p + 1];
    for (int64_t q = 0; q < s; ++q) {
      const P a0 = x[q + s * p], a1 = x[q + s * (p + m)], a2 = x[q + s * (p + 2 * m)];
      const P t1 = add(a1, a2);
      const P t2 = {a0.re - 0.5f * t1.re, a0.im - 0.5f * t1.im};
      const P d = sub(a1, a2);
      const P t3 = rot<Inv>(P{h * d.re, h * d.im});  // -i sin60 (a1 - a2) forward
      P* o = y + q + s * (3 * p);
      o[0] = add(a0, t1);
      o[s] = twiddle<Inv>(add(t2, t3), w1);
      o[2 * s] = twiddle<Inv>(sub(t2, t3), w2);
    }
  }
}

template <bool Inv>
void stage5(const P* x, P* y, int64_t m, int64_t s, const std::complex<float>* tw) {
  const float c1 = 0.309016994374947424f, c2 = -0.809016994374947424f;  // cos(2 pi / 5), cos(4 pi / 5)
  const float s1 = 0.951056516295153572f, s2 = 0.587785252292473129f;   // sin(2 pi / 5), sin(4 pi / 5)
  for (int64_t p = 0; p < m; ++p) {
    const std::complex<float>* w = tw + 4 * p;
    for (int64_t q = 0; q < s; ++q) {
      const P a0 = x[q + s * p], a1 = x[q + s * (p + m)], a2 = x[q + s * (p + 2 * m)],
              a3 = x[q + s * (p + 3 * m)], a4 = x[q + s * (p + 4 * m)];
      const P t1 = add(a1, a4), t2 = add(a2, a3), t3 = sub(a1, a4), t4 = sub(a2, a3);
      const P m1 = {a0.re + c1 * t1.re + c2 * t2.re, a0.im + c1 * t1.im + c2 * t2.im};
      const P m2 = {a0.re + c2 * t1.re + c1 * t2.re, a0.im + c2 * t1.im + c1 * t2.im};
      const P n1 = rot<Inv>(P{s1 * t3.re + s2 * t4.re, s1 * t3.im + s2 * t4.im});  // -i (.) forward
      const P n2 = rot<Inv>(P{s2 * t3.re - s1 * t4.re, s2 * t3.im - s1 * t4.im});
      P* o = y + q + s * (5 * p);
      o[0] = {a0.re + t1.re + t2.re, a0.im + t1.im + t2.im};
      o[s] = twiddle<Inv>(add(m1, n1), w[0]);
      o[2 * s] = twiddle<Inv>(add(m2, n2), w[1]);
      o[3 * s] = twiddle<Inv>(sub(m2, n2), w[2]);
      o[4 * s] = twiddle<Inv>(sub(m1, n1), w[3]);
    }
  }
}

template <bool Inv>
void run(const LaneFFT& plan, LanePoint* x, LanePoint* work) {
  LanePoint *src = x, *dst = work;
  for (const LaneFFT::Stage& st : plan.stages()) {
    switch (st.radix) {
      case 4: stage4<Inv>(src, dst, st.m, st.s, st.tw.data()); break;
      case 2: stage2<Inv>(src, dst, st.m, st.s, st.tw.data()); break;
      case 3: stage3<Inv>(src, dst, st.m, st.s, st.tw.data()); break;
      default: stage5<Inv>(src, dst, st.m, st.s, st.tw.data()); break;
    }
    std::swap(src, dst);
  }
  if (src != x) std::memcpy(static_cast<void*>(x), src, sizeof(LanePoint) * static_cast<size_t>(plan.size()));
}

}  // namespace

void lane_fft_run(const LaneFFT& plan, bool inverse, LanePoint* x, LanePoint* work) {
  if (inverse) run<true>(plan, x, work);
  else run<false>(plan, x, work);
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
