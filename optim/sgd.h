// SGD with momentum, dampening, Nesterov and L2 weight decay, as torch.optim.SGD:
//   d = g + wd p;  buf = d (first step) | mu buf + (1 - dampening) d;  d = nesterov ? d + mu buf : buf;
//   p -= lr d
#pragma once
#include "optim/optimizer.h"

namespace seqlab::optim {

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;  // L2, added to the gradient
  /// Throws seqlab::Error naming the field (lr, momentum, dampening, nesterov, weight_decay).
  void validate() const;
};

class SGD : public Optimizer {
 public:
  /// Groups from make_param_groups(params, options.lr, options.weight_decay).
  SGD(const std::vector<nn::NamedParam>& params, const SGDOptions& options);
  /// Explicit groups; each group's lr and weight_decay are used, the rest from options.
  SGD(std::vector<ParamGroup> groups, const SGDOptions& options);
  const SGDOptions& options() const { return options_; }

 protected:
  void update(const ParamGroup& group, Tensor& p, const Tensor& g, std::vector<Tensor>& state) override;

 private:
  SGDOptions options_;
};

}  // namespace seqlab::optim
