// MultiHeadAttention: in_proj (one GEMM to q, k, v), fused attention read straight from the packed
// projection (no head-split copies), out_proj, dropout. Position encodings: the sinusoidal table of
// Vaswani et al. (sec. 3.5) or a learned (max_len, D) table, added by one fused op.
#include "layers/attention.h"

#include <algorithm>
#include <cmath>

#include "autograd/node.h"
#include "autograd/ops/attention.h"
#include "core/cuda/attention.h"
#include "core/device.h"
#include "core/kernels/attention.h"

namespace seqlab::nn {

void MultiHeadAttentionOptions::validate() const {
  SEQLAB_CHECK(d_model > 0, "MultiHeadAttentionOptions.d_model: expected a positive width, got ", d_model);
  SEQLAB_CHECK(n_heads > 0, "MultiHeadAttentionOptions.n_heads: expected a positive head count, got ", n_heads);
  SEQLAB_CHECK(d_model % n_heads == 0, "MultiHeadAttentionOptions.n_heads: d_model = ", d_model,
               " must be divisible by n_heads = ", n_heads);
  SEQLAB_CHECK(dropout >= 0 && dropout < 1, "MultiHeadAttentionOptions.dropout: expected a probability in [0, 1), got ",
               dropout);
}

MultiHeadAttention::MultiHeadAttention(const MultiHeadAttentionOptions& options, Generator& gen)
    : options_(options) {
  options_.validate();
  const int64_t D = options_.d_model;
  in_proj_ = register_module("in_proj", std::make_shared<Linear>(LinearOptions{D, 3 * D, true}, gen));
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(LinearOptions{D, D, true}, gen));
  if (options_.dropout > 0) drop_ = register_module("drop", std::make_shared<Dropout>(DropoutOptions{options_.dropout}, gen));
}

Tensor MultiHeadAttention::forward(const Tensor& x) {
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == options_.d_model, "MultiHeadAttention: input of shape ",
               to_string(x.shape()), ", expected (B, T, ", options_.d_model, ")");
  // q, k, v and the heads are read in place from the in-projection (B, T, 3, H, Dh): no split copies
  Tensor o = attention_packed(in_proj_->forward(x), options_.n_heads, options_.causal);  // (B, T, D)
  Tensor y = out_proj_->forward(o);                                                      // (B, T, D)
  return drop_ ? drop_->forward(y) : y;
}

Tensor MultiHeadAttention::step(const Tensor& x_t, KVCache& cache) {
  SEQLAB_CHECK(options_.causal, "MultiHeadAttention::step: only causal attention has a step mode");
  SEQLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == options_.d_model, "MultiHeadAttention::step: input of shape ",
               to_string(x_t.shape()), ", expected (B, ", options_.d_model, ")");
  NoGradGuard no_grad;
  const int64_t B = x_t.size(0), D = options_.d_model, H = options_.n_heads, Dh = D / H;
  std::vector<Tensor> qkv = kernels::split_heads(in_proj_->forward(x_t).view({B, 1, 3 * D}), 3, H);  // (B, H, 1, Dh)
  const int64_t cap = cache.k.defined() ? cache.k.size(2) : 0;
  const Device dev = x_t.device();  // the cache lives where the input does
  if (!cache.k.defined() || cache.len == cap) {  // grow by doubling
    const int64_t new_cap = std::max<int64_t>(16, 2 * cap);
    Tensor k = Tensor::zeros({B, H, new_cap, Dh}, x_t.dtype(), dev);
    Tensor v = Tensor::zeros({B, H, new_cap, Dh}, x_t.dtype(), dev);
    if (dev == Device::cuda) {
      if constexpr (kCuda)
        if (cache.len > 0) {
          cuda::kv_cache_copy(cache.k, k, cache.len, 0);
          cuda::kv_cache_copy(cache.v, v, cache.len, 0);
        }
    } else {
      dispatch_float(x_t.dtype(), "MultiHeadAttention::step", [&]<typename T>() {
        for (int64_t bh = 0; bh < B * H && cache.len > 0; ++bh) {
          std::copy_n(cache.k.data<T>() + bh * cap * Dh, cache.len * Dh, k.data<T>() + bh * new_cap * Dh);
          std::copy_n(cache.v.data<T>() + bh * cap * Dh, cache.len * Dh, v.data<T>() + bh * new_cap * Dh);
        }
      });
    }
    cache.k = k;
    cache.v = v;
  }
  const int64_t c = cache.k.size(2);
  if (dev == Device::cuda) {
    if constexpr (kCuda) {
      cuda::kv_cache_copy(qkv[1], cache.k, 1, cache.len);
      cuda::kv_cache_copy(qkv[2], cache.v, 1, cache.len);
    }
  } else {
    dispatch_float(x_t.dtype(), "MultiHeadAttention::step", [&]<typename T>() {
      for (int64_t bh = 0; bh < B * H; ++bh) {
        std::copy_n(qkv[1].data<T>() + bh * Dh, Dh, cache.k.data<T>() + (bh * c + cache.len) * Dh);
        std::copy_n(qkv[2].data<T>() + bh * Dh, Dh, cache.v.data<T>() + (bh * c + cache.len) * Dh);
      }
    });
  }
  ++cache.len;
  Tensor o = kernels::attention_forward_cached(qkv[0], cache.k, cache.v, cache.len);  // (B, H, 1, Dh)
  Tensor y = out_proj_->forward(kernels::merge_heads({o}).view({B, D}));
  return drop_ ? drop_->forward(y) : y;
}

Tensor sinusoidal_positions(int64_t T, int64_t D, DType dtype, int64_t offset) {
  SEQLAB_CHECK(T >= 0 && D > 0 && offset >= 0, "sinusoidal_positions: bad sizes T = ", T, ", D = ", D);
  std::vector<double> pe(static_cast<size_t>(T * D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; 2 * i < D; ++i) {
      // PyTorch tutorial form: div = exp(-2i * ln(10000) / D)
      const double angle =
          static_cast<double>(t + offset) * std::exp(-static_cast<double>(2 * i) * std::log(10000.0) / D);
      pe[static_cast<size_t>(t * D + 2 * i)] = std::sin(angle);
      if (2 * i + 1 < D) pe[static_cast<size_t>(t * D + 2 * i + 1)] = std::cos(angle);
    }
  return Tensor::from_vector(pe, {T, D}, dtype);
}

PosEncodingKind parse_pos_encoding(const std::string& name, const std::string& where) {
  if (name == "none") return PosEncodingKind::none;
  if (name == "sinusoidal") return PosEncodingKind::sinusoidal;
  if (name == "learned") return PosEncodingKind::learned;
  throw Error(str(where, ": unknown position encoding '", name, "' (valid: none, sinusoidal, learned)"));
}

void PositionalEncodingOptions::validate() const {
  SEQLAB_CHECK(d_model > 0, "PositionalEncodingOptions.d_model: expected a positive width, got ", d_model);
  SEQLAB_CHECK(max_len > 0, "PositionalEncodingOptions.max_len: expected a positive length, got ", max_len);
}

PositionalEncoding::PositionalEncoding(const PositionalEncodingOptions& options, Generator& gen) : options_(options) {
  options_.validate();
  if (options_.kind == PosEncodingKind::learned)
    weight_ = register_parameter("weight", randn({options_.max_len, options_.d_model}, 0.0, 0.02, DType::f32, gen));
}

Tensor PositionalEncoding::forward(const Tensor& x) {
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == options_.d_model, "PositionalEncoding: input of shape ",
               to_string(x.shape()), ", expected (B, T, ", options_.d_model, ")");
  const int64_t T = x.size(1);
  switch (options_.kind) {
    case PosEncodingKind::none: return x;
    case PosEncodingKind::sinusoidal: return add_positions(x, sinusoidal_positions(T, options_.d_model, x.dtype()).to(x.device()));
    case PosEncodingKind::learned:
      SEQLAB_CHECK(T <= options_.max_len, "PositionalEncoding: sequence length T = ", T,
                   " exceeds the learned table's max_len = ", options_.max_len, " (raise the max_len option)");
      return add_positions(x, weight_);
  }
  return x;
}

Tensor PositionalEncoding::at(const Tensor& x_t, int64_t t) const {
  NoGradGuard no_grad;
  const int64_t B = x_t.size(0), D = options_.d_model;
  Tensor x3 = x_t.view({B, 1, D});
  switch (options_.kind) {
    case PosEncodingKind::none: return x_t;
    case PosEncodingKind::sinusoidal:
      return kernels::add_positions_forward(x3, sinusoidal_positions(1, D, x_t.dtype(), t).to(x_t.device()), 0).view({B, D});
    case PosEncodingKind::learned:
      SEQLAB_CHECK(t < options_.max_len, "PositionalEncoding: position ", t,
                   " exceeds the learned table's max_len = ", options_.max_len, " (raise the max_len option)");
      return kernels::add_positions_forward(x3, weight_, t).view({B, D});
  }
  return x_t;
}

}  // namespace seqlab::nn
