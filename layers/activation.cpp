// Activation by name and Dropout.
#include "layers/activation.h"

#include "autograd/ops.h"

namespace seqlab::nn {

const std::vector<std::string>& activation_names() {
  static const std::vector<std::string> names{"relu", "gelu", "silu", "tanh", "sigmoid", "identity"};
  return names;
}

ActivationKind parse_activation(const std::string& name) {
  const auto& names = activation_names();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<ActivationKind>(i);
  std::string valid;
  for (const std::string& n : names) valid += (valid.empty() ? "" : ", ") + n;
  throw Error(str("activation: unknown name '", name, "', expected one of: ", valid));
}

Tensor apply_activation(ActivationKind kind, const Tensor& x) {
  switch (kind) {
    case ActivationKind::relu: return relu(x);
    case ActivationKind::gelu: return gelu(x);
    case ActivationKind::silu: return silu(x);
    case ActivationKind::tanh: return seqlab::tanh(x);
    case ActivationKind::sigmoid: return sigmoid(x);
    case ActivationKind::identity: return x;
  }
  return x;
}

Activation::Activation(const std::string& name) : name_(name), kind_(parse_activation(name)) {}

Tensor Activation::forward(const Tensor& x) { return apply_activation(kind_, x); }

void DropoutOptions::validate() const {
  SEQLAB_CHECK(p >= 0 && p < 1, "DropoutOptions.p: expected a probability in [0, 1), got ", p);
}

Dropout::Dropout(const DropoutOptions& options, Generator& gen) : options_(options), gen_(&gen) {
  options_.validate();
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, options_.p, is_training(), *gen_); }

}  // namespace seqlab::nn
