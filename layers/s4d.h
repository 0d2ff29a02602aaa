// S4D layer (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space
// Models"; state-spaces/s4 models/s4/s4d.py): a per-channel diagonal SSM turned into a long
// convolution kernel, y = K * x + D x, then GELU, dropout, Linear(D -> 2D) and a GLU.
// Parameters: log_dt (D), log_A_real, A_imag (D, N/2), C (D, N/2, 2) or (2, D, N/2, 2) when
// bidirectional, D (D), out_proj.{weight, bias}.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/random.h"
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/option_table.h"
#include "layers/options.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

struct S4DOptions {
  int64_t d_model = 0;
  int64_t d_state = 64;        // N: N/2 complex conjugate pairs per channel
  std::string init = "lin";    // lin: A = -1/2 + i pi n; inv: -1/2 + i N/pi (N/(2n+1) - 1); real: -(n+1)
  double dt_min = 1e-3;        // dt ~ log-uniform in [dt_min, dt_max]
  double dt_max = 1e-1;
  bool bidirectional = false;  // second kernel run backward in time (as s4.py); no step mode
  double dropout = 0.0;        // after the GELU
  double lr_scale_ssm = 1.0;   // lr multiplier of log_dt, log_A_real, A_imag (also no weight decay)
  /// Throws seqlab::Error naming the field and what was expected.
  void validate() const;
};

class S4D : public SequenceLayer {  // (B, T, D) -> (B, T, D)
 public:
  /// Draws log_dt, C, D and out_proj from gen in that order; dropout also draws from gen.
  explicit S4D(const S4DOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  int64_t d_model() const override { return options_.d_model; }
  bool has_step() const override { return !options_.bidirectional; }
  /// {state (B, D, N/2, 2)}: the complex diagonal state, zero.
  StepState init_state(int64_t batch, DType dtype) const override;
  Tensor step(const Tensor& x_t, StepState& state) override;
  /// The convolution kernel of length T: (D, T), or (2, D, T) when bidirectional.
  Tensor kernel(int64_t T) const;
  const S4DOptions& options() const { return options_; }

 private:
  Tensor head(const Tensor& h);  // dropout -> Linear -> GLU on the GELU output h (..., D)
  S4DOptions options_;
  Tensor log_dt_, log_A_real_, A_imag_, C_, D_;
  std::shared_ptr<Linear> out_proj_;
  std::shared_ptr<Dropout> drop_;  // null when options.dropout == 0
};

/// Factory for the registry: reads d_state, init, dt_min, dt_max, bidirectional, dropout, lr_scale_ssm.
std::shared_ptr<SequenceLayer> make_s4d(int64_t d_model, LayerArgs& args);
/// The options of `s4d`, declared once (layers/option_table.h).
const OptionTable<S4DOptions>& s4d_option_table();
S4DOptions s4d_options(int64_t d_model, LayerArgs& args);
/// Forward FLOPs on (B, T, D): the Vandermonde kernel (a complex multiply-add per (d, mode, t)) and
/// ssm_conv_glu_flops.
double s4d_flops(int64_t B, int64_t T, const S4DOptions& o);
/// What S4D, S4 and LSSL share: the FFT convolution (kernel, input and inverse real FFTs of the next
/// 2,3,5-smooth length >= 2T - 1, 2.5 n log2 n each, and the spectrum product) and the GLU
/// projection D -> 2D.
double ssm_conv_glu_flops(int64_t B, int64_t T, int64_t D);

}  // namespace seqlab::nn
