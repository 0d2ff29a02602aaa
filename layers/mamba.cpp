// Mamba-1 block: projections through Linear, the causal conv (+ SiLU) and the selective scan
// (+ delta bias, softplus and the silu(z) gate) through fused ops; step mode runs the conv buffer
// and the SSM recurrence one token at a time in constant memory. Init follows mamba_simple.py;
// a_init_scale and tie_bc_init (opt-in) give the mimetic initialisation of Trockman et al. 2024.
#include "layers/mamba.h"

#include <algorithm>
#include <cmath>
#include <variant>

#include "autograd/ops.h"
#include "autograd/ops/conv1d.h"
#include "autograd/ops/scan.h"
#include "core/kernels/conv1d.h"
#include "core/kernels/scan.h"

namespace seqlab::nn {

void MambaOptions::validate() const {
  SEQLAB_CHECK(d_model > 0, "MambaOptions.d_model: expected a positive width, got ", d_model);
  SEQLAB_CHECK(d_state > 0 && d_state <= 256, "MambaOptions.d_state: expected 1..256, got ", d_state);
  SEQLAB_CHECK(d_conv >= 1, "MambaOptions.d_conv: expected a kernel width >= 1, got ", d_conv);
  SEQLAB_CHECK(expand >= 1, "MambaOptions.expand: expected an integer >= 1, got ", expand);
  SEQLAB_CHECK(dt_rank >= 0, "MambaOptions.dt_rank: expected a positive rank or 0 (auto), got ", dt_rank);
  SEQLAB_CHECK(dt_min > 0 && dt_max >= dt_min, "MambaOptions.dt_min/dt_max: expected 0 < dt_min <= dt_max, got ",
               dt_min, " and ", dt_max);
  SEQLAB_CHECK(dt_init_floor > 0, "MambaOptions.dt_init_floor: expected a positive value, got ", dt_init_floor);
  SEQLAB_CHECK(a_init_scale > 0, "MambaOptions.a_init_scale: expected a positive scale, got ", a_init_scale);
  SEQLAB_CHECK(scan_chunk >= 1, "MambaOptions.scan_chunk: expected a positive chunk length, got ", scan_chunk);
}

CausalConv1d::CausalConv1d(int64_t channels, int64_t kernel, Generator& gen) {
  // PyTorch's Conv1d default with groups = channels: fan_in = K, bound 1/sqrt(K).
  double bound = 1.0 / std::sqrt(static_cast<double>(kernel));
  weight_ = register_parameter("weight", rand_uniform({channels, kernel}, -bound, bound, DType::f32, gen));
  bias_ = register_parameter("bias", rand_uniform({channels}, -bound, bound, DType::f32, gen));
}

Tensor CausalConv1d::forward(const Tensor& x) { return causal_conv1d(x, weight_, bias_, false); }

Mamba::Mamba(const MambaOptions& options, Generator& gen) : options_(options) {
  options_.validate();
  const int64_t D = options_.d_model, E = options_.d_inner(), N = options_.d_state, R = options_.resolved_dt_rank();
  in_proj_ = register_module("in_proj", std::make_shared<Linear>(LinearOptions{D, 2 * E, false}, gen));
  conv1d_ = register_module("conv1d", std::make_shared<CausalConv1d>(E, options_.d_conv, gen));
  x_proj_ = register_module("x_proj", std::make_shared<Linear>(LinearOptions{E, R + 2 * N, false}, gen));
  dt_proj_ = register_module("dt_proj", std::make_shared<Linear>(LinearOptions{R, E, true}, gen));
  {
    NoGradGuard ng;
    // dt_proj.weight ~ U(-R^-1/2, R^-1/2); dt_proj.bias = softplus^-1(dt), dt log-uniform in
    // [dt_min, dt_max] floored at dt_init_floor, so softplus(bias) starts in that range.
    double std = 1.0 / std::sqrt(static_cast<double>(R));
    Tensor w = dt_proj_->weight(), b = dt_proj_->bias();  // handles sharing the parameters' storage
    w.copy_from(rand_uniform({E, R}, -std, std, DType::f64, gen));
    std::vector<double> inv_dt(static_cast<size_t>(E));
    const double lo = std::log(options_.dt_min), hi = std::log(options_.dt_max);
    for (auto& v : inv_dt) {
      double dt = std::max(std::exp(gen.uniform() * (hi - lo) + lo), options_.dt_init_floor);
      v = dt + std::log(-std::expm1(-dt));
    }
    b.copy_from(Tensor::from_vector(inv_dt, {E}, DType::f64));
  }
  if (options_.tie_bc_init) {  // mimetic init (Trockman et al. 2024): W_C = W_B, so C_t.B_s starts as x_t.W_B^T W_B.x_s
    NoGradGuard ng;
    Tensor w = x_proj_->weight();  // (R + 2N, E): rows [R, R + N) give B, [R + N, R + 2N) give C
    std::vector<double> v = w.to_vector();
    std::copy_n(v.begin() + R * E, N * E, v.begin() + (R + N) * E);
    w.copy_from(Tensor::from_vector(v, w.shape(), DType::f64));
  }
  std::vector<double> a_log(static_cast<size_t>(E * N));
  const double log_scale = std::log(options_.a_init_scale);
  for (int64_t c = 0; c < E; ++c)
    for (int64_t n = 0; n < N; ++n) a_log[c * N + n] = std::log(static_cast<double>(n + 1)) + log_scale;  // S4D-Real, scaled
  A_log_ = register_parameter("A_log", Tensor::from_vector(a_log, {E, N}), ParamOptions{false, 1.0});
  D_ = register_parameter("D", Tensor::ones({E}), ParamOptions{false, 1.0});
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(LinearOptions{E, D, false}, gen));
}

Tensor Mamba::forward(const Tensor& u) {
  SEQLAB_CHECK(u.dim() == 3 && u.size(2) == options_.d_model, "Mamba: input of shape ", to_string(u.shape()),
               ", expected (B, T, ", options_.d_model, ")");
  const int64_t E = options_.d_inner(), N = options_.d_state, R = options_.resolved_dt_rank();
  // in_proj as two GEMMs on the halves of its weight (rows [0, E) give x, [E, 2E) give z): the
  // products of one GEMM and a split, without copying (B, T, 2E) activations into x and z, and in
  // backward without padding each half's gradient back to (B, T, 2E) with zeros and adding them.
  // The splits are one graph node each: their backward is one concat of the parts' gradients.
  const std::vector<Tensor> w_xz = split(in_proj_->weight(), 0, {E, E});      // 2 x (E, D)
  Tensor x = linear(u, w_xz[0]);                                                // (B, T, E)
  Tensor z = linear(u, w_xz[1]);                                                // (B, T, E)
  x = causal_conv1d(x, conv1d_->weight(), conv1d_->bias(), /*silu=*/true);      // (B, T, E)
  const std::vector<Tensor> dbc = split((*x_proj_)(x), -1, {R, N, N});          // x_dbl (B, T, R + 2N)
  const Tensor &dt = dbc[0], &Bm = dbc[1], &Cm = dbc[2];                        // (B, T, R), (B, T, N) x 2
  Tensor delta = linear(dt, dt_proj_->weight());                                // (B, T, E), bias in the scan
  Tensor A = -exp(A_log_);                                                      // (E, N)
  SelectiveScanOptions so{z, dt_proj_->bias(), /*delta_softplus=*/true, options_.scan_chunk};
  Tensor y = selective_scan(x, delta, A, Bm, Cm, D_, so);                       // (B, T, E), gated
  return (*out_proj_)(y);                                                       // (B, T, D)
}

StepState Mamba::init_state(int64_t batch, DType dtype) const {
  const int64_t E = options_.d_inner();
  const Device dev = A_log_.device();  // the state lives with the parameters
  return {{Tensor::zeros({batch, E, options_.d_conv - 1}, dtype, dev), Tensor::zeros({batch, E, options_.d_state}, dtype, dev)}};
}

Tensor Mamba::step(const Tensor& u_t, StepState& state) {
  SEQLAB_CHECK(u_t.dim() == 2 && u_t.size(1) == options_.d_model, "Mamba::step: input of shape ",
               to_string(u_t.shape()), ", expected (B, ", options_.d_model, ")");
  SEQLAB_CHECK(state.tensors.size() == 2 && state.tensors[1].size(0) == u_t.size(0),
               "Mamba::step: state does not come from init_state for this batch size");
  NoGradGuard ng;
  const int64_t E = options_.d_inner(), N = options_.d_state, R = options_.resolved_dt_rank();
  Tensor xz = (*in_proj_)(u_t);                                                 // (B, 2E)
  Tensor x = slice(xz, -1, 0, E), z = slice(xz, -1, E, 2 * E);                  // (B, E)
  x = kernels::causal_conv1d_step(state.tensors[0], x, conv1d_->weight(), conv1d_->bias(), true);
  Tensor x_dbl = (*x_proj_)(x);                                                 // (B, R + 2N)
  Tensor dt = slice(x_dbl, -1, 0, R);
  Tensor Bm = slice(x_dbl, -1, R, R + N), Cm = slice(x_dbl, -1, R + N, R + 2 * N);  // (B, N)
  Tensor delta = linear(dt, dt_proj_->weight());                                // (B, E)
  Tensor A = -exp(A_log_);                                                      // (E, N)
  kernels::ScanExtras ex{z, dt_proj_->bias(), true};
  Tensor y = kernels::selective_scan_step(state.tensors[1], x, delta, A, Bm, Cm, D_, ex);  // (B, E)
  return (*out_proj_)(y);                                                       // (B, D)
}

const OptionTable<MambaOptions>& mamba_option_table() {
  static const OptionTable<MambaOptions> t = {
      {"d_state", &MambaOptions::d_state, "N, the state size per channel (1..256)"},
      {"d_conv", &MambaOptions::d_conv, "K, the causal depthwise conv width (>= 1)"},
      {"expand", &MambaOptions::expand, "E = expand * d_model, the inner width (>= 1)"},
      {"dt_rank", &MambaOptions::dt_rank, "R, the rank of delta's projection; 0 or \"auto\": ceil(d_model / 16)"},
      {"dt_min", &MambaOptions::dt_min, "initial delta ~ log-uniform in [dt_min, dt_max] (0 < dt_min <= dt_max)"},
      {"dt_max", &MambaOptions::dt_max, "see dt_min"},
      {"dt_init_floor", &MambaOptions::dt_init_floor, "initial delta clamped below at this (> 0)"},
      {"a_init_scale", &MambaOptions::a_init_scale, "A starts as -(n + 1) * a_init_scale (1: S4D-Real; small: slow decay, as mimetic init)"},
      {"tie_bc_init", &MambaOptions::tie_bc_init, "x_proj's C rows start equal to its B rows (mimetic init: C_t.B_s starts as a similarity of x_t and x_s)"},
      {"scan_chunk", &MambaOptions::scan_chunk, "time steps between state checkpoints of the fused scan (>= 1)"},
  };
  return t;
}

MambaOptions mamba_options(int64_t d_model, LayerArgs& args) {
  MambaOptions o;
  o.d_model = d_model;
  auto it = args.values().find("dt_rank");
  if (it != args.values().end() && std::holds_alternative<std::string>(it->second)) {
    const std::string v = std::get<std::string>(it->second);
    SEQLAB_CHECK(v == "auto", args.where(), ": option 'dt_rank' must be a positive integer or \"auto\", got \"", v,
                 "\"");
    args.set("dt_rank", int64_t{0});
  }
  mamba_option_table().read(args, o);
  return o;
}

double mamba_flops(int64_t B_, int64_t T_, const MambaOptions& o) {
  const double B = static_cast<double>(B_), T = static_cast<double>(T_), D = static_cast<double>(o.d_model);
  const double E = static_cast<double>(o.d_inner()), N = static_cast<double>(o.d_state);
  const double R = static_cast<double>(o.resolved_dt_rank()), K = static_cast<double>(o.d_conv);
  return 2 * B * T * (D * 2 * E + E * K + E * (R + 2 * N) + R * E + E * D) + 8 * B * T * E * N;
}

std::shared_ptr<SequenceLayer> make_mamba(int64_t d_model, LayerArgs& args) {
  return std::make_shared<Mamba>(mamba_options(d_model, args));
}

}  // namespace seqlab::nn
