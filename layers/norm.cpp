// LayerNorm and RMSNorm layers over the fused layer_norm / rms_norm ops.
#include "layers/norm.h"

#include "autograd/ops.h"

namespace seqlab::nn {

void NormOptions::validate() const {
  SEQLAB_CHECK(dim > 0, "NormOptions.dim: expected a positive width, got ", dim);
  SEQLAB_CHECK(eps > 0, "NormOptions.eps: expected a positive epsilon, got ", eps);
}

namespace {
void check_width(const char* layer, const Tensor& x, int64_t dim) {
  SEQLAB_CHECK(x.dim() >= 1 && x.size(-1) == dim, layer, ": input of shape ", to_string(x.shape()),
               ", expected the last axis to be dim = ", dim);
}
}  // namespace

LayerNorm::LayerNorm(const NormOptions& options) : options_(options) {
  options_.validate();
  weight_ = register_parameter("weight", Tensor::ones({options_.dim}), {.weight_decay = false});
  bias_ = register_parameter("bias", Tensor::zeros({options_.dim}), {.weight_decay = false});
}

Tensor LayerNorm::forward(const Tensor& x) {
  check_width("LayerNorm", x, options_.dim);
  return layer_norm(x, weight_, bias_, options_.eps);
}

RMSNorm::RMSNorm(const NormOptions& options) : options_(options) {
  options_.validate();
  weight_ = register_parameter("weight", Tensor::ones({options_.dim}), {.weight_decay = false});
}

Tensor RMSNorm::forward(const Tensor& x) {
  check_width("RMSNorm", x, options_.dim);
  return rms_norm(x, weight_, options_.eps);
}

}  // namespace seqlab::nn
