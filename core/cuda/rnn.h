// The CUDA twins of core/kernels/rnn.h: the tanh RNN, LSTM and GRU layer kernels on device tensors
// (same shapes, dtypes, saved tensors and maths). Plain C++: core/kernels/rnn_dispatch.cpp calls these
// when its inputs live on the device.
#pragma once
#include <cstdint>

#include "core/kernels/rnn.h"
#include "core/tensor.h"

namespace seqlab::cuda {

using kernels::RnnCell;
using kernels::RnnForward;
using kernels::RnnGrads;

/// kernels::rnn_forward on the device: one GEMM for the input projection of every step, then the
/// recurrence in one persistent kernel (each block owns batch rows for the whole sequence, W_hh in
/// registers or shared memory) when W_hh fits one block; else per step a GEMM h_{t-1} @ W_hh^T and one
/// fused gate kernel.
RnnForward rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                       const Tensor& b_hh, const Tensor& h0 = Tensor(), const Tensor& c0 = Tensor());

/// kernels::rnn_backward on the device: per time chunk (the CPU's chunking), the chunk's steps in one
/// persistent kernel (gate gradients and dh_{t-1} per batch row) when W_hh fits one block, else per
/// step one fused gate-gradient kernel and one GEMM for dh_{t-1}; then dx, dW_ih, dW_hh as big GEMMs
/// over the chunk's rows and the bias gradients as fixed-order column sums (in double, as the CPU).
RnnGrads rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                      const RnnForward& f, bool need_dx, bool need_dw_ih, bool need_dw_hh, bool need_db_ih,
                      bool need_db_hh, int64_t time_chunk = 0);

}  // namespace seqlab::cuda
