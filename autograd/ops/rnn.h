// Fused recurrent layer ops (tanh RNN, LSTM, GRU over a whole sequence, PyTorch's equations and gate
// order; see core/kernels/rnn.h) and their composite references built from primitive ops. Each fused
// op is one graph node with a hand-written backpropagation through time; the initial state is zero.
#pragma once
#include "core/kernels/rnn.h"
#include "core/tensor.h"

namespace seqlab {

using kernels::RnnCell;

/// One recurrent layer: x (B, T, I), w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H, or undefined)
/// -> y (B, T, H), the hidden states h_1..h_T from h_0 = 0 (and c_0 = 0). One graph node.
///   tanh: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
///   lstm: gates i, f, g, o; c_t = f c_{t-1} + i g, h_t = o tanh(c_t)
///   gru:  gates r, z, n; h_t = (1 - z) n + z h_{t-1}
Tensor rnn_layer(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                 const Tensor& b_hh);

/// The same recurrence written with primitive ops (linear, slice, sigmoid, tanh, mul, add, concat):
/// a node per step, for tests only.
Tensor rnn_layer_reference(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                           const Tensor& b_ih, const Tensor& b_hh);

}  // namespace seqlab
