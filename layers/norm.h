// Normalisation layers over the last axis: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich
// 2019). Their scales and shifts are excluded from weight decay, as is usual for transformers.
#pragma once
#include <cstdint>

#include "layers/module.h"

namespace seqlab::nn {

struct NormOptions {
  int64_t dim = 0;    // D, the size of the normalised last axis
  double eps = 1e-5;  // added to the variance (LayerNorm) or mean square (RMSNorm)
  /// Throws seqlab::Error naming the field when dim <= 0 or eps <= 0.
  void validate() const;
};

class LayerNorm : public Module {  // (..., D) -> (..., D)
 public:
  /// Registers weight (D) = 1 and bias (D) = 0, both without weight decay.
  explicit LayerNorm(const NormOptions& options);
  Tensor forward(const Tensor& x) override;
  const NormOptions& options() const { return options_; }

 private:
  NormOptions options_;
  Tensor weight_, bias_;
};

class RMSNorm : public Module {  // (..., D) -> (..., D)
 public:
  /// Registers weight (D) = 1, without weight decay.
  explicit RMSNorm(const NormOptions& options);
  Tensor forward(const Tensor& x) override;
  const NormOptions& options() const { return options_; }

 private:
  NormOptions options_;
  Tensor weight_;
};

}  // namespace seqlab::nn
