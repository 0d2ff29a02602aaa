// The floating-point peak of one core on an ISA path, for benchmark reports (seqlab bench prints it
// beside each path's figures): 12 independent chains of kIsaLanes-wide multiply-adds, enough to
// cover the FMA latency on two ports, few enough to stay in the 16 registers of AVX2 and SSE2.
// Counts 2 FLOP per lane per multiply-add (FMA where the path has it, a multiply and an add on
// SSE2, which is what that path's kernels get too).
#include <chrono>
#include <cstdint>

#include "core/kernels/isa_target.h"  // last: the ISA of everything below

namespace seqlab::kernels::SEQLAB_ISA_NS {

double fma_peak_gflops(int64_t iterations) {
  using VF = VecF;
  constexpr int kChains = 12;
  VF acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = vmath::splat<VF>(1.0f + 1e-3f * static_cast<float>(c));
  const VF a = vmath::splat<VF>(0.999999f), b = vmath::splat<VF>(1e-6f);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * a + b;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  float sink = 0;
  for (int c = 0; c < kChains; ++c) sink += acc[c][0];
  asm volatile("" : : "g"(sink));
  return 2.0 * kIsaLanes * kChains * static_cast<double>(iterations) / s / 1e9;
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
