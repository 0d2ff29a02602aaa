// Mamba-1 block (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State
// Spaces"; state-spaces/mamba mamba_simple.py, mamba-minimal model.py):
//   (x, z) = in_proj(u);  x = silu(conv1d(x));  (dt, B, C) = x_proj(x);  delta = softplus(dt_proj(dt))
//   y = selective_scan(x, delta, A = -exp(A_log), B, C, D) * silu(z);  out = out_proj(y)
// Glossary: B batch, T time, D d_model, E = expand * D channels, N d_state, R dt_rank, K d_conv.
// Parameters: in_proj.weight (2E, D), conv1d.weight (E, K), conv1d.bias (E), x_proj.weight (R+2N, E),
// dt_proj.weight (E, R), dt_proj.bias (E), A_log (E, N), D (E), out_proj.weight (D, E).
#pragma once
#include <cstdint>
#include <memory>

#include "core/random.h"
#include "layers/linear.h"
#include "layers/options.h"
#include "layers/option_table.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

struct MambaOptions {
  int64_t d_model = 0;
  int64_t d_state = 16;        // N
  int64_t d_conv = 4;          // K, causal depthwise conv width
  int64_t expand = 2;          // E = expand * d_model
  int64_t dt_rank = 0;         // R; 0 = auto = ceil(d_model / 16)
  double dt_min = 1e-3;        // initial delta ~ log-uniform in [dt_min, dt_max]
  double dt_max = 1e-1;
  double dt_init_floor = 1e-4; // initial delta clamped below at this
  double a_init_scale = 1.0;   // A starts as -(n + 1) * a_init_scale (S4D-Real at 1; small: slow decay)
  bool tie_bc_init = false;    // x_proj's C rows start equal to its B rows (mimetic: C_t.B_s ~ x_t.x_s)
  int64_t scan_chunk = 64;     // time steps between state checkpoints of the fused scan
  /// E = expand * d_model.
  int64_t d_inner() const { return expand * d_model; }
  /// R, with 0 resolved to ceil(d_model / 16).
  int64_t resolved_dt_rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
  /// Throws seqlab::Error naming the field and what was expected.
  void validate() const;
};

/// Causal depthwise conv1d parameters: weight (C, K), bias (C); forward applies the conv (no SiLU).
class CausalConv1d : public Module {  // (B, T, C) -> (B, T, C)
 public:
  CausalConv1d(int64_t channels, int64_t kernel, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }

 private:
  Tensor weight_, bias_;
};

class Mamba : public SequenceLayer {  // (B, T, D) -> (B, T, D)
 public:
  /// Initialises as mamba_simple.py (PyTorch defaults for the projections and conv; dt_proj's
  /// special init; A_log = log(1..N) (S4D-Real); D = 1), drawing from gen in registration order.
  explicit Mamba(const MambaOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  int64_t d_model() const override { return options_.d_model; }
  bool has_step() const override { return true; }
  /// {conv buffer (B, E, K-1): the last K-1 conv inputs, SSM state h (B, E, N)}, zero.
  StepState init_state(int64_t batch, DType dtype) const override;
  Tensor step(const Tensor& x_t, StepState& state) override;
  const MambaOptions& options() const { return options_; }

 private:
  MambaOptions options_;
  std::shared_ptr<Linear> in_proj_, x_proj_, dt_proj_, out_proj_;
  std::shared_ptr<CausalConv1d> conv1d_;
  Tensor A_log_, D_;
};

/// Factory for the registry: reads d_state, d_conv, expand, dt_rank (an integer, 0 or "auto"),
/// dt_min, dt_max, dt_init_floor, scan_chunk.
std::shared_ptr<SequenceLayer> make_mamba(int64_t d_model, LayerArgs& args);
/// The options of `mamba`, declared once (layers/option_table.h).
const OptionTable<MambaOptions>& mamba_option_table();
/// Reads and checks the options of a block of width d_model (dt_rank may be "auto": 0).
MambaOptions mamba_options(int64_t d_model, LayerArgs& args);
/// Forward FLOPs on (B, T, D): in_proj D -> 2E, the K-tap depthwise conv, x_proj E -> R + 2N,
/// dt_proj R -> E, out_proj E -> D, and 8 per (b, t, e, n) in the scan (delta A, exp, delta B x,
/// h = a h + b, C.h).
double mamba_flops(int64_t B, int64_t T, const MambaOptions& o);

}  // namespace seqlab::nn
