// Multi-head self-attention (Vaswani et al. 2017, "Attention Is All You Need", sec. 3.2) on the
// fused FlashAttention-style op, and the position encodings a transformer adds to its input:
// sinusoidal (sec. 3.5, fixed) or learned (a (max_len, D) table, as in GPT/BERT).
// Glossary: B batch, T time, D model width, H heads, Dh = D / H head width.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/random.h"
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/module.h"

namespace seqlab::nn {

struct MultiHeadAttentionOptions {
  int64_t d_model = 0;   // D
  int64_t n_heads = 4;   // H; D % H == 0
  bool causal = false;   // query t attends to keys <= t only
  double dropout = 0.0;  // on the output projection (no dropout on the attention probabilities)
  /// Throws seqlab::Error naming the field when d_model or n_heads is not positive, D % H != 0,
  /// or dropout is outside [0, 1).
  void validate() const;
};

/// Keys and values of the steps seen so far, for KV-cache decoding: (B, H, cap, Dh) each, len filled.
struct KVCache {
  Tensor k, v;
  int64_t len = 0;
};

class MultiHeadAttention : public Module {  // (B, T, D) -> (B, T, D)
 public:
  /// Registers in_proj (Linear D -> 3D: rows q, k, v, heads in order, as PyTorch's in_proj_weight)
  /// and out_proj (Linear D -> D), initialised from gen.
  explicit MultiHeadAttention(const MultiHeadAttentionOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  /// One decoding step (causal): x_t (B, D) -> (B, D), appending its key and value to `cache`.
  /// No graph is built.
  Tensor step(const Tensor& x_t, KVCache& cache);
  const MultiHeadAttentionOptions& options() const { return options_; }

 private:
  MultiHeadAttentionOptions options_;
  std::shared_ptr<Linear> in_proj_, out_proj_;
  std::shared_ptr<Dropout> drop_;  // null when dropout == 0
};

/// The sinusoidal table pe (T, D): pe[t, 2i] = sin(t / 10000^(2i/D)), pe[t, 2i+1] = cos(same),
/// for positions offset .. offset + T - 1.
Tensor sinusoidal_positions(int64_t T, int64_t D, DType dtype = DType::f32, int64_t offset = 0);

enum class PosEncodingKind { none, sinusoidal, learned };
/// Parses "none" | "sinusoidal" | "learned"; throws seqlab::Error naming `where` and the valid names.
PosEncodingKind parse_pos_encoding(const std::string& name, const std::string& where = "pos_encoding");

struct PositionalEncodingOptions {
  int64_t d_model = 0;                               // D
  PosEncodingKind kind = PosEncodingKind::sinusoidal;
  int64_t max_len = 1024;                            // longest sequence a learned table covers
  /// Throws seqlab::Error naming the field when d_model or max_len is not positive.
  void validate() const;
};

class PositionalEncoding : public Module {  // (B, T, D) -> (B, T, D): x + pe[:T]
 public:
  /// Learned: registers weight (max_len, D) ~ N(0, 0.02^2) from gen. Sinusoidal and none: no parameters.
  explicit PositionalEncoding(const PositionalEncodingOptions& options, Generator& gen = default_generator());
  /// Throws seqlab::Error when a learned table is shorter than T.
  Tensor forward(const Tensor& x) override;
  /// x_t (B, D) at position t (decoding); no graph.
  Tensor at(const Tensor& x_t, int64_t t) const;
  const PositionalEncodingOptions& options() const { return options_; }

 private:
  PositionalEncodingOptions options_;
  Tensor weight_;  // learned only
};

}  // namespace seqlab::nn
