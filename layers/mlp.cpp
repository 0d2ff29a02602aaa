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

Tensor PointwiseMLP::step(const Tensor& x_t, StepState&) {
  NoGradGuard no_grad;
  return mlp_->forward(x_t);
}

std::shared_ptr<SequenceLayer> make_mlp_layer(int64_t d_model, LayerArgs& args) {
  const int64_t expand = args.get_int("expand", 2);
  SEQLAB_CHECK(expand > 0, args.where(), ": expand: expected a positive integer, got ", expand);
  MLPOptions o{.in = d_model, .hidden = {expand * d_model}, .out = d_model};
  o.activation = args.get_string("activation", o.activation);
  o.dropout = args.get_double("dropout", o.dropout);
  try {
    o.validate();
  } catch (const Error& e) {
    throw Error(str(args.where(), ": ", e.what()));
  }
  args.finish();
  return std::make_shared<PointwiseMLP>(d_model, o);
}

}  // namespace seqlab::nn
