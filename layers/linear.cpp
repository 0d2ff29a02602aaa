// Linear layer: one GEMM over all leading axes (autograd linear op).
#include "layers/linear.h"

#include <cmath>

#include "autograd/ops.h"

namespace seqlab::nn {

void LinearOptions::validate() const {
  SEQLAB_CHECK(in > 0, "LinearOptions.in: expected a positive input width, got ", in);
  SEQLAB_CHECK(out > 0, "LinearOptions.out: expected a positive output width, got ", out);
}

Linear::Linear(const LinearOptions& options, Generator& gen) : options_(options) {
  options_.validate();
  double bound = 1.0 / std::sqrt(static_cast<double>(options_.in));
  weight_ = register_parameter("weight", rand_uniform({options_.out, options_.in}, -bound, bound, DType::f32, gen));
  if (options_.bias)
    bias_ = register_parameter("bias", rand_uniform({options_.out}, -bound, bound, DType::f32, gen));
}

Tensor Linear::forward(const Tensor& x) {
  SEQLAB_CHECK(x.dim() >= 1 && x.size(-1) == options_.in, "Linear: input of shape ", to_string(x.shape()),
               ", expected the last axis to be in = ", options_.in);
  return linear(x, weight_, bias_);
}

}  // namespace seqlab::nn
