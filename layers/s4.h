// The S4 lineage on HiPPO-LegS: LSSL (Gu et al. 2021), a fixed dense HiPPO state matrix with a learned
// step size, kernel from powers of the bilinear-discretised matrix; and S4 (Gu, Goel, Ré 2022), the
// state matrix in DPLR form diag(Lambda) - P P* with learned Lambda, P, B, C, kernel by the Cauchy /
// Woodbury generating function. Both: y = K * x + D x, then GELU, dropout, Linear(D -> 2D), GLU (as S4D).
// LSSL parameters: log_dt (D), C (D, N), D (D), out_proj.*.
// S4 parameters: log_dt (D), log_A_real, A_imag (D, N/2), P, B, C (D, N/2, 2), D (D), out_proj.*.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/kernels/hippo.h"
#include "core/random.h"
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/option_table.h"
#include "layers/options.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

struct LSSLOptions {
  int64_t d_model = 0;
  int64_t d_state = 64;       // N (dense: O(N^2 T) per channel for the kernel)
  double dt_min = 1e-3;       // dt ~ log-uniform in [dt_min, dt_max]
  double dt_max = 1e-1;
  double dropout = 0.0;       // after the GELU
  double lr_scale_ssm = 1.0;  // lr multiplier of log_dt (also no weight decay)
  /// Throws seqlab::Error naming the field and what was expected.
  void validate() const;
};

class LSSL : public SequenceLayer {  // (B, T, D) -> (B, T, D)
 public:
  /// Draws log_dt, C, D and out_proj from gen in that order; dropout also draws from gen.
  explicit LSSL(const LSSLOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  int64_t d_model() const override { return options_.d_model; }
  bool has_step() const override { return true; }
  /// {state (B, D, N)}, zero; the first step() adds the discretised dA, dB it reuses.
  StepState init_state(int64_t batch, DType dtype) const override;
  Tensor step(const Tensor& x_t, StepState& state) override;
  /// The convolution kernel of length T, (D, T).
  Tensor kernel(int64_t T) const;
  const LSSLOptions& options() const { return options_; }
  const kernels::HippoLegs& hippo() const { return *hippo_; }

 private:
  Tensor head(const Tensor& y);
  LSSLOptions options_;
  std::shared_ptr<const kernels::HippoLegs> hippo_;
  Tensor log_dt_, C_, D_;
  std::shared_ptr<Linear> out_proj_;
  std::shared_ptr<Dropout> drop_;
};

struct S4Options {
  int64_t d_model = 0;
  int64_t d_state = 64;       // N: N/2 conjugate pairs, even
  double dt_min = 1e-3;
  double dt_max = 1e-1;
  double dropout = 0.0;
  double lr_scale_ssm = 1.0;  // lr multiplier of log_dt, log_A_real, A_imag, P, B (also no weight decay)
  void validate() const;
};

class S4 : public SequenceLayer {  // (B, T, D) -> (B, T, D)
 public:
  /// Lambda, P, B from the LegS NPLR decomposition; draws log_dt, C, D, out_proj from gen in that order.
  explicit S4(const S4Options& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  int64_t d_model() const override { return options_.d_model; }
  bool has_step() const override { return true; }
  /// {state (B, D, N, 2)}: all N complex states of the conjugate-symmetric system, zero; the first
  /// step() adds the discretised dA, dB it reuses.
  StepState init_state(int64_t batch, DType dtype) const override;
  Tensor step(const Tensor& x_t, StepState& state) override;
  Tensor kernel(int64_t T) const;
  const S4Options& options() const { return options_; }

 private:
  Tensor head(const Tensor& y);
  S4Options options_;
  Tensor log_dt_, log_A_real_, A_imag_, P_, B_, C_, D_;
  std::shared_ptr<Linear> out_proj_;
  std::shared_ptr<Dropout> drop_;
};

/// Registry factories: read d_state, dt_min, dt_max, dropout, lr_scale_ssm.
std::shared_ptr<SequenceLayer> make_lssl(int64_t d_model, LayerArgs& args);
std::shared_ptr<SequenceLayer> make_s4(int64_t d_model, LayerArgs& args);
/// The options of `lssl` and `s4`, declared once (layers/option_table.h).
const OptionTable<LSSLOptions>& lssl_option_table();
const OptionTable<S4Options>& s4_option_table();
LSSLOptions lssl_options(int64_t d_model, LayerArgs& args);
S4Options s4_options(int64_t d_model, LayerArgs& args);
/// Forward FLOPs on (B, T, D) (ssm_conv_glu_flops plus the kernel): LSSL's dense bilinear
/// discretisation (an N x N solve) and T mat-vecs per channel; S4's C~ by T DPLR steps, Cauchy and
/// Woodbury at T/2 + 1 frequencies and a direct inverse DFT.
double lssl_flops(int64_t B, int64_t T, const LSSLOptions& o);
double s4_flops(int64_t B, int64_t T, const S4Options& o);

}  // namespace seqlab::nn
