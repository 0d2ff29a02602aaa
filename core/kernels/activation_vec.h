// GELU and GLU over contiguous float32 buffers, explicit vectors on the ISA path in use
// (activation_vec.cpp); the Tensor ops in unary.h and the S4D block's kernels call these.
#pragma once
#include <cstdint>

namespace seqlab::kernels {

/// y[i] = x[i] Phi(x[i]) for i < n (y may alias x), parallel over chunks.
void gelu_forward_f32(const float* x, float* y, int64_t n);
/// dx[i] = dy[i] (Phi(x[i]) + x[i] phi(x[i])) for i < n.
void gelu_backward_f32(const float* dy, const float* x, float* dx, int64_t n);
/// out (R, D) = a sigmoid(b) for z (R, 2D) = [a | b] row by row.
void glu_forward_f32(const float* z, float* out, int64_t R, int64_t D);
/// dz (R, 2D) of glu_forward_f32 from dout (R, D).
void glu_backward_f32(const float* dout, const float* z, float* dz, int64_t R, int64_t D);

}  // namespace seqlab::kernels
