#include "layers/revin.h"

#include "autograd/ops.h"

namespace seqlab::nn {

void RevINOptions::validate() const {
  SEQLAB_CHECK(channels > 0, "revin: channels must be positive, got ", channels);
  SEQLAB_CHECK(eps > 0, "revin: eps must be positive, got ", eps);
}

RevIN::RevIN(const RevINOptions& options) : options_(options) {
  options_.validate();
  if (options_.affine) {
    weight_ = register_parameter("weight", Tensor::ones({options_.channels}), {.weight_decay = false});
    bias_ = register_parameter("bias", Tensor::zeros({options_.channels}), {.weight_decay = false});
  }
}

Tensor RevIN::forward(const Tensor&) { throw Error("revin: use normalize() and denormalize()"); }

Tensor RevIN::normalize(const Tensor& x) {
  SEQLAB_CHECK(x.dim() == 3 && x.size(2) == options_.channels, "revin: expected (B, T, ", options_.channels,
               "), got ", to_string(x.shape()));
  Tensor xs = options_.detach_stats ? x.detach() : x;
  mean_ = mean(xs, {1}, true);                                  // (B, 1, C)
  Tensor var = mean(pow_scalar(sub(xs, mean_), 2.0), {1}, true);  // biased, as the reference
  std_ = sqrt(add_scalar(var, options_.eps));
  Tensor y = div(sub(x, mean_), std_);
  if (options_.affine) y = add(mul(y, weight_), bias_);
  return y;
}

Tensor RevIN::denormalize(const Tensor& y) {
  SEQLAB_CHECK(mean_.defined(), "revin: denormalize() before normalize()");
  SEQLAB_CHECK(y.dim() == 3 && y.size(2) == options_.channels && y.size(0) == mean_.size(0),
               "revin: expected (", mean_.size(0), ", P, ", options_.channels, "), got ", to_string(y.shape()));
  Tensor z = y;
  if (options_.affine) z = div(sub(z, bias_), add_scalar(weight_, options_.eps * options_.eps));
  return add(mul(z, std_), mean_);
}

}  // namespace seqlab::nn
