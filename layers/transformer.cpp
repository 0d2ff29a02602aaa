// Pre-LN transformer encoder layer: LN -> multi-head self-attention -> residual, LN -> GELU
// feed-forward -> residual. Attention runs on the fused FlashAttention-style op (layers/attention).
#include "layers/transformer.h"

#include "autograd/node.h"
#include "autograd/ops.h"

namespace seqlab::nn {

void TransformerOptions::validate() const {
  SEQLAB_CHECK(d_model > 0, "TransformerOptions.d_model: expected a positive width, got ", d_model);
  SEQLAB_CHECK(n_heads > 0 && d_model % n_heads == 0, "TransformerOptions.n_heads: expected a positive divisor of d_model = ",
               d_model, ", got ", n_heads);
  SEQLAB_CHECK(d_ff >= 0, "TransformerOptions.d_ff: expected a positive width (or 0 for 4 * d_model), got ", d_ff);
  SEQLAB_CHECK(dropout >= 0 && dropout < 1, "TransformerOptions.dropout: expected a probability in [0, 1), got ", dropout);
  parse_pos_encoding(pos_encoding, "TransformerOptions.pos_encoding");
  SEQLAB_CHECK(max_len > 0, "TransformerOptions.max_len: expected a positive length, got ", max_len);
  SEQLAB_CHECK(norm_eps > 0, "TransformerOptions.norm_eps: expected a positive epsilon, got ", norm_eps);
}

Transformer::Transformer(const TransformerOptions& options, Generator& gen) : options_(options) {
  options_.validate();
  const int64_t D = options_.d_model, F = options_.d_ff > 0 ? options_.d_ff : 4 * D;
  options_.d_ff = F;
  PosEncodingKind pk = parse_pos_encoding(options_.pos_encoding, "TransformerOptions.pos_encoding");
  if (pk != PosEncodingKind::none)
    pos_ = register_module("pos", std::make_shared<PositionalEncoding>(PositionalEncodingOptions{D, pk, options_.max_len}, gen));
  norm1_ = register_module("norm1", std::make_shared<LayerNorm>(NormOptions{D, options_.norm_eps}));
  attn_ = register_module("attn", std::make_shared<MultiHeadAttention>(
                                      MultiHeadAttentionOptions{D, options_.n_heads, options_.causal, options_.dropout}, gen));
  norm2_ = register_module("norm2", std::make_shared<LayerNorm>(NormOptions{D, options_.norm_eps}));
  linear1_ = register_module("linear1", std::make_shared<Linear>(LinearOptions{D, F, true}, gen));
  linear2_ = register_module("linear2", std::make_shared<Linear>(LinearOptions{F, D, true}, gen));
  if (options_.dropout > 0) {
    drop_ff_ = register_module("drop_ff", std::make_shared<Dropout>(DropoutOptions{options_.dropout}, gen));
    drop2_ = register_module("drop2", std::make_shared<Dropout>(DropoutOptions{options_.dropout}, gen));
  }
}

Tensor Transformer::forward(const Tensor& x) {
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == options_.d_model, "Transformer: input of shape ", to_string(x.shape()),
               ", expected (B, T, ", options_.d_model, ")");
  Tensor h = pos_ ? pos_->forward(x) : x;                  // (B, T, D)
  h = add(h, attn_->forward(norm1_->forward(h)));          // attention block (dropout inside attn)
  Tensor f = gelu(linear1_->forward(norm2_->forward(h)));  // (B, T, F)
  if (drop_ff_) f = drop_ff_->forward(f);
  f = linear2_->forward(f);                                // (B, T, D)
  if (drop2_) f = drop2_->forward(f);
  return add(h, f);
}

StepState Transformer::init_state(int64_t batch, DType dtype) const {
  SEQLAB_CHECK(has_step(), "Transformer: step mode needs causal = true (a KV cache of the past)");
  SEQLAB_CHECK(batch > 0, "Transformer::init_state: batch must be positive, got ", batch);
  SEQLAB_CHECK(dtype != DType::i32, "Transformer::init_state: expected a float dtype");
  // k cache, v cache (allocated and grown by doubling in MultiHeadAttention::step), steps seen so far
  return StepState{{Tensor(), Tensor(), Tensor::scalar(0, DType::f64)}};
}

Tensor Transformer::step(const Tensor& x_t, StepState& state) {
  SEQLAB_CHECK(has_step(), "Transformer: step mode needs causal = true (a KV cache of the past)");
  SEQLAB_CHECK(state.tensors.size() == 3, "Transformer::step: state was not made by init_state");
  SEQLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == options_.d_model, "Transformer::step: input of shape ",
               to_string(x_t.shape()), ", expected (B, ", options_.d_model, ")");
  NoGradGuard no_grad;
  const int64_t t = static_cast<int64_t>(state.tensors[2].item());
  KVCache cache{state.tensors[0], state.tensors[1], t};
  Tensor h = pos_ ? pos_->at(x_t, t) : x_t;  // (B, D)
  h = add(h, attn_->step(norm1_->forward(h), cache));
  Tensor f = gelu(linear1_->forward(norm2_->forward(h)));
  if (drop_ff_) f = drop_ff_->forward(f);
  f = linear2_->forward(f);
  if (drop2_) f = drop2_->forward(f);
  state.tensors = {cache.k, cache.v, Tensor::scalar(static_cast<double>(cache.len), DType::f64)};
  return add(h, f);
}

const OptionTable<TransformerOptions>& transformer_option_table() {
  static const OptionTable<TransformerOptions> t = {
      {"n_heads", &TransformerOptions::n_heads, "attention heads H (d_model % H == 0)"},
      {"d_ff", &TransformerOptions::d_ff, "feed-forward width F (default 4 d_model)"},
      {"dropout", &TransformerOptions::dropout, "after attention, inside and after the feed-forward block ([0, 1))"},
      {"causal", &TransformerOptions::causal, "position t attends to <= t only (and step mode exists)"},
      {"pos_encoding", &TransformerOptions::pos_encoding, "none | sinusoidal | learned, added at the layer's input"},
      {"max_len", &TransformerOptions::max_len, "rows of the learned position table"},
      {"norm_eps", &TransformerOptions::norm_eps, "LayerNorm epsilon (> 0)"},
  };
  return t;
}

TransformerOptions transformer_options(int64_t d_model, LayerArgs& args) {
  TransformerOptions o;
  o.d_model = d_model;
  o.d_ff = 4 * d_model;
  transformer_option_table().read(args, o);
  return o;
}

double transformer_flops(int64_t B_, int64_t T_, const TransformerOptions& o) {
  const double B = static_cast<double>(B_), T = static_cast<double>(T_), D = static_cast<double>(o.d_model);
  const double F = static_cast<double>(o.d_ff > 0 ? o.d_ff : 4 * o.d_model);
  return 2 * B * T * (3 * D * D + D * D + 2 * D * F) + 4 * B * T * T * D;
}

std::shared_ptr<SequenceLayer> make_transformer(int64_t d_model, LayerArgs& args) {
  return std::make_shared<Transformer>(transformer_options(d_model, args));
}

}  // namespace seqlab::nn
