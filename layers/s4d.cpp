// S4D layer: parameters and initialisations as in state-spaces/s4 models/s4/s4d.py and
// models/sequence/kernels/dplr.py (S4D-Lin, S4D-Inv, S4D-Real), ZOH discretisation, kernel by the
// fused s4d_kernel op, convolution, skip and GELU by the fused conv_skip_gelu op, the GLU by the fused
// glu op (all autograd/ops/s4d); step mode runs the diagonal recurrence itself.
#include "layers/s4d.h"

#include <cmath>
#include <numbers>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/ops/s4d.h"
#include "core/kernels/s4d.h"

namespace seqlab::nn {

void S4DOptions::validate() const {
  SEQLAB_CHECK(d_model > 0, "S4DOptions.d_model: expected a positive width, got ", d_model);
  SEQLAB_CHECK(d_state >= 2 && d_state % 2 == 0, "S4DOptions.d_state: expected an even state size >= 2, got ",
               d_state);
  SEQLAB_CHECK(init == "lin" || init == "inv" || init == "real",
               "S4DOptions.init: expected one of lin, inv, real, got '", init, "'");
  SEQLAB_CHECK(dt_min > 0 && dt_max >= dt_min, "S4DOptions.dt_min/dt_max: expected 0 < dt_min <= dt_max, got ",
               dt_min, " and ", dt_max);
  SEQLAB_CHECK(dropout >= 0 && dropout < 1, "S4DOptions.dropout: expected a probability in [0, 1), got ", dropout);
  SEQLAB_CHECK(lr_scale_ssm > 0, "S4DOptions.lr_scale_ssm: expected a positive learning-rate multiplier, got ",
               lr_scale_ssm);
}

S4D::S4D(const S4DOptions& options, Generator& gen) : options_(options) {
  options_.validate();
  const int64_t D = options_.d_model, N = options_.d_state, M = N / 2;
  const double pi = std::numbers::pi;
  // log dt ~ U[log dt_min, log dt_max)
  double lo = std::log(options_.dt_min), hi = std::log(options_.dt_max);
  Tensor log_dt = rand_uniform({D}, lo, hi, DType::f32, gen);
  std::vector<double> lar(static_cast<size_t>(D * M)), ai(static_cast<size_t>(D * M));
  for (int64_t d = 0; d < D; ++d)
    for (int64_t n = 0; n < M; ++n) {
      double re = 0.5, im = 0.0;  // A = -re + i im
      if (options_.init == "lin") {
        im = pi * static_cast<double>(n);
      } else if (options_.init == "inv") {
        im = static_cast<double>(N) / pi * (static_cast<double>(N) / static_cast<double>(2 * n + 1) - 1.0);
      } else {
        re = static_cast<double>(n + 1);
      }
      lar[d * M + n] = std::log(re);
      ai[d * M + n] = im;
    }
  // C ~ complex normal, variance 1/2 per part (torch.randn(..., dtype=cfloat))
  Shape cshape = options_.bidirectional ? Shape{2, D, M, 2} : Shape{D, M, 2};
  Tensor C = randn(cshape, 0.0, std::sqrt(0.5), DType::f32, gen);
  Tensor Dskip = randn({D}, 0.0, 1.0, DType::f32, gen);

  ParamOptions ssm{.weight_decay = false, .lr_scale = options_.lr_scale_ssm};
  log_dt_ = register_parameter("log_dt", log_dt, ssm);
  log_A_real_ = register_parameter("log_A_real", Tensor::from_vector(lar, {D, M}), ssm);
  A_imag_ = register_parameter("A_imag", Tensor::from_vector(ai, {D, M}), ssm);
  C_ = register_parameter("C", C);  // s4d.py: C has the base lr and weight decay
  D_ = register_parameter("D", Dskip);
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(LinearOptions{D, 2 * D}, gen));
  if (options_.dropout > 0)
    drop_ = register_module("drop", std::make_shared<Dropout>(DropoutOptions{options_.dropout}, gen));
}

Tensor S4D::kernel(int64_t T) const { return s4d_kernel(log_dt_, log_A_real_, A_imag_, C_, T); }

Tensor S4D::head(const Tensor& h) {
  Tensor hd = drop_ ? drop_->forward(h) : h;
  return glu(out_proj_->forward(hd));  // (..., 2D) -> a * sigmoid(b)
}

Tensor S4D::forward(const Tensor& x) {
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == options_.d_model, "S4D: expected input (B, T, ", options_.d_model,
               "), got ", to_string(x.shape()));
  Tensor K = kernel(x.size(1));              // (D, T) or (2, D, T)
  return head(conv_skip_gelu(x, K, D_));     // gelu(K * x + D x): (B, T, D)
}

StepState S4D::init_state(int64_t batch, DType dtype) const {
  SEQLAB_CHECK(!options_.bidirectional, "S4D: a bidirectional layer has no step mode (it reads the future)");
  const int64_t M = options_.d_state / 2;
  return StepState{{Tensor::zeros({batch, options_.d_model, M, 2}, dtype, log_dt_.device())}};
}

Tensor S4D::step(const Tensor& x_t, StepState& state) {
  SEQLAB_CHECK(!options_.bidirectional, "S4D: a bidirectional layer has no step mode (it reads the future)");
  SEQLAB_CHECK(state.tensors.size() == 1, "S4D::step: expected the state from init_state()");
  NoGradGuard no_grad;
  Tensor y = kernels::s4d_step_forward(x_t, state.tensors[0], log_dt_, log_A_real_, A_imag_, C_, D_);  // (B, D)
  return head(gelu(y));
}

const OptionTable<S4DOptions>& s4d_option_table() {
  static const OptionTable<S4DOptions> t = {
      {"d_state", &S4DOptions::d_state, "N: N/2 complex conjugate pairs per channel (even, >= 2)"},
      {"init", &S4DOptions::init, "A's initialisation: lin (S4D-Lin), inv (S4D-Inv) or real"},
      {"dt_min", &S4DOptions::dt_min, "dt ~ log-uniform in [dt_min, dt_max] (0 < dt_min <= dt_max)"},
      {"dt_max", &S4DOptions::dt_max, "see dt_min"},
      {"bidirectional", &S4DOptions::bidirectional, "a second kernel run backward in time (no step mode)"},
      {"dropout", &S4DOptions::dropout, "after the GELU ([0, 1))"},
      {"lr_scale_ssm", &S4DOptions::lr_scale_ssm, "lr multiplier of log_dt, log_A_real, A_imag (no weight decay)"},
  };
  return t;
}

S4DOptions s4d_options(int64_t d_model, LayerArgs& args) {
  S4DOptions o;
  o.d_model = d_model;
  s4d_option_table().read(args, o);
  return o;
}

double ssm_conv_glu_flops(int64_t B_, int64_t T_, int64_t D_) {
  const double B = static_cast<double>(B_), T = static_cast<double>(T_), D = static_cast<double>(D_);
  double n = 2 * T;  // the FFT length: the next 2,3,5-smooth even number >= 2T - 1
  for (int64_t k = 2 * T_ - 1;; ++k) {
    int64_t m = k;
    if (m % 2) continue;
    for (int64_t p : {2, 3, 5})
      while (m % p == 0) m /= p;
    if (m == 1) {
      n = static_cast<double>(k);
      break;
    }
  }
  const double rfft = 2.5 * n * std::log2(n);  // a real FFT of n points: half a complex one
  // FFTs: the kernel per d, x and the inverse per (b, d); spectrum product 6 flops per bin; GLU D -> 2D.
  return D * rfft + B * D * (2 * rfft + 6 * (n / 2 + 1)) + 2 * B * T * D * 2 * D;
}

double s4d_flops(int64_t B, int64_t T, const S4DOptions& o) {
  const double M = static_cast<double>(o.d_state) / 2;  // conjugate pairs
  return 8 * static_cast<double>(o.d_model) * M * static_cast<double>(T) + ssm_conv_glu_flops(B, T, o.d_model);
}

std::shared_ptr<SequenceLayer> make_s4d(int64_t d_model, LayerArgs& args) {
  return std::make_shared<S4D>(s4d_options(d_model, args));
}

}  // namespace seqlab::nn
