// The public selective-scan entry points (scan.h): the fused kernels run on the ISA path in use;
// the plain-loop reference always on the generic copy, one fixed reference for every path. Device
// tensors go to the CUDA twins (core/cuda/scan.h); the loop reference there runs the fused kernels.
#include "core/cuda/scan.h"
#include "core/device.h"
#include "core/kernels/isa_dispatch.h"
#include "core/kernels/scan.h"

namespace seqlab::kernels {

SEQLAB_ISA_DECLARE(ScanForwardResult selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                            const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                                            const ScanExtras& ex, int64_t chunk,
                                                            bool save_checkpoints))
SEQLAB_ISA_DECLARE(ScanGrads selective_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta,
                                                     const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                                                     const Tensor& Dskip, const ScanExtras& ex,
                                                     const Tensor& checkpoints, int64_t chunk))
SEQLAB_ISA_DECLARE(Tensor selective_scan_step(Tensor& h, const Tensor& u, const Tensor& delta, const Tensor& A,
                                              const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                              const ScanExtras& ex))
namespace isa_generic {
ScanForwardResult selective_scan_loop_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                              const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                              Tensor* states);
ScanGrads selective_scan_loop_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                       const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                       const Tensor& states);
}  // namespace isa_generic

ScanForwardResult selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                         const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex, int64_t chunk,
                                         bool save_checkpoints) {
  if constexpr (kCuda)
    if (on_cuda("selective_scan", u, delta, A, Bm, Cm, Dskip, ex.z, ex.delta_bias))
      return cuda::selective_scan_forward(u, delta, A, Bm, Cm, Dskip, ex, chunk, save_checkpoints);
  SEQLAB_ISA_CALL(selective_scan_forward, u, delta, A, Bm, Cm, Dskip, ex, chunk, save_checkpoints);
}

ScanGrads selective_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                  const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                  const Tensor& checkpoints, int64_t chunk) {
  if constexpr (kCuda)
    if (on_cuda("selective_scan_backward", dy, u, delta, A, Bm, Cm, Dskip, ex.z, ex.delta_bias, checkpoints))
      return cuda::selective_scan_backward(dy, u, delta, A, Bm, Cm, Dskip, ex, checkpoints, chunk);
  SEQLAB_ISA_CALL(selective_scan_backward, dy, u, delta, A, Bm, Cm, Dskip, ex, checkpoints, chunk);
}

Tensor selective_scan_step(Tensor& h, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex) {
  if constexpr (kCuda)
    if (on_cuda("selective_scan_step", h, u, delta, A, Bm, Cm, Dskip, ex.z, ex.delta_bias))
      return cuda::selective_scan_step(h, u, delta, A, Bm, Cm, Dskip, ex);
  SEQLAB_ISA_CALL(selective_scan_step, h, u, delta, A, Bm, Cm, Dskip, ex);
}

ScanForwardResult selective_scan_loop_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                              const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                              Tensor* states) {
  if constexpr (kCuda)
    if (on_cuda("selective_scan_loop", u, delta, A, Bm, Cm, Dskip, ex.z, ex.delta_bias))
      return cuda::selective_scan_loop_forward(u, delta, A, Bm, Cm, Dskip, ex, states);
  return isa_generic::selective_scan_loop_forward(u, delta, A, Bm, Cm, Dskip, ex, states);
}

ScanGrads selective_scan_loop_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                       const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                       const Tensor& states) {
  if constexpr (kCuda)
    if (on_cuda("selective_scan_loop_backward", dy, u, delta, A, Bm, Cm, Dskip, ex.z, ex.delta_bias, states))
      return cuda::selective_scan_loop_backward(dy, u, delta, A, Bm, Cm, Dskip, ex, states);
  return isa_generic::selective_scan_loop_backward(dy, u, delta, A, Bm, Cm, Dskip, ex, states);
}

}  // namespace seqlab::kernels
