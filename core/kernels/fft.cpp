// Real FFT plans over KissFFT's kiss_fftr (float). One plan per (thread, length): kiss_fftr keeps
// a scratch buffer inside its config, so a shared plan would race between TBB workers.
#include "core/kernels/fft.h"

#include <kissfft/kiss_fftr.h>

#include <map>
#include <memory>

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
