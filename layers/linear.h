// Linear: y = x W^T + b over the last axis, initialised as PyTorch's nn.Linear
// (kaiming_uniform with a = sqrt(5), i.e. W, b ~ U(-1/sqrt(in), 1/sqrt(in))).
#pragma once
#include <cstdint>

#include "core/random.h"
#include "layers/module.h"

namespace seqlab::nn {

struct LinearOptions {
  int64_t in = 0;
  int64_t out = 0;
  bool bias = true;
  /// Throws seqlab::Error naming the field when in or out is not positive.
  void validate() const;
};

class Linear : public Module {  // (..., in) -> (..., out)
 public:
  /// Registers weight (out, in) and, when options.bias, bias (out); values drawn from gen.
  explicit Linear(const LinearOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  const LinearOptions& options() const { return options_; }
  /// The weight handle (shares storage: copy_from on it initialises the layer).
  Tensor weight() const { return weight_; }
  /// Undefined when the layer has no bias.
  Tensor bias() const { return bias_; }

 private:
  LinearOptions options_;
  Tensor weight_, bias_;
};

}  // namespace seqlab::nn
