// Small per-ISA entry points that need no header of their own (see isa_dispatch.h).
#include "core/kernels/isa_dispatch.h"
#include "core/kernels/isa_info.h"

namespace seqlab::kernels {

SEQLAB_ISA_DECLARE(double fma_peak_gflops(int64_t iterations))

double fma_peak_gflops(int64_t iterations) { SEQLAB_ISA_CALL(fma_peak_gflops, iterations); }

}  // namespace seqlab::kernels
