// Stacked tanh-RNN / LSTM / GRU layers on the fused recurrent op (autograd/ops/rnn.h): one graph
// node per stacked layer; step mode runs the same kernel one time step at a time from a carried state.
#include "layers/rnn.h"

#include <cmath>
#include <string>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/ops/nn.h"

namespace seqlab::nn {

void RnnOptions::validate() const {
  SEQLAB_CHECK(d_model > 0, "RnnOptions.d_model: expected a positive width, got ", d_model);
  SEQLAB_CHECK(num_layers > 0, "RnnOptions.num_layers: expected a positive number of layers, got ", num_layers);
  SEQLAB_CHECK(dropout >= 0 && dropout < 1, "RnnOptions.dropout: expected a probability in [0, 1), got ", dropout);
}

Rnn::Rnn(const RnnOptions& options, Generator& gen) : options_(options) {
  options_.validate();
  const int64_t D = options_.d_model, GD = kernels::rnn_gate_count(options_.cell) * D;
  const double bound = 1.0 / std::sqrt(static_cast<double>(D));
  for (int64_t k = 0; k < options_.num_layers; ++k) {
    const std::string s = "_l" + std::to_string(k);
    LayerParams p;
    p.w_ih = register_parameter("weight_ih" + s, rand_uniform({GD, D}, -bound, bound, DType::f32, gen));
    p.w_hh = register_parameter("weight_hh" + s, rand_uniform({GD, D}, -bound, bound, DType::f32, gen));
    if (options_.bias) {
      p.b_ih = register_parameter("bias_ih" + s, rand_uniform({GD}, -bound, bound, DType::f32, gen));
      p.b_hh = register_parameter("bias_hh" + s, rand_uniform({GD}, -bound, bound, DType::f32, gen));
    }
    layers_.push_back(p);
  }
}

Tensor Rnn::run(const Tensor& x, bool reference) {
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == options_.d_model, kernels::rnn_cell_name(options_.cell),
               ": input of shape ", to_string(x.shape()), ", expected (B, T, ", options_.d_model, ")");
  Tensor h = x;
  for (size_t k = 0; k < layers_.size(); ++k) {
    const LayerParams& p = layers_[k];
    if (k > 0) h = dropout(h, options_.dropout, is_training());
    h = reference ? rnn_layer_reference(options_.cell, h, p.w_ih, p.w_hh, p.b_ih, p.b_hh)
                  : rnn_layer(options_.cell, h, p.w_ih, p.w_hh, p.b_ih, p.b_hh);
  }
  return h;
}

Tensor Rnn::forward(const Tensor& x) { return run(x, false); }

Tensor Rnn::forward_reference(const Tensor& x) { return run(x, true); }

StepState Rnn::init_state(int64_t batch, DType dtype) const {
  SEQLAB_CHECK(batch > 0, kernels::rnn_cell_name(options_.cell), ": init_state needs a positive batch, got ", batch);
  StepState s;
  for (int64_t i = 0; i < options_.num_layers * states_per_layer(); ++i)
    s.tensors.push_back(Tensor::zeros({batch, options_.d_model}, dtype));
  return s;
}

Tensor Rnn::step(const Tensor& x_t, StepState& state) {
  const char* name = kernels::rnn_cell_name(options_.cell);
  const int64_t D = options_.d_model, S = states_per_layer();
  SEQLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == D, name, ": step input of shape ", to_string(x_t.shape()),
               ", expected (B, ", D, ")");
  SEQLAB_CHECK(static_cast<int64_t>(state.tensors.size()) == options_.num_layers * S, name, ": step state holds ",
               state.tensors.size(), " tensors, expected ", options_.num_layers * S, " (use init_state)");
  NoGradGuard no_grad;
  const int64_t B = x_t.size(0);
  Tensor h = x_t.detach().view({B, 1, D});  // a sequence of one step
  for (size_t k = 0; k < layers_.size(); ++k) {
    const LayerParams& p = layers_[k];
    Tensor& hs = state.tensors[k * S];
    Tensor c0 = S == 2 ? state.tensors[k * S + 1] : Tensor();
    kernels::RnnForward f = kernels::rnn_forward(options_.cell, h, p.w_ih, p.w_hh, p.b_ih, p.b_hh, hs, c0);
    hs = f.h_last;
    if (S == 2) state.tensors[k * S + 1] = f.c_last;
    h = f.y;
  }
  return h.view({B, D});
}

const OptionTable<RnnOptions>& rnn_option_table() {
  static const OptionTable<RnnOptions> t = {
      {"num_layers", &RnnOptions::num_layers, "stacked recurrent layers in one block (>= 1)"},
      {"dropout", &RnnOptions::dropout, "on the outputs of every stacked layer but the last, in training ([0, 1))"},
      {"bias", &RnnOptions::bias, "b_ih and b_hh"},
  };
  return t;
}

RnnOptions rnn_options(RnnCell cell, int64_t d_model, LayerArgs& args) {
  RnnOptions o;
  o.cell = cell;
  o.d_model = d_model;
  rnn_option_table().read(args, o);
  return o;
}

double rnn_flops(int64_t B, int64_t T, const RnnOptions& o) {
  const double gates = o.cell == RnnCell::lstm ? 4 : o.cell == RnnCell::gru ? 3 : 1;
  const double D = static_cast<double>(o.d_model);
  // gates = x W_ih^T + h W_hh^T: two GEMMs of (B T, D) x (D, gates D) per stacked layer
  return static_cast<double>(o.num_layers) * 2 * (2 * static_cast<double>(B) * static_cast<double>(T) * D * gates * D);
}

namespace {
std::shared_ptr<SequenceLayer> make_cell(RnnCell cell, int64_t d_model, LayerArgs& args) {
  return std::make_shared<Rnn>(rnn_options(cell, d_model, args));
}
}  // namespace

std::shared_ptr<SequenceLayer> make_rnn(int64_t d_model, LayerArgs& args) {
  return make_cell(RnnCell::tanh, d_model, args);
}
std::shared_ptr<SequenceLayer> make_lstm(int64_t d_model, LayerArgs& args) {
  return make_cell(RnnCell::lstm, d_model, args);
}
std::shared_ptr<SequenceLayer> make_gru(int64_t d_model, LayerArgs& args) {
  return make_cell(RnnCell::gru, d_model, args);
}

}  // namespace seqlab::nn
