// FFTs for the S4D long convolution (core/kernels/s4d.cpp).
// - LaneFFT: complex FFTs of 2,3,5-smooth length run on kLanes independent signals at once, each
//   point a pair of float vectors (re[kLanes], im[kLanes]); a mixed-radix (4, 2, 3, 5) Stockham
//   autosort transform, so every butterfly is plain vector arithmetic with no shuffles. The S4D
//   convolution puts kLanes channels of one batch row in the real parts and kLanes more in the
//   imaginary parts: one transform serves 2 kLanes real signals, read straight from (B, T, D) rows.
#pragma once
#include <complex>
#include <cstdint>
#include <vector>

#include "core/kernels/vmath.h"

namespace seqlab::kernels {

/// Smallest even length >= min_n whose only prime factors are 2, 3 and 5 (fast for LaneFFT).
int64_t fft_fast_size(int64_t min_n);

/// kLanes floats as one vector (vmath's; one AVX2 register, two SSE2 registers).
constexpr int kLanes = 8;
using LaneVec = vmath::Vec<float, kLanes>;
/// One point of kLanes complex signals.
struct alignas(sizeof(LaneVec)) LanePoint {
  LaneVec re, im;
};

/// Complex FFTs of length n (2,3,5-smooth, >= 1) over kLanes signals at once. Twiddles are computed in
/// double once per plan; a plan holds no scratch, so one plan is shared by all threads.
class LaneFFT {
 public:
  explicit LaneFFT(int64_t n);
  int64_t size() const { return n_; }
  /// x (n points) -> its DFT sum_t x[t] e^{-2 pi i k t / n}, in place; work holds n points.
  void forward(LanePoint* x, LanePoint* work) const;
  /// Unnormalised inverse: sum_k x[k] e^{+2 pi i k t / n} (inverse(forward(x)) = n x), in place.
  void inverse(LanePoint* x, LanePoint* work) const;

  struct Stage {
    int radix;
    int64_t m, s;                    // m = n_cur / radix butterflies, s = stride (lanes of q)
    std::vector<std::complex<float>> tw;  // (m, radix - 1): e^{-2 pi i p k / n_cur}
  };
  /// The plan: one stage per radix, in the order they run (fft_lanes.cpp runs them).
  const std::vector<Stage>& stages() const { return stages_; }

 private:
  int64_t n_;
  std::vector<Stage> stages_;
};

/// The shared plan of length n (created once, kept for the process' lifetime; thread-safe).
const LaneFFT& lane_fft_plan(int64_t n);

}  // namespace seqlab::kernels
