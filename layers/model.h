// SequenceModel: the wrapper every family shares, so models differ only in their mixer.
//   tokens: embed "time"    Linear(C -> D) per step, or per patch Linear(patch_len*C -> D)
//                                                                  (B, T, C) -> (B, L, D)
//           embed "variate" Linear(T -> D) per variate (iTransformer) (B, T, C) -> (B, C, D)
//           Embedding(V, D) for token tasks                        (B, T) -> (B, T, D)
//   blocks: n x [x = x + Dropout(mixer(norm(x)) [+ flip(mixer_rev(flip(norm(x))))])]  (B, L, D)
//   norm_f: final LayerNorm / RMSNorm
//   head:   "last"    Linear(D -> P*C') on the last token          -> (B, P, C')
//           "flatten" Linear(L*D -> P*C') over every token         -> (B, P, C')
//           "token"   Linear(D -> V) at every position            -> (B, T, V) logits
//                     (tie_embeddings: h @ embedding^T, no bias, as GPT-2 and mamba_ssm's LM)
//                     series with variate tokens: Linear(D -> P) per variate -> (B, P, C)
// channel_independent (PatchTST): (B, T, C) -> (B*C, T, 1) through all of the above with shared
// weights, the forecast reshaped back to (B, P, C). RevIN (optional) normalises the input window
// and denormalises the forecast, outside the channel split.
// Parameter names: input.weight, blocks.<i>.norm.weight, blocks.<i>.mixer.<...>,
// blocks.<i>.mixer_rev.<...> (bidir), norm_f.weight, head.weight (none when tied), revin.weight.
#pragma once
#include <memory>
#include <string>

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/options.h"
#include "layers/revin.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

struct ModelOptions {
  std::string layer = "lstm";   // registry name of the mixer
  LayerArgs layer_args;         // the mixer's own options
  int64_t in_channels = 0;      // C (ignored for token tasks)
  int64_t vocab_size = 0;       // V > 0: token input and the "token" head
  int64_t d_model = 64;         // D
  int64_t n_layers = 2;
  int64_t seq_len = 0;          // T, needed by the "flatten" head, patches and variate tokens
  int64_t pred_len = 1;         // P
  int64_t out_channels = 0;     // C' (0: same as in_channels)
  std::string head = "last";    // last | flatten | token
  std::string embed = "time";   // time (a token per step or patch) | variate (a token per channel)
  int64_t patch_len = 1;        // time tokens: steps per patch (1: a token per step)
  int64_t patch_stride = 0;     // steps between patch starts (0: patch_len, no overlap)
  bool channel_independent = false;  // each channel its own univariate series, shared weights
  bool bidir = false;           // each block adds a second mixer over the reversed tokens
  double embed_init_std = 1.0;  // token tasks: the embedding table ~ N(0, std^2) (1: nn.Embedding; 0.02: mamba_ssm)
  bool tie_embeddings = false;  // token tasks: logits = h @ embedding^T (no head of its own, no bias)
  std::string norm = "layernorm";  // layernorm | rmsnorm
  double dropout = 0.0;         // on each block's residual branch
  bool revin = false;
  bool revin_affine = true;
  bool revin_detach_stats = true;  // false only for gradient checks through the statistics
  /// Throws naming the field and what was expected.
  void validate() const;
};

/// One pre-norm residual block: x + dropout(mixer(norm(x))).
class Block : public Module {
 public:
  /// mixer_rev (optional) runs over the reversed token order; its output is flipped back and added.
  Block(std::shared_ptr<Module> norm, std::shared_ptr<SequenceLayer> mixer, double dropout,
        std::shared_ptr<SequenceLayer> mixer_rev = nullptr);
  Tensor forward(const Tensor& x) override;
  /// One time step through the same block (B, D) -> (B, D).
  Tensor step(const Tensor& x_t, StepState& state);
  SequenceLayer& mixer() { return *mixer_; }

 private:
  std::shared_ptr<Module> norm_;
  std::shared_ptr<SequenceLayer> mixer_;
  std::shared_ptr<SequenceLayer> mixer_rev_;
  double dropout_;
};

class SequenceModel : public Module {
 public:
  explicit SequenceModel(ModelOptions options);
  /// Forecasting: x (B, T, C) float -> (B, P, C'). Token tasks: ids (B, T) int32 -> (B, T, V).
  Tensor forward(const Tensor& x) override;
  const ModelOptions& options() const { return options_; }
  /// Tokens the mixers see for a series window: patches, C variates, or T steps.
  int64_t num_tokens() const;
  /// True when every block's mixer has a step mode (token tasks only, not bidir).
  bool has_step() const;
  /// Step-mode state for a batch of B.
  std::vector<StepState> init_state(int64_t batch, DType dtype) const;
  /// Token tasks: ids (B) int32 at one position -> logits (B, V), constant memory in T.
  Tensor step(const Tensor& ids_t, std::vector<StepState>& state);

 private:
  Tensor trunk(Tensor h);  // blocks + final norm
  Tensor token_logits(const Tensor& h);  // the token head: its own Linear, or the tied embedding
  Tensor tokens(const Tensor& x) const;  // (B, T, C) -> (B, L, patch_len*C) or (B, C, T), before input_
  int64_t patch_stride() const { return options_.patch_stride ? options_.patch_stride : options_.patch_len; }
  ModelOptions options_;
  Tensor embedding_;                    // (V, D) for token tasks
  std::shared_ptr<Linear> input_;       // for series
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<Module> norm_f_;
  std::shared_ptr<Linear> head_;
  std::shared_ptr<RevIN> revin_;
};

}  // namespace seqlab::nn
