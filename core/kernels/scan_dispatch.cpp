// The public selective-scan entry points (scan.h): the fused kernels run on the ISA path in use;
// the plain-loop reference always on the generic copy, one fixed reference for every path.
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
  SEQLAB_ISA_CALL(selective_scan_forward, u, delta, A, Bm, Cm, Dskip, ex, chunk, save_checkpoints);
}

ScanGrads selective_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                  const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                  const Tensor& checkpoints, int64_t chunk) {
  SEQLAB_ISA_CALL(selective_scan_backward, dy, u, delta, A, Bm, Cm, Dskip, ex, checkpoints, chunk);
}

Tensor selective_scan_step(Tensor& h, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex) {
  SEQLAB_ISA_CALL(selective_scan_step, h, u, delta, A, Bm, Cm, Dskip, ex);
}

ScanForwardResult selective_scan_loop_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                              const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                              Tensor* states) {
  return isa_generic::selective_scan_loop_forward(u, delta, A, Bm, Cm, Dskip, ex, states);
}

ScanGrads selective_scan_loop_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                       const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                       const Tensor& states) {
  return isa_generic::selective_scan_loop_backward(dy, u, delta, A, Bm, Cm, Dskip, ex, states);
}

}  // namespace seqlab::kernels
