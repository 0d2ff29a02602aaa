// Mamba's selective scan as one autograd op (fused, chunk-checkpointed; core/kernels/scan.h has the
// equations), plus two references for the tests: a plain-loop op that stores every state, and
// mamba's selective_scan_ref written with primitive ops (a node per time step: tests only).
#pragma once
#include <cstdint>

#include "core/kernels/scan.h"
#include "core/tensor.h"

namespace seqlab {

struct SelectiveScanOptions {
  Tensor z;                                // (B, T, E) gate: y *= silu(z) (fused), or undefined
  Tensor delta_bias;                       // (E) added to delta before the softplus, or undefined
  bool delta_softplus = false;             // delta = softplus(delta + delta_bias)
  int64_t chunk = kernels::kScanChunk;     // time steps between state checkpoints
};

/// u, delta (B, T, E), A (E, N), Bm, Cm (B, T, N), Dskip (E) -> y (B, T, E). Fused forward stores
/// only the inputs and a (B, E, N) state checkpoint per chunk; the backward recomputes each chunk.
Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                      const Tensor& Dskip, const SelectiveScanOptions& options = {});
/// Same maths with a plain serial loop that stores all (B, T, E, N) states for its backward.
Tensor selective_scan_loop(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const SelectiveScanOptions& options = {});
/// mamba's selective_scan_ref from primitive ops, one small graph per time step (slow; tests only).
Tensor selective_scan_reference(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm, const Tensor& Dskip, const SelectiveScanOptions& options = {});

}  // namespace seqlab
