// ShortConv: a worked example of a user-defined sequence layer (docs/EXTENDING.md).
//   y_t = (sum_{j<K} w_j * x_{t-j}) * sigmoid(W_g x_t + b_g)      (B, T, D) -> (B, T, D)
// a causal depthwise convolution of width K gated per channel. Built from primitive ops: K shifted
// copies (K graph nodes, not T), so it needs no hand-written backward. Step mode keeps the last
// K-1 inputs.
#pragma once
#include <memory>

#include "autograd/ops.h"
#include "core/random.h"
#include "layers/linear.h"
#include "layers/registry.h"
#include "layers/sequence_layer.h"

namespace example {

using namespace seqlab;

struct ShortConvOptions {
  int64_t d_model = 0;  // D
  int64_t width = 3;    // K
  void validate() const {
    SEQLAB_CHECK(d_model > 0, "short_conv: d_model must be positive, got ", d_model);
    SEQLAB_CHECK(width >= 1 && width <= 64, "short_conv: width must be in [1, 64], got ", width);
  }
};

class ShortConv : public nn::SequenceLayer {
 public:
  explicit ShortConv(const ShortConvOptions& o) : o_(o) {
    o_.validate();
    w_ = register_parameter("conv_weight", rand_uniform({o_.width, o_.d_model}, -0.5, 0.5));  // (K, D)
    gate_ = register_module("gate", std::make_shared<nn::Linear>(nn::LinearOptions{o_.d_model, o_.d_model}));
  }

  Tensor forward(const Tensor& x) override {  // x (B, T, D)
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
    Tensor acc;
    for (int64_t j = 0; j < o_.width && j < T; ++j) {
      // x shifted right by j along time, zeros in front: (B, T, D)
      Tensor shifted = j == 0 ? x
                              : concat({Tensor::zeros({B, j, D}, x.dtype()), slice(x, 1, 0, T - j)}, 1);
      Tensor term = mul(shifted, reshape(slice(w_, 0, j, j + 1), {D}));
      acc = acc.defined() ? add(acc, term) : term;
    }
    return mul(acc, sigmoid(gate_->forward(x)));
  }

  int64_t d_model() const override { return o_.d_model; }
  bool has_step() const override { return true; }
  nn::StepState init_state(int64_t batch, DType dtype) const override {
    return {{Tensor::zeros({batch, o_.width, o_.d_model}, dtype)}};  // last K inputs, newest last
  }
  Tensor step(const Tensor& x_t, nn::StepState& state) override {  // x_t (B, D)
    NoGradGuard ng;
    const int64_t B = x_t.size(0), K = o_.width, D = o_.d_model;
    Tensor& buf = state.tensors[0];
    buf = concat({slice(buf, 1, 1, K), reshape(x_t, {B, 1, D})}, 1);  // drop the oldest, append x_t
    Tensor acc = Tensor::zeros({B, D}, x_t.dtype());
    for (int64_t j = 0; j < K; ++j)
      acc = add(acc, mul(reshape(slice(buf, 1, K - 1 - j, K - j), {B, D}), reshape(slice(w_, 0, j, j + 1), {D})));
    return mul(acc, sigmoid(gate_->forward(x_t)));
  }

 private:
  ShortConvOptions o_;
  Tensor w_;
  std::shared_ptr<nn::Linear> gate_;
};

/// Makes "short_conv" available to configs and SequenceModel (call once, before building models).
inline void register_short_conv() {
  nn::register_layer({"short_conv", "gated causal depthwise conv (examples/custom_layer)",
                      [](int64_t d_model, nn::LayerArgs& args) {
                        ShortConvOptions o{d_model, args.get_int("width", 3)};
                        return std::make_shared<ShortConv>(o);
                      }});
}

}  // namespace example
