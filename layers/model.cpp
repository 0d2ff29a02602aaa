#include "layers/model.h"

#include "autograd/ops.h"
#include "autograd/ops/embedding.h"
#include "core/random.h"
#include "layers/module.h"
#include "layers/norm.h"
#include "layers/registry.h"

namespace seqlab::nn {

// The one home of the model's option rules, each error naming the option that breaks it
// (OptionError): apps/config.cpp reports them with the config's file and section.
void ModelOptions::validate() const {
  auto check = [](bool ok, const char* key, auto&&... why) {
    if (!ok) throw OptionError(key, str(why...));
  };
  check(d_model > 0, "d_model", "expected a positive width, got ", d_model);
  check(n_layers > 0, "n_layers", "expected a positive number of blocks, got ", n_layers);
  check(head == "last" || head == "flatten" || head == "token", "head", "expected last, flatten or token, got '", head,
        "'");
  check(norm == "layernorm" || norm == "rmsnorm", "norm", "expected layernorm or rmsnorm, got '", norm, "'");
  check(dropout >= 0 && dropout < 1, "dropout", "expected a probability in [0, 1), got ", dropout);
  check(embed_init_std > 0, "embed_init_std", "expected a positive standard deviation, got ", embed_init_std);
  check(embed == "time" || embed == "variate", "embed", "expected time or variate, got '", embed, "'");
  check(patch_len >= 1, "patch_len", "expected an integer >= 1, got ", patch_len);
  check(patch_stride >= 0, "patch_stride", "expected an integer >= 0 (0: patch_len), got ", patch_stride);
  const bool patches = patch_len > 1 || patch_stride > 1;
  if (vocab_size > 0) {  // a token task
    check(head == "token", "head", "expected token for a token task, got '", head, "'");
    check(!revin, "revin", "expected false for a token task (RevIN normalises series, not tokens)");
    check(embed == "time", "embed", "expected time for a token task (token ids are embedded), got '", embed, "'");
    check(!patches, patch_len > 1 ? "patch_len" : "patch_stride", "expected 1 for a token task (no patches of token ids)");
    check(!channel_independent, "channel_independent", "expected false for a token task (series only)");
    check(!bidir, "bidir", "expected false for a token task (a reversed mixer would see the tokens to predict)");
    return;
  }
  check(!tie_embeddings, "tie_embeddings",
        "expected false on a series (it ties a token task's output head to its embedding table)");
  check(embed_init_std == 1.0, "embed_init_std",
        "expected the default 1 on a series (it sets a token task's embedding table; a series is embedded by a Linear)");
  check(in_channels > 0, "in_channels", "expected a positive channel count, got ", in_channels);
  check(pred_len > 0, "pred_len", "expected a positive horizon, got ", pred_len);
  check(out_channels >= 0, "out_channels", "expected >= 0 (0: in_channels), got ", out_channels);
  const bool same_channels = out_channels == 0 || out_channels == in_channels;  // features M or S, not MS
  check(head != "flatten" || seq_len > 0, "head", "flatten needs seq_len > 0");
  check(!revin || same_channels, "revin",
        "normalises and restores every input channel: expected features M or S, not MS (out_channels == in_channels)");
  check(!channel_independent || same_channels, "channel_independent",
        "forecasts every input channel: expected features M or S, not MS (out_channels == in_channels)");
  if (embed == "variate") {
    check(seq_len > 0, "embed", "\"variate\" needs seq_len > 0 (each token is Linear(seq_len -> d_model))");
    check(!patches, patch_len > 1 ? "patch_len" : "patch_stride",
          "expected 1 with embed = \"variate\" (a token is a variate's whole window)");
    check(!channel_independent, "channel_independent",
          "expected false with embed = \"variate\" (one channel would leave one token)");
    check(same_channels, "embed", "\"variate\" forecasts every variate from its own token: expected features M or S, "
          "not MS (out_channels == in_channels)");
    check(head != "last", "head", "expected token or flatten with embed = \"variate\" (last would forecast every "
          "variate from the last variate's token)");
  } else {
    check(head != "token", "head", "expected last or flatten with embed = \"time\", got 'token' (the token head needs "
          "embed = \"variate\" or a token task)");
    if (patches) {
      check(seq_len > 0 && patch_len <= seq_len, "patch_len", "expected at most seq_len = ", seq_len, ", got ", patch_len);
      check(patch_stride <= seq_len, "patch_stride", "expected at most seq_len = ", seq_len, ", got ", patch_stride);
    }
  }
}

namespace {

// x (B, L, D) -> the same with the token order reversed.
Tensor reverse_tokens(const Tensor& x) { return flip(x, 1); }

}  // namespace

Block::Block(std::shared_ptr<Module> norm, std::shared_ptr<SequenceLayer> mixer, double dropout,
             std::shared_ptr<SequenceLayer> mixer_rev)
    : norm_(register_module("norm", std::move(norm))),
      mixer_(register_module("mixer", std::move(mixer))),
      mixer_rev_(mixer_rev ? register_module("mixer_rev", std::move(mixer_rev)) : nullptr),
      dropout_(dropout) {}

Tensor Block::forward(const Tensor& x) {
  Tensor n = norm_->forward(x);
  Tensor m = mixer_->forward(n);
  if (mixer_rev_) m = add(m, reverse_tokens(mixer_rev_->forward(reverse_tokens(n))));  // S-Mamba's two directions
  return add(x, seqlab::dropout(m, dropout_, is_training()));
}

Tensor Block::step(const Tensor& x_t, StepState& state) {
  SEQLAB_CHECK(!mixer_rev_, "model: step mode cannot run a block with a reversed mixer (bidir)");
  // x_t (B, D); norms act on the last axis, so they apply per step unchanged.
  return add(x_t, mixer_->step(norm_->forward(x_t), state));
}

SequenceModel::SequenceModel(ModelOptions options) : options_(std::move(options)) {
  options_.validate();
  const int64_t D = options_.d_model;
  const bool token = options_.vocab_size > 0;
  if (token) {
    embedding_ = register_parameter("embedding", randn({options_.vocab_size, D}, 0, options_.embed_init_std));
  } else {
    // What one token holds: a whole channel (T values), or patch_len steps of C channels (1 when independent).
    const int64_t C_in = options_.channel_independent ? 1 : options_.in_channels;
    const int64_t token_in = options_.embed == "variate" ? options_.seq_len : options_.patch_len * C_in;
    input_ = register_module("input", std::make_shared<Linear>(LinearOptions{token_in, D, true}));
  }
  auto make_norm = [&]() -> std::shared_ptr<Module> {
    if (options_.norm == "rmsnorm") return std::make_shared<RMSNorm>(NormOptions{D});
    return std::make_shared<LayerNorm>(NormOptions{D});
  };
  auto blocks = register_module("blocks", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < options_.n_layers; ++i) {
    LayerArgs args = options_.layer_args;  // each block reads (and checks) its own copy
    auto mixer = make_layer(options_.layer, D, args);
    std::shared_ptr<SequenceLayer> mixer_rev;
    if (options_.bidir) {
      LayerArgs args_rev = options_.layer_args;
      mixer_rev = make_layer(options_.layer, D, args_rev);
    }
    blocks_.push_back(blocks->push_back(std::make_shared<Block>(make_norm(), mixer, options_.dropout, mixer_rev)));
  }
  norm_f_ = register_module("norm_f", make_norm());
  // Channels one forecast row covers: 1 per token (variate tokens) or per channel-independent series.
  const int64_t C_out = options_.channel_independent ? 1
                        : options_.out_channels      ? options_.out_channels
                                                     : options_.in_channels;
  if (token) {
    if (!options_.tie_embeddings)
      head_ = register_module("head", std::make_shared<Linear>(LinearOptions{D, options_.vocab_size, true}));
  } else if (options_.head == "token") {  // variate tokens: each variate's forecast from its token
    head_ = register_module("head", std::make_shared<Linear>(LinearOptions{D, options_.pred_len, true}));
  } else {
    int64_t head_in = options_.head == "flatten" ? num_tokens() * D : D;
    head_ = register_module("head", std::make_shared<Linear>(LinearOptions{head_in, options_.pred_len * C_out, true}));
  }
  if (options_.revin)
    revin_ = register_module("revin", std::make_shared<RevIN>(RevINOptions{options_.in_channels, options_.revin_affine, 1e-5, options_.revin_detach_stats}));
}

Tensor SequenceModel::trunk(Tensor h) {
  for (auto& b : blocks_) h = b->forward(h);
  return norm_f_->forward(h);
}

int64_t SequenceModel::num_tokens() const {
  if (options_.embed == "variate") return options_.in_channels;
  if (options_.patch_len == 1 && patch_stride() == 1) return options_.seq_len;
  return (options_.seq_len - options_.patch_len) / patch_stride() + 1;
}

Tensor SequenceModel::tokens(const Tensor& x) const {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  if (options_.embed == "variate") return transpose(x, 1, 2);  // (B, C, T)
  const int64_t len = options_.patch_len, stride = patch_stride();
  if (len == 1 && stride == 1) return x;                      // a token per step
  // Patches end at the newest step: the oldest (T - len) mod stride steps are dropped.
  const int64_t L = num_tokens(), start = (T - len) % stride;
  if (len == stride) return reshape(slice(x, 1, start, T), {B, L, len * C});  // contiguous
  std::vector<Tensor> patches;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t s = start + l * stride;
    patches.push_back(reshape(slice(x, 1, s, s + len), {B, 1, len * C}));
  }
  return concat(patches, 1);  // (B, L, len*C)
}

Tensor SequenceModel::forward(const Tensor& x) {
  if (options_.vocab_size > 0) {
    SEQLAB_CHECK(x.dim() == 2 && x.dtype() == DType::i32, "model: token input must be int32 (B, T), got ",
                 dtype_name(x.dtype()), " ", to_string(x.shape()));
    return token_logits(trunk(embedding(embedding_, x)));  // (B, T, V)
  }
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == options_.in_channels, "model: expected input (B, T, ",
               options_.in_channels, "), got ", to_string(x.shape()));
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), P = options_.pred_len;
  const bool fixed_t = options_.head == "flatten" || options_.embed == "variate" || options_.patch_len > 1 ||
                       patch_stride() > 1;
  SEQLAB_CHECK(!fixed_t || T == options_.seq_len, "model: the model was built for T = ", options_.seq_len,
               " (flatten head, patches or variate tokens), got T = ", T);
  Tensor xin = revin_ ? revin_->normalize(x) : x;  // (B, T, C)
  int64_t Bs = B;                                  // series through the trunk
  if (options_.channel_independent) {
    xin = reshape(permute(xin, {0, 2, 1}), {B * C, T, 1});  // each channel its own series
    Bs = B * C;
  }
  Tensor h = trunk(input_->forward(tokens(xin)));  // (Bs, L, D)
  const int64_t L = h.size(1), D = options_.d_model;
  Tensor y;
  if (options_.head == "token") {  // variate tokens
    y = transpose(head_->forward(h), 1, 2);  // (Bs, C, P) -> (Bs, P, C)
  } else {
    if (options_.head == "last") h = reshape(slice(h, 1, L - 1, L), {Bs, D});
    else h = reshape(h, {Bs, L * D});
    const int64_t C_out = head_->options().out / P;
    y = reshape(head_->forward(h), {Bs, P, C_out});
  }
  if (options_.channel_independent) y = permute(reshape(y, {B, C, P}), {0, 2, 1});  // (B, P, C)
  return revin_ ? revin_->denormalize(y) : y;
}

bool SequenceModel::has_step() const {
  if (options_.vocab_size <= 0 || options_.bidir) return false;
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
  return token_logits(norm_f_->forward(h));
}

Tensor SequenceModel::token_logits(const Tensor& h) {
  return options_.tie_embeddings ? linear(h, embedding_) : head_->forward(h);  // (..., D) -> (..., V)
}

}  // namespace seqlab::nn
