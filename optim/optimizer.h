// Optimizer: the base of SGD and Adam(W). Parameters live in groups that share a learning rate and
// a weight decay (as torch.optim param_groups); groups are built from Module::named_parameters()
// so that parameters marked weight_decay = false or with an lr_scale get their own group.
// State tensors (momentum buffers, moments) are allocated once, at construction.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "autograd/named_param.h"

namespace seqlab::optim {

struct ParamGroup {
  std::vector<Tensor> params;
  std::vector<std::string> names;  // one per param, unique across groups; keys of the state dict
  double lr = 1e-3;                // effective learning rate = base lr * lr_scale
  double weight_decay = 0.0;
  double lr_scale = 1.0;           // set_lr(base) sets lr = base * lr_scale
};

/// Groups named parameters by (weight decay on/off, lr_scale), in order of first appearance:
/// decayed parameters get `weight_decay`, the others 0; lr = base_lr * lr_scale.
std::vector<ParamGroup> make_param_groups(const std::vector<nn::NamedParam>& params, double base_lr,
                                          double weight_decay);

class Optimizer {
 public:
  /// Checks names (unique, one per param; generated as "<group>.<index>" when a group has none).
  Optimizer(std::vector<ParamGroup> groups, std::vector<std::string> state_kinds);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// One update of every parameter that has a gradient (under no-grad); parameters without one
  /// are skipped. The step count (used for bias correction) counts calls to step().
  void step();
  /// Drops every parameter's gradient.
  void zero_grad();

  // A step captured in a CUDA graph (apps/graph_step.h), where the host's per-step numbers must be
  // read from device memory when the graph runs.
  /// Doubles per group of device_scalars() (0: this optimizer has no device step).
  virtual int64_t device_scalars_per_group() const { return 0; }
  /// The per-group scalars of the next step (step count step_count() + 1, the current lr) into out,
  /// device_scalars_per_group() per group: copied to the device before each replay.
  virtual void device_scalars(double* out) const { (void)out; }
  /// Queues the update of every parameter that has a gradient, as step() would, with the scalars
  /// read from `scalars` (device, device_scalars() layout) and skipped on the device unless gate[0]
  /// (the loss) and gate[1] (the gradients' sum of squares) are finite. Does not count the step:
  /// count_step() does, once the host knows it was applied. Throws where a group cannot.
  void step_gated(const double* scalars, const double* gate);
  /// Counts one step (bias corrections use the count), as step() does.
  void count_step() { ++step_; }
  /// Sets each group's lr to base_lr * its lr_scale (schedules call this every step).
  void set_lr(double base_lr);
  /// The base learning rate last set (the constructor's, until set_lr).
  double base_lr() const { return base_lr_; }
  int64_t step_count() const { return step_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }

  /// Copies of the state: "<kind>.<param name>" for each state kind (exp_avg, exp_avg_sq,
  /// momentum_buffer), plus "step" (a float64 scalar).
  std::map<std::string, Tensor> state_dict() const;
  /// Restores a state_dict(); throws naming a missing or unexpected key or a shape mismatch
  /// (both shapes). Nothing is changed unless every key matches.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 protected:
  /// Updates p in place from its gradient g; `state` holds one tensor per state kind (same shape
  /// and dtype as p). step_count() is already incremented.
  virtual void update(const ParamGroup& group, Tensor& p, const Tensor& g, std::vector<Tensor>& state) = 0;
  /// One parameter of a group with its gradient and state, for update_many.
  struct Item {
    Tensor* p;
    const Tensor* g;
    std::vector<Tensor>* state;
  };
  /// Updates every item of one group at once and returns true, or returns false (the default) to
  /// have update() called on each: Adam's multi-tensor launches on the GPU (cuda::multi_tensor()).
  virtual bool update_many(const ParamGroup& group, std::vector<Item>& items) {
    (void)group;
    (void)items;
    return false;
  }
  /// step_gated's update of one group (`scalars`: this group's device_scalars); false where it cannot.
  virtual bool update_many_gated(const ParamGroup& group, std::vector<Item>& items, const double* scalars,
                                 const double* gate) {
    (void)group;
    (void)items;
    (void)scalars;
    (void)gate;
    return false;
  }

 private:
  void collect_items(size_t gi, std::vector<Tensor>& grads, std::vector<Item>& items);
  std::vector<ParamGroup> groups_;
  std::vector<std::string> kinds_;
  std::vector<std::vector<std::vector<Tensor>>> state_;  // [group][param][kind]
  int64_t step_ = 0;
  double base_lr_ = 0;
};

/// Elements per parallel chunk in optimizer loops (small tensors run inline).
inline constexpr int64_t kOptimGrain = 1 << 15;

}  // namespace seqlab::optim
