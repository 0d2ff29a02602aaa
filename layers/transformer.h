// Pre-LN transformer encoder layer (Vaswani et al. 2017 with the pre-norm placement of Xiong et al.
// 2020, "On Layer Normalization in the Transformer Architecture"; PyTorch's
// nn.TransformerEncoderLayer(norm_first=True, activation="gelu")):
//   x = x + Dropout(MHA(LN1(x)));  x = x + Dropout(Linear2(Dropout(GELU(Linear1(LN2(x))))))
// Glossary: B batch, T time, D model width, H heads, F = d_ff feed-forward width.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/random.h"
#include "layers/activation.h"
#include "layers/attention.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "layers/option_table.h"
#include "layers/options.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

struct TransformerOptions {
  int64_t d_model = 0;                   // D
  int64_t n_heads = 4;                   // H; D % H == 0
  int64_t d_ff = 0;                      // F; 0 means 4 * D
  double dropout = 0.1;                  // after attention, inside and after the feed-forward block
  bool causal = false;                   // true: position t sees only <= t (and step mode exists)
  std::string pos_encoding = "none";     // none | sinusoidal | learned, added at this layer's input
  int64_t max_len = 1024;                // rows of a learned position table
  double norm_eps = 1e-5;                // LayerNorm epsilon
  /// Throws seqlab::Error naming the field (d_model, n_heads, d_ff, dropout, pos_encoding, max_len,
  /// norm_eps) when invalid.
  void validate() const;
};

class Transformer : public SequenceLayer {  // (B, T, D) -> (B, T, D)
 public:
  /// Registers [pos], norm1, attn (in_proj, out_proj), norm2, linear1 (D -> F), linear2 (F -> D).
  explicit Transformer(const TransformerOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  int64_t d_model() const override { return options_.d_model; }
  /// Step mode is a KV cache, so only causal layers have one.
  bool has_step() const override { return options_.causal; }
  /// State: key cache, value cache (grown on demand) and the position count.
  StepState init_state(int64_t batch, DType dtype) const override;
  /// x_t (B, D) -> (B, D): attends to every earlier step through the cache; O(t * D) per step.
  Tensor step(const Tensor& x_t, StepState& state) override;
  const TransformerOptions& options() const { return options_; }

 private:
  TransformerOptions options_;
  std::shared_ptr<PositionalEncoding> pos_;  // null when pos_encoding == "none"
  std::shared_ptr<LayerNorm> norm1_, norm2_;
  std::shared_ptr<MultiHeadAttention> attn_;
  std::shared_ptr<Linear> linear1_, linear2_;
  std::shared_ptr<Dropout> drop_ff_, drop2_;  // null when dropout == 0
};

/// The options of `transformer`, declared once (layers/option_table.h).
const OptionTable<TransformerOptions>& transformer_option_table();
/// Reads and checks the options of a layer of width d_model (d_ff defaults to 4 d_model).
TransformerOptions transformer_options(int64_t d_model, LayerArgs& args);
/// Forward FLOPs on (B, T, D): in_proj (3D), out_proj (D), the feed-forward GEMMs (F), QK^T and PV (2 B T^2 D each).
double transformer_flops(int64_t B, int64_t T, const TransformerOptions& o);

/// Registry factory for `transformer`: reads n_heads, d_ff, dropout, causal, pos_encoding, max_len,
/// norm_eps from args, then args.finish().
std::shared_ptr<SequenceLayer> make_transformer(int64_t d_model, LayerArgs& args);

}  // namespace seqlab::nn
