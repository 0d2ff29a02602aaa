// Activation: a parameter-free module that applies one pointwise nonlinearity chosen by name, so
// configs can say activation = "gelu". Also Dropout, which reads the module's training flag.
#pragma once
#include <string>
#include <vector>

#include "core/random.h"
#include "layers/module.h"

namespace seqlab::nn {

enum class ActivationKind { relu, gelu, silu, tanh, sigmoid, identity };

/// The accepted names: relu, gelu, silu, tanh, sigmoid, identity.
const std::vector<std::string>& activation_names();
/// Parses a name; throws seqlab::Error listing the valid names when unknown.
ActivationKind parse_activation(const std::string& name);
/// Applies the activation as an autograd op.
Tensor apply_activation(ActivationKind kind, const Tensor& x);

class Activation : public Module {  // (...) -> (...)
 public:
  /// Throws seqlab::Error listing the valid names when `name` is unknown.
  explicit Activation(const std::string& name);
  Tensor forward(const Tensor& x) override;
  const std::string& name() const { return name_; }
  ActivationKind kind() const { return kind_; }

 private:
  std::string name_;
  ActivationKind kind_;
};

struct DropoutOptions {
  double p = 0.0;  // probability of zeroing an element
  /// Throws seqlab::Error when p is outside [0, 1).
  void validate() const;
};

class Dropout : public Module {  // (...) -> (...); identity in eval mode
 public:
  /// `gen` must outlive the module.
  explicit Dropout(const DropoutOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  const DropoutOptions& options() const { return options_; }

 private:
  DropoutOptions options_;
  Generator* gen_;
};

}  // namespace seqlab::nn
