// Fused recurrent layer ops over core/kernels/rnn: one node per layer, backpropagation through time
// in one hand-written pass. The composite references below unroll the same equations into primitive
// ops, one set of nodes per step, so the tests can compare values and gradients.
#include "autograd/ops/rnn.h"

#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"

namespace seqlab {

// y = rnn(x; W_ih, W_hh, b_ih, b_hh);  backward: per step gate gradients da (stored for all B*T rows),
// dh_{t-1} = da_h W_hh (+ dh_t z for the gru), then dx = da_x W_ih, dW_ih = da_x^T x, dW_hh = da_h^T h_prev,
// db_ih = sum da_x, db_hh = sum da_h
Tensor rnn_layer(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                 const Tensor& b_hh) {
  kernels::RnnForward f = kernels::rnn_forward(cell, x, w_ih, w_hh, b_ih, b_hh);
  bool need_x = x.requires_grad(), need_w_ih = w_ih.requires_grad(), need_w_hh = w_hh.requires_grad(),
       need_b_ih = b_ih.requires_grad(), need_b_hh = b_hh.requires_grad();
  // Saved for backward: the outputs (all h_t), the gate activations and, for the lstm, the cell states.
  kernels::RnnForward saved{f.y.detach(), f.gates, f.c, Tensor(), Tensor()};
  return record(kernels::rnn_cell_name(cell), f.y, {x, w_ih, w_hh, b_ih, b_hh},
                [cell, saved = std::move(saved), x = x.detach(), w_ih = w_ih.detach(), w_hh = w_hh.detach(), need_x,
                 need_w_ih, need_w_hh, need_b_ih, need_b_hh](const Tensor& dy) {
                  kernels::RnnGrads g = kernels::rnn_backward(cell, dy, x, w_ih, w_hh, saved, need_x, need_w_ih,
                                                              need_w_hh, need_b_ih, need_b_hh);
                  return grads{g.dx, g.dw_ih, g.dw_hh, g.db_ih, g.db_hh};
                });
}

Tensor rnn_layer_reference(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                           const Tensor& b_ih, const Tensor& b_hh) {
  SEQLAB_CHECK(x.dim() == 3 && w_hh.dim() == 2, kernels::rnn_cell_name(cell),
               "_reference: expected x (B, T, I), w_hh (G*H, H)");
  const int64_t B = x.size(0), T = x.size(1), H = w_hh.size(1);
  auto gate = [H](const Tensor& a, int64_t k) { return slice(a, 1, k * H, (k + 1) * H); };  // (B, H)
  Tensor xg = linear(x, w_ih, b_ih);                                                        // (B, T, G*H)
  Tensor h = Tensor::zeros({B, H}, x.dtype()), c = Tensor::zeros({B, H}, x.dtype());
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < T; ++t) {
    Tensor xt = reshape(slice(xg, 1, t, t + 1), {B, -1});  // (B, G*H)
    Tensor hg = linear(h, w_hh, b_hh);                       // (B, G*H)
    if (cell == RnnCell::tanh) {
      h = tanh(xt + hg);
    } else if (cell == RnnCell::lstm) {
      Tensor a = xt + hg;
      Tensor i = sigmoid(gate(a, 0)), f = sigmoid(gate(a, 1)), g = tanh(gate(a, 2)), o = sigmoid(gate(a, 3));
      c = f * c + i * g;
      h = o * tanh(c);
    } else {
      Tensor r = sigmoid(gate(xt, 0) + gate(hg, 0));
      Tensor z = sigmoid(gate(xt, 1) + gate(hg, 1));
      Tensor n = tanh(gate(xt, 2) + r * gate(hg, 2));
      h = n + z * (h - n);  // (1 - z) n + z h
    }
    ys.push_back(reshape(h, {B, 1, H}));
  }
  return concat(ys, 1);  // (B, T, H)
}

}  // namespace seqlab
