#include "layers/model.h"

#include "autograd/ops.h"
#include "autograd/ops/embedding.h"
#include "core/random.h"
#include "layers/module.h"
#include "layers/norm.h"
#include "layers/registry.h"

namespace seqlab::nn {

void ModelOptions::validate() const {
  SEQLAB_CHECK(d_model > 0, "model: d_model must be positive, got ", d_model);
  SEQLAB_CHECK(n_layers > 0, "model: n_layers must be positive, got ", n_layers);
  SEQLAB_CHECK(head == "last" || head == "flatten" || head == "token", "model: head must be last, flatten or token, got '",
               head, "'");
  SEQLAB_CHECK(norm == "layernorm" || norm == "rmsnorm", "model: norm must be layernorm or rmsnorm, got '", norm, "'");
  SEQLAB_CHECK(dropout >= 0 && dropout < 1, "model: dropout must be in [0, 1), got ", dropout);
  if (head == "token") {
    SEQLAB_CHECK(vocab_size > 0, "model: the token head needs vocab_size > 0");
    SEQLAB_CHECK(!revin, "model: revin applies to series, not token tasks");
  } else {
    SEQLAB_CHECK(in_channels > 0, "model: in_channels must be positive, got ", in_channels);
    SEQLAB_CHECK(pred_len > 0, "model: pred_len must be positive, got ", pred_len);
    SEQLAB_CHECK(out_channels >= 0, "model: out_channels must be >= 0, got ", out_channels);
    SEQLAB_CHECK(head != "flatten" || seq_len > 0, "model: the flatten head needs seq_len > 0");
    SEQLAB_CHECK(!revin || out_channels == 0 || out_channels == in_channels,
                 "model: revin needs out_channels == in_channels");
  }
}

Block::Block(std::shared_ptr<Module> norm, std::shared_ptr<SequenceLayer> mixer, double dropout)
    : norm_(register_module("norm", std::move(norm))),
      mixer_(register_module("mixer", std::move(mixer))),
      dropout_(dropout) {}

Tensor Block::forward(const Tensor& x) {
  return add(x, seqlab::dropout(mixer_->forward(norm_->forward(x)), dropout_, is_training()));
}

Tensor Block::step(const Tensor& x_t, StepState& state) {
  // x_t (B, D); norms act on the last axis, so they apply per step unchanged.
  return add(x_t, mixer_->step(norm_->forward(x_t), state));
}

SequenceModel::SequenceModel(ModelOptions options) : options_(std::move(options)) {
  options_.validate();
  const int64_t D = options_.d_model;
  const bool token = options_.head == "token";
  if (token) {
    embedding_ = register_parameter("embedding", randn({options_.vocab_size, D}, 0, 1));
  } else {
    input_ = register_module("input", std::make_shared<Linear>(LinearOptions{options_.in_channels, D, true}));
  }
  auto make_norm = [&]() -> std::shared_ptr<Module> {
    if (options_.norm == "rmsnorm") return std::make_shared<RMSNorm>(NormOptions{D});
    return std::make_shared<LayerNorm>(NormOptions{D});
  };
  auto blocks = register_module("blocks", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < options_.n_layers; ++i) {
    LayerArgs args = options_.layer_args;  // each block reads (and checks) its own copy
    auto mixer = make_layer(options_.layer, D, args);
    blocks_.push_back(blocks->push_back(std::make_shared<Block>(make_norm(), mixer, options_.dropout)));
  }
  norm_f_ = register_module("norm_f", make_norm());
  const int64_t C_out = options_.out_channels ? options_.out_channels : options_.in_channels;
  if (token) {
    head_ = register_module("head", std::make_shared<Linear>(LinearOptions{D, options_.vocab_size, true}));
  } else {
    int64_t head_in = options_.head == "flatten" ? options_.seq_len * D : D;
    head_ = register_module("head", std::make_shared<Linear>(LinearOptions{head_in, options_.pred_len * C_out, true}));
  }
  if (options_.revin)
    revin_ = register_module("revin", std::make_shared<RevIN>(RevINOptions{options_.in_channels, options_.revin_affine, 1e-5, options_.revin_detach_stats}));
}

Tensor SequenceModel::trunk(Tensor h) {
  for (auto& b : blocks_) h = b->forward(h);
  return norm_f_->forward(h);
}

Tensor SequenceModel::forward(const Tensor& x) {
  if (options_.head == "token") {
    SEQLAB_CHECK(x.dim() == 2 && x.dtype() == DType::i32, "model: token input must be int32 (B, T), got ",
                 dtype_name(x.dtype()), " ", to_string(x.shape()));
    return head_->forward(trunk(embedding(embedding_, x)));  // (B, T, V)
  }
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == options_.in_channels, "model: expected input (B, T, ",
               options_.in_channels, "), got ", to_string(x.shape()));
  const int64_t B = x.size(0), T = x.size(1);
  SEQLAB_CHECK(options_.head != "flatten" || T == options_.seq_len, "model: the flatten head was built for T = ",
               options_.seq_len, ", got T = ", T);
  Tensor xin = revin_ ? revin_->normalize(x) : x;
  Tensor h = trunk(input_->forward(xin));  // (B, T, D)
  if (options_.head == "last") h = reshape(slice(h, 1, T - 1, T), {B, options_.d_model});
  else h = reshape(h, {B, T * options_.d_model});
  const int64_t C_out = options_.out_channels ? options_.out_channels : options_.in_channels;
  Tensor y = reshape(head_->forward(h), {B, options_.pred_len, C_out});
  return revin_ ? revin_->denormalize(y) : y;
}

bool SequenceModel::has_step() const {
  if (options_.head != "token") return false;
  for (const auto& b : blocks_)
    if (!b->mixer().has_step()) return false;
  return true;
}

std::vector<StepState> SequenceModel::init_state(int64_t batch, DType dtype) const {
  std::vector<StepState> s;
  for (const auto& b : blocks_) s.push_back(b->mixer().init_state(batch, dtype));
  return s;
}

Tensor SequenceModel::step(const Tensor& ids_t, std::vector<StepState>& state) {
  SEQLAB_CHECK(has_step(), "model: step mode needs the token head and a mixer with a step mode");
  SEQLAB_CHECK(state.size() == blocks_.size(), "model: step state has ", state.size(), " blocks, expected ",
               blocks_.size());
  NoGradGuard ng;
  Tensor h = embedding(embedding_, ids_t);  // (B, D)
  for (size_t i = 0; i < blocks_.size(); ++i) h = blocks_[i]->step(h, state[i]);
  return head_->forward(norm_f_->forward(h));
}

}  // namespace seqlab::nn
