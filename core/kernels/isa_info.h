// Measurements of the ISA path in use (core/isa.h), for benchmark reports.
#pragma once
#include <cstdint>

namespace seqlab::kernels {

/// One core's multiply-add peak on the path in use, in GFLOP/s (2 FLOP per lane per multiply-add),
/// from `iterations` rounds of 12 independent vector chains (2e8 takes about a second at AVX2 speeds).
double fma_peak_gflops(int64_t iterations = 100000000);

}  // namespace seqlab::kernels
