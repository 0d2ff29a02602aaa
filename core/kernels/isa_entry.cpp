// Small per-ISA entry points that need no header of their own (see isa_dispatch.h).
#include "core/kernels/activation_vec.h"
#include "core/kernels/isa_dispatch.h"
#include "core/kernels/isa_info.h"

namespace seqlab::kernels {

SEQLAB_ISA_DECLARE(double fma_peak_gflops(int64_t iterations))
SEQLAB_ISA_DECLARE(void gelu_forward_f32(const float* x, float* y, int64_t n))
SEQLAB_ISA_DECLARE(void gelu_backward_f32(const float* dy, const float* x, float* dx, int64_t n))
SEQLAB_ISA_DECLARE(void glu_forward_f32(const float* z, float* out, int64_t R, int64_t D))
SEQLAB_ISA_DECLARE(void glu_backward_f32(const float* dout, const float* z, float* dz, int64_t R, int64_t D))

double fma_peak_gflops(int64_t iterations) { SEQLAB_ISA_CALL(fma_peak_gflops, iterations); }

void gelu_forward_f32(const float* x, float* y, int64_t n) { SEQLAB_ISA_CALL(gelu_forward_f32, x, y, n); }

void gelu_backward_f32(const float* dy, const float* x, float* dx, int64_t n) {
  SEQLAB_ISA_CALL(gelu_backward_f32, dy, x, dx, n);
}

void glu_forward_f32(const float* z, float* out, int64_t R, int64_t D) { SEQLAB_ISA_CALL(glu_forward_f32, z, out, R, D); }

void glu_backward_f32(const float* dout, const float* z, float* dz, int64_t R, int64_t D) {
  SEQLAB_ISA_CALL(glu_backward_f32, dout, z, dz, R, D);
}

}  // namespace seqlab::kernels
