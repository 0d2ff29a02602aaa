// The public RNN entry points (rnn.h): the fused layer kernels run on the ISA path in use, or on the
// device (core/cuda/rnn.h) when the inputs live there; and the argument checks they all share
// (rnn_check.h), compiled once here rather than once per ISA path.
#include <climits>

#include "core/cuda/rnn.h"
#include "core/device.h"
#include "core/kernels/isa_dispatch.h"
#include "core/kernels/rnn.h"
#include "core/kernels/rnn_check.h"

namespace seqlab::kernels {

SEQLAB_ISA_DECLARE(RnnForward rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                                          const Tensor& b_ih, const Tensor& b_hh, const Tensor& h0, const Tensor& c0))
SEQLAB_ISA_DECLARE(RnnGrads rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih,
                                         const Tensor& w_hh, const RnnForward& f, bool need_dx, bool need_dw_ih,
                                         bool need_dw_hh, bool need_db_ih, bool need_db_hh, int64_t time_chunk))

int64_t rnn_gate_count(RnnCell cell) {
  switch (cell) {
    case RnnCell::tanh: return 1;
    case RnnCell::lstm: return 4;
    case RnnCell::gru: return 3;
  }
  return 0;
}

const char* rnn_cell_name(RnnCell cell) {
  switch (cell) {
    case RnnCell::tanh: return "rnn_tanh";
    case RnnCell::lstm: return "lstm";
    case RnnCell::gru: return "gru";
  }
  return "?";
}

RnnDims check_rnn_shapes(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                         const Tensor& b_hh) {
  const char* name = rnn_cell_name(cell);
  SEQLAB_CHECK(x.dim() == 3, name, ": input of shape ", to_string(x.shape()), ", expected (B, T, I)");
  RnnDims d{x.size(0), x.size(1), x.size(2), 0, rnn_gate_count(cell)};
  SEQLAB_CHECK(d.B >= 1 && d.T >= 1 && d.I >= 1, name, ": input of shape ", to_string(x.shape()),
               " must have B, T, I >= 1");
  SEQLAB_CHECK(w_hh.dim() == 2 && w_hh.size(0) % d.G == 0 && w_hh.size(0) == d.G * w_hh.size(1) &&
                   w_hh.size(1) >= 1,
               name, ": weight_hh of shape ", to_string(w_hh.shape()), ", expected (", d.G, "*H, H)");
  d.H = w_hh.size(1);
  SEQLAB_CHECK(w_ih.dim() == 2 && w_ih.size(0) == d.G * d.H && w_ih.size(1) == d.I, name, ": weight_ih of shape ",
               to_string(w_ih.shape()), ", expected (", d.G * d.H, ", ", d.I, ")");
  for (const Tensor* b : {&b_ih, &b_hh})
    SEQLAB_CHECK(!b->defined() || (b->dim() == 1 && b->size(0) == d.G * d.H), name, ": bias of shape ",
                 to_string(b->shape()), ", expected (", d.G * d.H, ")");
  for (const Tensor* t : {&w_ih, &w_hh, &b_ih, &b_hh})
    SEQLAB_CHECK(!t->defined() || t->dtype() == x.dtype(), name, ": parameter dtype ", dtype_name(t->dtype()),
                 " differs from the input's ", dtype_name(x.dtype()));
  SEQLAB_CHECK(d.B * d.T < INT_MAX && d.G * d.H < INT_MAX && d.T * d.G * d.H < INT_MAX, name,
               ": sizes exceed what BLAS indexes with 32-bit ints");
  return d;
}

RnnDims check_rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                          const Tensor& b_hh, const Tensor& h0, const Tensor& c0) {
  const RnnDims d = check_rnn_shapes(cell, x, w_ih, w_hh, b_ih, b_hh);
  const char* name = rnn_cell_name(cell);
  for (const Tensor* s : {&h0, &c0})
    SEQLAB_CHECK(!s->defined() || (s->shape() == Shape{d.B, d.H} && s->dtype() == x.dtype()), name,
                 ": initial state of shape ", to_string(s->shape()), ", expected (", d.B, ", ", d.H, ") ",
                 dtype_name(x.dtype()));
  SEQLAB_CHECK(!c0.defined() || cell == RnnCell::lstm, name, ": only the lstm has a cell state");
  return d;
}

RnnDims check_rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                           const RnnForward& f) {
  const RnnDims d = check_rnn_shapes(cell, x, w_ih, w_hh, Tensor(), Tensor());
  SEQLAB_CHECK(dy.shape() == f.y.shape() && dy.dtype() == x.dtype(), rnn_cell_name(cell), ": gradient of shape ",
               to_string(dy.shape()), ", expected ", to_string(f.y.shape()));
  return d;
}

RnnForward rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                       const Tensor& b_hh, const Tensor& h0, const Tensor& c0) {
  if constexpr (kCuda)
    if (on_cuda(rnn_cell_name(cell), x, w_ih, w_hh, b_ih, b_hh, h0, c0))
      return cuda::rnn_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0);
  SEQLAB_ISA_CALL(rnn_forward, cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0);
}

RnnGrads rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                      const RnnForward& f, bool need_dx, bool need_dw_ih, bool need_dw_hh, bool need_db_ih,
                      bool need_db_hh, int64_t time_chunk) {
  if constexpr (kCuda)
    if (on_cuda(rnn_cell_name(cell), dy, x, w_ih, w_hh, f.y, f.gates, f.c))
      return cuda::rnn_backward(cell, dy, x, w_ih, w_hh, f, need_dx, need_dw_ih, need_dw_hh, need_db_ih, need_db_hh,
                                time_chunk);
  SEQLAB_ISA_CALL(rnn_backward, cell, dy, x, w_ih, w_hh, f, need_dx, need_dw_ih, need_dw_hh, need_db_ih, need_db_hh,
                  time_chunk);
}

}  // namespace seqlab::kernels
