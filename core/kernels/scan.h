// Selective scan of Mamba-1 (Gu & Dao 2023, Alg. 2; state-spaces/mamba selective_scan_ref):
//   delta = softplus(delta_in + delta_bias)        (optional bias and softplus, fused as in mamba)
//   h_t   = exp(delta_t A) * h_{t-1} + delta_t B_t u_t    (ZOH for A, Euler for B), h (ED, N)
//   y_t   = (C_t . h_t + D u_t) * silu(z_t)          (z gate optional, fused as in mamba)
// Glossary: B batch, T time, E channels (= expand * d_model), N state size, L checkpoint chunk.
// The fused forward keeps a block of channels' N states in vector registers / L1 while it runs over T
// and stores no (B, T, E, N) tensor: only a state checkpoint every L steps. The backward recomputes each chunk.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// The optional parts of the scan (undefined tensors switch them off).
struct ScanExtras {
  Tensor z;                     // (B, T, E): gate, y *= silu(z)
  Tensor delta_bias;            // (E): added to delta before the softplus
  bool delta_softplus = false;  // delta = softplus(delta + bias), linear above 20 (PyTorch's rule)
};

/// Default number of time steps between two state checkpoints.
inline constexpr int64_t kScanChunk = 64;

struct ScanForwardResult {
  Tensor y;            // (B, T, E)
  Tensor checkpoints;  // (B, ceil(T / L) - 1, N, E): state at the end of chunks 0 .. n-2; undefined if T <= L
};

struct ScanGrads {
  Tensor du, ddelta, dA, dB, dC, dD, dz, ddelta_bias;  // dz, ddelta_bias undefined when not used
};

/// Fused forward over the whole sequence, parallel over (batch, channel blocks).
ScanForwardResult selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                         const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                         int64_t chunk = kScanChunk, bool save_checkpoints = true);
/// Fused backward: recomputes each chunk's states from its checkpoint, then the reverse scan.
/// Deterministic at any thread count (shared gradients go through per-task partials summed in order).
ScanGrads selective_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                  const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                  const Tensor& checkpoints, int64_t chunk = kScanChunk);

/// Plain-loop reference forward that stores every state: returns {y, H (B, T, E, N)}. Serial.
ScanForwardResult selective_scan_loop_forward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                              const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                              const ScanExtras& ex, Tensor* states);
/// Plain-loop reference backward from the stored states H. Serial.
ScanGrads selective_scan_loop_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                       const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                       const ScanExtras& ex, const Tensor& states);

/// One step: h (B, E, N) updated in place; u, delta, z (B, E); Bm, Cm (B, N); returns y (B, E).
Tensor selective_scan_step(Tensor& h, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex);

}  // namespace seqlab::kernels
