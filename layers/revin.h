// RevIN: reversible instance normalisation (Kim et al., ICLR 2022). Each input window is
// normalised per channel by its own mean and standard deviation over time (statistics detached, as
// in the reference code), optionally with a learnable affine map; the forecast is denormalised with
// the same statistics. Any model can switch it on (ModelOptions::revin).
#pragma once
#include "layers/module.h"

namespace seqlab::nn {

struct RevINOptions {
  int64_t channels = 0;  // C
  bool affine = true;
  double eps = 1e-5;
  bool detach_stats = true;  // as the reference code; false lets gradients flow through mean/std
  void validate() const;
};

class RevIN : public Module {
 public:
  explicit RevIN(const RevINOptions& options);
  /// Not used: call normalize() and denormalize().
  Tensor forward(const Tensor& x) override;
  /// x (B, T, C) -> normalised (B, T, C); remembers this batch's statistics.
  Tensor normalize(const Tensor& x);
  /// y (B, P, C) in normalised units -> original units, with the statistics of the last normalize().
  Tensor denormalize(const Tensor& y);

 private:
  RevINOptions options_;
  Tensor weight_, bias_;
  Tensor mean_, std_;  // (B, 1, C), detached
};

}  // namespace seqlab::nn
