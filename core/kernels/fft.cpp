// LaneFFT: a mixed-radix Stockham autosort FFT (radices 4, 2, 3, 5) whose every point is kLanes
// complex numbers, so each butterfly is a few vector operations on kLanes independent signals.
// Stage i turns x into y with y[q + s (r p + k)] = (sum_j x[q + s (p + j m)] w_r^{jk}) w_n^{pk}
// (m = n_cur / r, s the product of the earlier radices); no bit reversal is needed.
// RealFFT: KissFFT's kiss_fftr (float); one plan per (thread, length) because kiss_fftr keeps a
// scratch buffer inside its config.
#include "core/kernels/fft.h"

#include <kissfft/kiss_fftr.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>

#include "core/error.h"

namespace seqlab::kernels {

static_assert(sizeof(kiss_fft_cpx) == sizeof(std::complex<float>), "kiss_fft_cpx must be two floats");

int64_t fft_fast_size(int64_t min_n) {
  int64_t n = min_n < 2 ? 2 : min_n;
  for (;; ++n) {
    if (n % 2) continue;
    int64_t m = n;
    for (int64_t p : {2, 3, 5})
      while (m % p == 0) m /= p;
    if (m == 1) return n;
  }
}

// ---------------------------------------------------------------------------------------------
// LaneFFT

LaneFFT::LaneFFT(int64_t n) : n_(n) {
  SEQLAB_CHECK(n >= 1, "LaneFFT: expected a length >= 1, got ", n);
  std::vector<int> radices;
  int64_t r = n;
  while (r % 4 == 0) radices.push_back(4), r /= 4;
  while (r % 2 == 0) radices.push_back(2), r /= 2;
  while (r % 3 == 0) radices.push_back(3), r /= 3;
  while (r % 5 == 0) radices.push_back(5), r /= 5;
  SEQLAB_CHECK(r == 1, "LaneFFT: the length must have no prime factor above 5, got ", n);
  int64_t n_cur = n, s = 1;
  for (int radix : radices) {
    Stage st{radix, n_cur / radix, s, {}};
    st.tw.resize(static_cast<size_t>(st.m * (radix - 1)));
    for (int64_t p = 0; p < st.m; ++p)
      for (int k = 1; k < radix; ++k) {
        // exact integer reduction of p k mod n_cur keeps the angle small and the twiddle exact to ~1 ulp
        const double a = -2.0 * std::numbers::pi * static_cast<double>((p * k) % n_cur) / static_cast<double>(n_cur);
        st.tw[static_cast<size_t>(p * (radix - 1) + k - 1)] = {static_cast<float>(std::cos(a)),
                                                               static_cast<float>(std::sin(a))};
      }
    stages_.push_back(std::move(st));
    n_cur /= radix;
    s *= radix;
  }
}

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

}  // namespace

template <bool Inv>
void LaneFFT::run(LanePoint* x, LanePoint* work) const {
  LanePoint *src = x, *dst = work;
  for (const Stage& st : stages_) {
    switch (st.radix) {
      case 4: stage4<Inv>(src, dst, st.m, st.s, st.tw.data()); break;
      case 2: stage2<Inv>(src, dst, st.m, st.s, st.tw.data()); break;
      case 3: stage3<Inv>(src, dst, st.m, st.s, st.tw.data()); break;
      default: stage5<Inv>(src, dst, st.m, st.s, st.tw.data()); break;
    }
    std::swap(src, dst);
  }
  if (src != x) std::memcpy(static_cast<void*>(x), src, sizeof(LanePoint) * static_cast<size_t>(n_));
}

void LaneFFT::forward(LanePoint* x, LanePoint* work) const { run<false>(x, work); }
void LaneFFT::inverse(LanePoint* x, LanePoint* work) const { run<true>(x, work); }

const LaneFFT& lane_fft_plan(int64_t n) {
  static std::mutex mu;
  static std::map<int64_t, std::unique_ptr<LaneFFT>> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto& p = plans[n];
  if (!p) p = std::make_unique<LaneFFT>(n);
  return *p;
}

// ---------------------------------------------------------------------------------------------
// RealFFT (KissFFT)

RealFFT::RealFFT(int64_t n) : n_(n) {
  SEQLAB_CHECK(n >= 2 && n % 2 == 0, "RealFFT: expected an even length >= 2, got ", n);
  fwd_ = kiss_fftr_alloc(static_cast<int>(n), 0, nullptr, nullptr);
  inv_ = kiss_fftr_alloc(static_cast<int>(n), 1, nullptr, nullptr);
  SEQLAB_CHECK(fwd_ && inv_, "RealFFT: kiss_fftr_alloc failed for length ", n);
}

RealFFT::~RealFFT() {
  kiss_fftr_free(fwd_);
  kiss_fftr_free(inv_);
}

void RealFFT::forward(const float* in, std::complex<float>* out) const {
  kiss_fftr(static_cast<kiss_fftr_cfg>(fwd_), in, reinterpret_cast<kiss_fft_cpx*>(out));
}

void RealFFT::inverse(const std::complex<float>* in, float* out) const {
  kiss_fftri(static_cast<kiss_fftr_cfg>(inv_), reinterpret_cast<const kiss_fft_cpx*>(in), out);
}

const RealFFT& real_fft_plan(int64_t n) {
  thread_local std::map<int64_t, std::unique_ptr<RealFFT>> plans;
  auto& p = plans[n];
  if (!p) p = std::make_unique<RealFFT>(n);
  return *p;
}

}  // namespace seqlab::kernels
