// MLP built from Linear, Activation and Dropout.
#include "layers/mlp.h"

#include "autograd/node.h"

namespace seqlab::nn {

void MLPOptions::validate() const {
  SEQLAB_CHECK(in > 0, "MLPOptions.in: expected a positive input width, got ", in);
  SEQLAB_CHECK(out > 0, "MLPOptions.out: expected a positive output width, got ", out);
  for (size_t i = 0; i < hidden.size(); ++i)
    SEQLAB_CHECK(hidden[i] > 0, "MLPOptions.hidden[", i, "]: expected a positive width, got ", hidden[i]);
  try {
    parse_activation(activation);
  } catch (const Error& e) {
    throw Error(str("MLPOptions.activation: ", e.what()));
  }
  SEQLAB_CHECK(dropout >= 0 && dropout < 1, "MLPOptions.dropout: expected a probability in [0, 1), got ",
               dropout);
}

MLP::MLP(const MLPOptions& options, Generator& gen) : options_(options) {
  options_.validate();
  auto layers = register_module("layers", std::make_shared<ModuleList>());
  int64_t width = options_.in;
  for (int64_t h : options_.hidden) {
    linears_.push_back(layers->push_back(std::make_shared<Linear>(LinearOptions{width, h}, gen)));
    width = h;
  }
  linears_.push_back(layers->push_back(std::make_shared<Linear>(LinearOptions{width, options_.out}, gen)));
  act_ = register_module("act", std::make_shared<Activation>(options_.activation));
  if (options_.dropout > 0)
    drop_ = register_module("drop", std::make_shared<Dropout>(DropoutOptions{options_.dropout}, gen));
}

Tensor MLP::forward(const Tensor& x) {
  Tensor h = x;
  for (size_t i = 0; i + 1 < linears_.size(); ++i) {
    h = act_->forward(linears_[i]->forward(h));
    if (drop_) h = drop_->forward(h);
  }
  return linears_.back()->forward(h);
}

PointwiseMLP::PointwiseMLP(int64_t d_model, const MLPOptions& options, Generator& gen) : d_model_(d_model) {
  SEQLAB_CHECK(options.in == d_model && options.out == d_model, "mlp layer: the MLP must map d_model (", d_model,
               ") to d_model, got ", options.in, " -> ", options.out);
  mlp_ = register_module("mlp", std::make_shared<MLP>(options, gen));
}

PointwiseMLP::PointwiseMLP(const PointwiseMLPOptions& options, Generator& gen)
    : PointwiseMLP(options.d_model, options.mlp(), gen) {}

Tensor PointwiseMLP::step(const Tensor& x_t, StepState&) {
  NoGradGuard no_grad;
  return mlp_->forward(x_t);
}

MLPOptions PointwiseMLPOptions::mlp() const {
  MLPOptions o{.in = d_model, .hidden = {expand * d_model}, .out = d_model};
  o.activation = activation;
  o.dropout = dropout;
  return o;
}

void PointwiseMLPOptions::validate() const {
  SEQLAB_CHECK(expand > 0, "expand: expected a positive integer, got ", expand);
  mlp().validate();
}

const OptionTable<PointwiseMLPOptions>& mlp_option_table() {
  static const OptionTable<PointwiseMLPOptions> t = {
      {"expand", &PointwiseMLPOptions::expand, "hidden width expand * d_model (>= 1)"},
      {"activation", &PointwiseMLPOptions::activation, "the hidden activation (layers/activation.h names)"},
      {"dropout", &PointwiseMLPOptions::dropout, "after the hidden activation ([0, 1))"},
  };
  return t;
}

PointwiseMLPOptions mlp_options(int64_t d_model, LayerArgs& args) {
  PointwiseMLPOptions o;
  o.d_model = d_model;
  mlp_option_table().read(args, o);
  return o;
}

double mlp_flops(int64_t B, int64_t T, const PointwiseMLPOptions& o) {
  const double D = static_cast<double>(o.d_model), F = static_cast<double>(o.expand) * D;
  return 2 * static_cast<double>(B) * static_cast<double>(T) * (D * F + F * D);
}

std::shared_ptr<SequenceLayer> make_mlp_layer(int64_t d_model, LayerArgs& args) {
  return std::make_shared<PointwiseMLP>(mlp_options(d_model, args));
}

}  // namespace seqlab::nn
