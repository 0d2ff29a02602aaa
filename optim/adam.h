// Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019), as torch.optim.Adam / AdamW:
//   Adam:  g += wd p                      AdamW: p *= 1 - lr wd
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)      (eps outside the sqrt)
// t is the optimizer's step count (PyTorch counts per parameter; they differ only for a parameter
// that had no gradient at some step).
#pragma once
#include "optim/optimizer.h"

namespace seqlab::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // Adam: L2 added to the gradient; AdamW: decoupled
  /// Throws seqlab::Error naming the field (lr, beta1, beta2, eps, weight_decay).
  void validate() const;
};

class Adam : public Optimizer {
 public:
  /// Groups from make_param_groups(params, options.lr, options.weight_decay).
  Adam(const std::vector<nn::NamedParam>& params, const AdamOptions& options);
  /// Explicit groups; each group's lr and weight_decay are used, betas and eps from options.
  Adam(std::vector<ParamGroup> groups, const AdamOptions& options);
  const AdamOptions& options() const { return options_; }
  int64_t device_scalars_per_group() const override;
  void device_scalars(double* out) const override;

 protected:
  Adam(std::vector<ParamGroup> groups, const AdamOptions& options, bool decoupled);
  void update(const ParamGroup& group, Tensor& p, const Tensor& g, std::vector<Tensor>& state) override;
  bool update_many(const ParamGroup& group, std::vector<Item>& items) override;
  bool update_many_gated(const ParamGroup& group, std::vector<Item>& items, const double* scalars,
                         const double* gate) override;

 private:
  struct StepScalars {
    double b1c, b2, b2c, eps, step_size, bc2s, l2, shrink;
    bool decay;
  };
  /// At step count t.
  StepScalars scalars(const ParamGroup& group, int64_t t) const;
  AdamOptions options_;
  bool decoupled_;
};

class AdamW : public Adam {
 public:
  AdamW(const std::vector<nn::NamedParam>& params, const AdamOptions& options);
  AdamW(std::vector<ParamGroup> groups, const AdamOptions& options);
};

}  // namespace seqlab::optim
