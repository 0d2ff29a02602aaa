// LaneFFT: a mixed-radix Stockham autosort FFT (radices 4, 2, 3, 5) whose every point is kLanes
// complex numbers, so each butterfly is a few vector operations on kLanes independent signals.
// This file builds the plan (radices and twiddles); the stages run in fft_lanes.cpp, once per ISA path.
#include "core/kernels/fft.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>

#include "core/error.h"
#include "core/kernels/isa_dispatch.h"

namespace seqlab::kernels {

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

SEQLAB_ISA_DECLARE(void lane_fft_run(const LaneFFT& plan, bool inverse, LanePoint* x, LanePoint* work))

// The transforms run on the ISA path in use (fft_lanes.cpp, compiled once per path).
void LaneFFT::forward(LanePoint* x, LanePoint* work) const { SEQLAB_ISA_CALL(lane_fft_run, *this, false, x, work); }
void LaneFFT::inverse(LanePoint* x, LanePoint* work) const { SEQLAB_ISA_CALL(lane_fft_run, *this, true, x, work); }

const LaneFFT& lane_fft_plan(int64_t n) {
  static std::mutex mu;
  static std::map<int64_t, std::unique_ptr<LaneFFT>> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto& p = plans[n];
  if (!p) p = std::make_unique<LaneFFT>(n);
  return *p;
}

}  // namespace seqlab::kernels
