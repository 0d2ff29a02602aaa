// Real FFTs through KissFFT (kiss_fftr, float only): plans cached per length and per thread,
// because a kiss_fftr plan carries its own scratch buffer and so cannot be shared between threads.
// Used by the S4D causal convolution (core/kernels/s4d.cpp).
#pragma once
#include <complex>
#include <cstdint>

namespace seqlab::kernels {

/// Smallest even length >= min_n whose only prime factors are 2, 3 and 5 (fast for KissFFT).
int64_t fft_fast_size(int64_t min_n);

/// A forward/inverse real FFT pair of even length n. Unnormalised: inverse(forward(x)) = n * x.
class RealFFT {
 public:
  explicit RealFFT(int64_t n);
  ~RealFFT();
  RealFFT(const RealFFT&) = delete;
  RealFFT& operator=(const RealFFT&) = delete;

  int64_t size() const { return n_; }
  /// Number of complex bins, n / 2 + 1.
  int64_t bins() const { return n_ / 2 + 1; }
  /// in (n reals) -> out (n/2 + 1 complex bins).
  void forward(const float* in, std::complex<float>* out) const;
  /// in (n/2 + 1 bins) -> out (n reals), scaled by n.
  void inverse(const std::complex<float>* in, float* out) const;

 private:
  int64_t n_;
  void* fwd_;  // kiss_fftr_cfg
  void* inv_;
};

/// This thread's cached plan of length n (created on first use, kept for the thread's lifetime).
const RealFFT& real_fft_plan(int64_t n);

}  // namespace seqlab::kernels
