// The public causal conv1d entry points (conv1d.h), forwarded to the ISA path in use, or to the
// CUDA twins (core/cuda/conv1d.h) for device tensors.
#include "core/cuda/conv1d.h"
#include "core/device.h"
#include "core/kernels/conv1d.h"
#include "core/kernels/isa_dispatch.h"

namespace seqlab::kernels {

SEQLAB_ISA_DECLARE(Tensor causal_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu))
SEQLAB_ISA_DECLARE(std::array<Tensor, 3> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                                                const Tensor& bias, bool silu))
SEQLAB_ISA_DECLARE(Tensor causal_conv1d_step(Tensor& buf, const Tensor& x_t, const Tensor& w, const Tensor& bias,
                                             bool silu))

Tensor causal_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu) {
  if constexpr (kCuda) if (on_cuda("causal_conv1d", x, w, bias)) return cuda::causal_conv1d_forward(x, w, bias, silu);
  SEQLAB_ISA_CALL(causal_conv1d_forward, x, w, bias, silu);
}

std::array<Tensor, 3> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& bias,
                                             bool silu) {
  if constexpr (kCuda)
    if (on_cuda("causal_conv1d_backward", dy, x, w, bias)) return cuda::causal_conv1d_backward(dy, x, w, bias, silu);
  SEQLAB_ISA_CALL(causal_conv1d_backward, dy, x, w, bias, silu);
}

Tensor causal_conv1d_step(Tensor& buf, const Tensor& x_t, const Tensor& w, const Tensor& bias, bool silu) {
  if constexpr (kCuda)
    if (on_cuda("causal_conv1d_step", buf, x_t, w, bias)) return cuda::causal_conv1d_step(buf, x_t, w, bias, silu);
  SEQLAB_ISA_CALL(causal_conv1d_step, buf, x_t, w, bias, silu);
}

}  // namespace seqlab::kernels
