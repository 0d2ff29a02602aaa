// The public RNN entry points (rnn.h): the fused layer kernels run on the ISA path in use, or on the
// device (core/cuda/rnn.h) when the inputs live there.
#include "core/cuda/rnn.h"
#include "core/device.h"
#include "core/kernels/isa_dispatch.h"
#include "core/kernels/rnn.h"

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
