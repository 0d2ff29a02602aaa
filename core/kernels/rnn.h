// Fused recurrent kernels: a tanh RNN, an LSTM and a GRU layer over a whole (B, T, I) sequence, with
// PyTorch's gate order and parameter layout (Elman 1990; Hochreiter & Schmidhuber 1997; Cho et al.
// 2014, in the form of torch.nn.RNN/LSTM/GRU). The input projection of every step is one GEMM; the
// recurrence runs a per-step GEMM h @ W_hh^T followed by one fused gate loop; backpropagation through
// time is one hand-written pass whose weight gradients are big GEMMs after the loop.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// The recurrent cell. G gates per step: tanh 1, lstm 4 (i, f, g, o), gru 3 (r, z, n).
enum class RnnCell { tanh, lstm, gru };

/// G, the number of gate blocks of H rows in W_ih and W_hh.
int64_t rnn_gate_count(RnnCell cell);
/// "rnn_tanh", "lstm" or "gru".
const char* rnn_cell_name(RnnCell cell);

/// What the forward produces and what its backward reads.
struct RnnForward {
  Tensor y;       // (B, T, H) hidden states h_1..h_T
  Tensor gates;   // lstm (B, T, 4H): i, f, g, o after their nonlinearity; gru (B, T, 4H): r, z, n,
                  // hn = W_hn h + b_hn; tanh: undefined (y is the activation)
  Tensor c;       // lstm (B, T, H): cell states c_1..c_T; undefined otherwise
  Tensor h_last;  // (B, H) h_T
  Tensor c_last;  // (B, H) c_T for the lstm, undefined otherwise
};

/// Runs the cell over x (B, T, I) with w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H) (either bias may
/// be undefined: zero), from h0 (and c0 for the lstm), each (B, H) or undefined for zeros.
RnnForward rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                       const Tensor& b_hh, const Tensor& h0 = Tensor(), const Tensor& c0 = Tensor());

/// Gradients of rnn_forward from a zero initial state; an entry is undefined when not asked for.
struct RnnGrads {
  Tensor dx, dw_ih, dw_hh, db_ih, db_hh;
};

/// Backpropagation through time of rnn_forward (zero h0, c0) given dy (B, T, H) and the saved f.
/// It runs in time chunks of time_chunk steps (0: about 8192 / B steps), holding the gate gradients
/// of one chunk only; the chunk length changes rounding, never the maths (the tests vary it).
RnnGrads rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                      const RnnForward& f, bool need_dx, bool need_dw_ih, bool need_dw_hh, bool need_db_ih,
                      bool need_db_hh, int64_t time_chunk = 0);

}  // namespace seqlab::kernels
