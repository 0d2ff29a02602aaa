// CUDA twins of core/kernels/scan.h (Mamba-1's selective scan): same signatures, same shapes, same
// maths, device tensors in and out. Plain C++: included by core/kernels/scan_dispatch.cpp.
//
// Forward: one thread per (b, e, n) state element, the N states of a channel in one group of lanes
// of a warp (registers), walking T once; y_t = C_t . h_t by a fixed shuffle tree. Checkpoints of the
// state every `chunk` steps, as on the CPU. N <= 64: a block per (b, 32 channels), T in tiles staged
// through shared memory, chunk-parallel over T (unless SEQLAB_SCAN_FWD=tiled): each chunk's
// end state from zero, the start states chained over the chunks (the recurrence is linear), every
// chunk rescanned from its start state. Backward (N <= 64, min(chunk, T) <= 128: the default),
// chunk-parallel: each chunk's share of dL/dh at the step before it (dL/dh's reverse recurrence needs
// no states), chained over the chunks by a thread per (b, e, n); then every (b, chunk, channel tile)
// at once recomputes its states from its checkpoint (sub-checkpoints every 8 steps) and walks back
// from its carry. Otherwise, or with SEQLAB_SCAN_BWD=sequential: per channel, chunks last to first
// from their checkpoints, sub-checkpoints every ~sqrt(chunk) steps. Both: dB, dC summed over a
// block's channels in a fixed order into per-channel-group partials, dA, dD, ddelta_bias into
// per-row partials, all summed in fixed order by a second kernel (no float atomics:
// bit-reproducible). No (B, T, E, N) tensor.
#pragma once
#include "core/kernels/scan.h"
#include "core/tensor.h"

namespace seqlab::cuda {

using kernels::ScanExtras;
using kernels::ScanForwardResult;
using kernels::ScanGrads;

ScanForwardResult selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                         const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                         int64_t chunk, bool save_checkpoints);
ScanGrads selective_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                  const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                  const Tensor& checkpoints, int64_t chunk);
/// The reference variants run the same device kernels: the forward also writes every state to
/// *states (B, T, E, N); the backward reads its checkpoints out of those states.
ScanForwardResult selective_scan_loop_forward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                              const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                              const ScanExtras& ex, Tensor* states);
ScanGrads selective_scan_loop_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                       const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                       const ScanExtras& ex, const Tensor& states);
/// One step: h (B, E, N) updated in place; returns y (B, E).
Tensor selective_scan_step(Tensor& h, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex);

}  // namespace seqlab::cuda
