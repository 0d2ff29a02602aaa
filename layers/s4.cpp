// LSSL and S4 layers: HiPPO-LegS initialisation (core/kernels/hippo), kernels by the fused ops of
// autograd/ops/s4, convolution by the causal_conv_fft op (autograd/ops/long_conv), the S4D output
// path; step mode runs the dense discretised recurrence (discretised once per state, kept in it).
#include "layers/s4.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/ops/s4.h"
#include "autograd/ops/s4d.h"  // glu
#include "layers/s4d.h"  // ssm_conv_glu_flops
#include "core/kernels/s4.h"

namespace seqlab::nn {

namespace {

void check_common(const char* who, int64_t d_model, double dt_min, double dt_max, double dropout, double lr) {
  SEQLAB_CHECK(d_model > 0, who, ".d_model: expected a positive width, got ", d_model);
  SEQLAB_CHECK(dt_min > 0 && dt_max >= dt_min, who, ".dt_min/dt_max: expected 0 < dt_min <= dt_max, got ", dt_min,
               " and ", dt_max);
  SEQLAB_CHECK(dropout >= 0 && dropout < 1, who, ".dropout: expected a probability in [0, 1), got ", dropout);
  SEQLAB_CHECK(lr > 0, who, ".lr_scale_ssm: expected a positive learning-rate multiplier, got ", lr);
}

// GELU -> dropout -> Linear(D -> 2D) -> GLU
Tensor glu_head(const Tensor& y, Dropout* drop, Linear& out_proj) {
  Tensor h = gelu(y);
  if (drop) h = drop->forward(h);
  return glu(out_proj.forward(h));  // (..., 2D) -> a * sigmoid(b): S4D's fused op
}

void check_input(const char* who, const Tensor& x, int64_t D) {
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == D, who, ": expected input (B, T, ", D, "), got ", to_string(x.shape()));
}

bool same_values(const Tensor& a, const Tensor& b) {
  if (a.device() != b.device()) return false;  // moved (to(device)) since the copy was kept: rebuild
  if (a.device() == Device::cuda) {  // small parameter tensors: compare their bytes on the host
    if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
    const Tensor ha = a.to(Device::cpu), hb = b.to(Device::cpu);
    return std::memcmp(ha.raw_data(), hb.raw_data(), a.nbytes()) == 0;
  }
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// The discretised system (dA, dB) of a stepped sequence, O(D N^3) to build against O(B D N^2) per
// step, is built on the first step and kept in the state: tensors {x, dA, dB, copies of `params`}.
// It is rebuilt whenever `params` no longer hold the values it was built from (an optimizer step,
// load_state_dict, to(dtype)), so each step sees exactly what discretising on every call gave.
template <class Discretise>
kernels::Discretised kept_discretisation(StepState& state, const char* who, const std::vector<Tensor>& params,
                                         Discretise discretise) {
  std::vector<Tensor>& ts = state.tensors;
  SEQLAB_CHECK(ts.size() == 1 || ts.size() == 3 + params.size(), who, ": expected the state from init_state()");
  bool kept = ts.size() == 3 + params.size();
  for (size_t i = 0; kept && i < params.size(); ++i) kept = same_values(ts[3 + i], params[i]);
  if (!kept) {
    kernels::Discretised disc = discretise();
    ts.resize(1);
    ts.push_back(disc.dA);
    ts.push_back(disc.dB);
    for (const Tensor& p : params) ts.push_back(p.detach().clone());
  }
  return kernels::Discretised{ts[1], ts[2]};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LSSL

void LSSLOptions::validate() const {
  check_common("LSSLOptions", d_model, dt_min, dt_max, dropout, lr_scale_ssm);
  SEQLAB_CHECK(d_state >= 1 && d_state <= 512, "LSSLOptions.d_state: expected 1 <= N <= 512, got ", d_state);
}

LSSL::LSSL(const LSSLOptions& options, Generator& gen) : options_(options) {
  options_.validate();
  const int64_t D = options_.d_model, N = options_.d_state;
  hippo_ = std::make_shared<const kernels::HippoLegs>(kernels::hippo_legs(N));
  Tensor log_dt = rand_uniform({D}, std::log(options_.dt_min), std::log(options_.dt_max), DType::f32, gen);
  Tensor C = randn({D, N}, 0.0, 1.0, DType::f32, gen);
  Tensor Dskip = randn({D}, 0.0, 1.0, DType::f32, gen);
  log_dt_ = register_parameter("log_dt", log_dt, ParamOptions{.weight_decay = false, .lr_scale = options_.lr_scale_ssm});
  C_ = register_parameter("C", C);
  D_ = register_parameter("D", Dskip);
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(LinearOptions{D, 2 * D}, gen));
  if (options_.dropout > 0)
    drop_ = register_module("drop", std::make_shared<Dropout>(DropoutOptions{options_.dropout}, gen));
}

Tensor LSSL::kernel(int64_t T) const { return lssl_kernel(log_dt_, C_, hippo_, T); }

Tensor LSSL::head(const Tensor& y) { return glu_head(y, drop_.get(), *out_proj_); }

Tensor LSSL::forward(const Tensor& x) {
  check_input("LSSL", x, options_.d_model);
  return head(causal_conv_fft(x, kernel(x.size(1))) + x * D_);
}

StepState LSSL::init_state(int64_t batch, DType dtype) const {
  return StepState{{Tensor::zeros({batch, options_.d_model, options_.d_state}, dtype, log_dt_.device())}};
}

Tensor LSSL::step(const Tensor& x_t, StepState& state) {
  NoGradGuard no_grad;
  kernels::Discretised disc = kept_discretisation(state, "LSSL::step", {log_dt_},
                                                  [&] { return kernels::lssl_discretise(log_dt_, *hippo_); });
  return head(kernels::lssl_step_forward(x_t, state.tensors[0], disc, C_, D_));
}

// ---------------------------------------------------------------------------------------------
// S4

void S4Options::validate() const {
  check_common("S4Options", d_model, dt_min, dt_max, dropout, lr_scale_ssm);
  SEQLAB_CHECK(d_state >= 2 && d_state % 2 == 0 && d_state <= 512,
               "S4Options.d_state: expected an even state size 2 <= N <= 512, got ", d_state);
}

S4::S4(const S4Options& options, Generator& gen) : options_(options) {
  options_.validate();
  const int64_t D = options_.d_model, N = options_.d_state, M = N / 2;
  kernels::NplrLegs nplr = kernels::nplr_legs(N);
  std::vector<double> lar(static_cast<size_t>(D * M)), ai(lar.size()), p(static_cast<size_t>(D * M * 2)), b(p.size());
  for (int64_t d = 0; d < D; ++d)
    for (int64_t m = 0; m < M; ++m) {
      int64_t i = d * M + m;
      lar[i] = std::log(-nplr.Lambda[m].real());
      ai[i] = nplr.Lambda[m].imag();
      p[2 * i] = nplr.P[m].real();
      p[2 * i + 1] = nplr.P[m].imag();
      b[2 * i] = nplr.B[m].real();
      b[2 * i + 1] = nplr.B[m].imag();
    }
  Tensor log_dt = rand_uniform({D}, std::log(options_.dt_min), std::log(options_.dt_max), DType::f32, gen);
  Tensor C = randn({D, M, 2}, 0.0, std::sqrt(0.5), DType::f32, gen);  // complex normal, variance 1/2 per part
  Tensor Dskip = randn({D}, 0.0, 1.0, DType::f32, gen);
  ParamOptions ssm{.weight_decay = false, .lr_scale = options_.lr_scale_ssm};
  log_dt_ = register_parameter("log_dt", log_dt, ssm);
  log_A_real_ = register_parameter("log_A_real", Tensor::from_vector(lar, {D, M}), ssm);
  A_imag_ = register_parameter("A_imag", Tensor::from_vector(ai, {D, M}), ssm);
  P_ = register_parameter("P", Tensor::from_vector(p, {D, M, 2}), ssm);
  B_ = register_parameter("B", Tensor::from_vector(b, {D, M, 2}), ssm);
  C_ = register_parameter("C", C);
  D_ = register_parameter("D", Dskip);
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(LinearOptions{D, 2 * D}, gen));
  if (options_.dropout > 0)
    drop_ = register_module("drop", std::make_shared<Dropout>(DropoutOptions{options_.dropout}, gen));
}

Tensor S4::kernel(int64_t T) const { return s4_kernel(log_dt_, log_A_real_, A_imag_, P_, B_, C_, T); }

Tensor S4::head(const Tensor& y) { return glu_head(y, drop_.get(), *out_proj_); }

Tensor S4::forward(const Tensor& x) {
  check_input("S4", x, options_.d_model);
  return head(causal_conv_fft(x, kernel(x.size(1))) + x * D_);
}

StepState S4::init_state(int64_t batch, DType dtype) const {
  return StepState{{Tensor::zeros({batch, options_.d_model, options_.d_state, 2}, dtype, log_dt_.device())}};
}

Tensor S4::step(const Tensor& x_t, StepState& state) {
  NoGradGuard no_grad;
  kernels::Discretised disc =
      kept_discretisation(state, "S4::step", {log_dt_, log_A_real_, A_imag_, P_, B_},
                          [&] { return kernels::s4_discretise(log_dt_, log_A_real_, A_imag_, P_, B_); });
  return head(kernels::s4_step_forward(x_t, state.tensors[0], disc, C_, D_));
}

// ---------------------------------------------------------------------------------------------

namespace {
// LSSLOptions and S4Options hold the same keys.
template <class Options>
OptionTable<Options> ssm_option_table() {
  return {
      {"d_state", &Options::d_state, "N, the state size per channel"},
      {"dt_min", &Options::dt_min, "dt ~ log-uniform in [dt_min, dt_max] (0 < dt_min <= dt_max)"},
      {"dt_max", &Options::dt_max, "see dt_min"},
      {"dropout", &Options::dropout, "after the GELU ([0, 1))"},
      {"lr_scale_ssm", &Options::lr_scale_ssm, "lr multiplier of the SSM parameters (no weight decay)"},
  };
}
}  // namespace

const OptionTable<LSSLOptions>& lssl_option_table() {
  static const OptionTable<LSSLOptions> t = ssm_option_table<LSSLOptions>();
  return t;
}
const OptionTable<S4Options>& s4_option_table() {
  static const OptionTable<S4Options> t = ssm_option_table<S4Options>();
  return t;
}

LSSLOptions lssl_options(int64_t d_model, LayerArgs& args) {
  LSSLOptions o;
  o.d_model = d_model;
  lssl_option_table().read(args, o);
  return o;
}
S4Options s4_options(int64_t d_model, LayerArgs& args) {
  S4Options o;
  o.d_model = d_model;
  s4_option_table().read(args, o);
  return o;
}

double lssl_flops(int64_t B, int64_t T, const LSSLOptions& o) {
  const double D = static_cast<double>(o.d_model), N = static_cast<double>(o.d_state), t = static_cast<double>(T);
  return D * (2 * N * N * N + 2 * N * N * t) + ssm_conv_glu_flops(B, T, o.d_model);
}

double s4_flops(int64_t B, int64_t T, const S4Options& o) {
  const double D = static_cast<double>(o.d_model), N = static_cast<double>(o.d_state), M = N / 2;
  const double t = static_cast<double>(T);
  return D * (8 * N * t + (t / 2 + 1) * 4 * M * 8 + 4 * t * (t / 2 + 1)) + ssm_conv_glu_flops(B, T, o.d_model);
}

std::shared_ptr<SequenceLayer> make_lssl(int64_t d_model, LayerArgs& args) {
  return std::make_shared<LSSL>(lssl_options(d_model, args));
}

std::shared_ptr<SequenceLayer> make_s4(int64_t d_model, LayerArgs& args) {
  return std::make_shared<S4>(s4_options(d_model, args));
}

}  // namespace seqlab::nn
