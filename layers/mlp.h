// MLP: Linear -> activation -> dropout, repeated over the hidden widths, then a final Linear.
// Parameters are named layers.<i>.weight / layers.<i>.bias.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/random.h"
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/module.h"

namespace seqlab::nn {

struct MLPOptions {
  int64_t in = 0;
  std::vector<int64_t> hidden;  // widths of the hidden layers (may be empty: one Linear)
  int64_t out = 0;
  std::string activation = "gelu";
  double dropout = 0.0;  // after each hidden activation
  /// Throws seqlab::Error naming the field (in, out, hidden[i], activation, dropout) when invalid.
  void validate() const;
};

class MLP : public Module {  // (..., in) -> (..., out)
 public:
  /// Linear layers are initialised from gen in order; dropout also draws from gen.
  explicit MLP(const MLPOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  const MLPOptions& options() const { return options_; }

 private:
  MLPOptions options_;
  std::vector<std::shared_ptr<Linear>> linears_;
  std::shared_ptr<Activation> act_;
  std::shared_ptr<Dropout> drop_;  // null when options.dropout == 0
};

}  // namespace seqlab::nn
