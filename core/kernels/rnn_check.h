// The argument checks of the fused recurrent kernels (core/kernels/rnn.h), defined once in
// rnn_dispatch.cpp (outside the ISA paths) and called by every ISA path of rnn.cpp and by the CUDA twin
// (core/cuda/rnn.cu), so all of them raise the same errors. Glossary: B batch, T time, I input width,
// H hidden width, G gate blocks.
#pragma once
#include <cstdint>

#include "core/kernels/rnn.h"
#include "core/tensor.h"

namespace seqlab::kernels {

/// The sizes of one recurrent layer call.
struct RnnDims {
  int64_t B, T, I, H, G;
};
/// Checks x (B, T, I), w_ih (G*H, I), w_hh (G*H, H), b_ih and b_hh (G*H, or undefined) of x's dtype and the
/// 32-bit BLAS sizes; the errors open with the cell's name.
RnnDims check_rnn_shapes(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                         const Tensor& b_hh);
/// rnn_forward's checks: check_rnn_shapes, then h0 and c0 (B, H) of x's dtype or undefined, c0 for the lstm only.
RnnDims check_rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                          const Tensor& b_hh, const Tensor& h0, const Tensor& c0);
/// rnn_backward's checks: check_rnn_shapes (no biases), then dy of f.y's shape and x's dtype.
RnnDims check_rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                           const RnnForward& f);

}  // namespace seqlab::kernels
