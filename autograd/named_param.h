// A parameter as the optimizer sees it: its dotted path (`blocks.1.mixer.A_log`) and its options.
// Layers produce them (Module::named_parameters, layers/module.h); optimizers consume them
// (optim/optimizer.h), which therefore depend on autograd only, not on the layers.
#pragma once
#include <string>

#include "core/tensor.h"

namespace seqlab::nn {

/// How the optimizer treats one parameter.
struct ParamOptions {
  bool weight_decay = true;  // false: put in the weight_decay = 0 group (norms, biases of norms, A_log, D)
  double lr_scale = 1.0;     // multiplies the group's base learning rate
};

/// One parameter with its dotted path and its optimizer options.
struct NamedParam {
  std::string name;
  Tensor tensor;
  ParamOptions options;
};

}  // namespace seqlab::nn
