// Module: the base of every layer. A module owns named parameters and named child modules, in
// registration order, so a parameter's full name is its path (`blocks.1.mixer.A_log`) as in
// PyTorch's nn.Module. Per-parameter options (no weight decay, lr scale) travel with the name so
// the optimizer can build its parameter groups from named_parameters().
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/named_param.h"  // ParamOptions, NamedParam
#include "core/tensor.h"

namespace seqlab::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The layer's computation.
  virtual Tensor forward(const Tensor& x) = 0;
  /// Same as forward(x).
  Tensor operator()(const Tensor& x) { return forward(x); }

  /// Registers a leaf parameter (marked requires_grad) under `name` (no dots, unique); returns it.
  Tensor register_parameter(const std::string& name, Tensor t, ParamOptions options = {});
  /// Registers a child module under `name` (no dots, unique); returns it.
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

  /// Every parameter of this module and its children, dotted names, in registration order.
  std::vector<NamedParam> named_parameters() const;
  /// The tensors of named_parameters(), same order.
  std::vector<Tensor> parameters() const;
  /// Direct children with their names, in registration order.
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;

  /// Sets the training flag of this module and every descendant.
  void train(bool on = true);
  /// train(false).
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Total number of scalar parameters.
  int64_t num_parameters() const;
  /// Drops every parameter's gradient.
  void zero_grad();
  /// Converts every parameter to `dtype` in place: every handle to it (members, optimizers) sees
  /// the new dtype; names and options are kept, gradients dropped.
  void to(DType dtype);
  /// Moves every parameter to `device` in place (the same handle-following swap; gradients dropped).
  /// Build the optimizer after the move: its state is made where the parameters live.
  void to(Device device);
  /// Where the parameters live (cpu for a module without parameters).
  Device device() const;

  /// Detached copies of every parameter, by dotted name.
  std::map<std::string, Tensor> state_dict() const;
  /// Copies values into the parameters (converting dtype). Throws naming the first missing key,
  /// unexpected key or shape mismatch; nothing is copied unless every key matches.
  void load_state_dict(const std::map<std::string, Tensor>& state);

 private:
  struct Entry {
    std::string name;
    Tensor tensor;                  // a parameter, or
    ParamOptions options;
    std::shared_ptr<Module> child;  // a child module
  };
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void check_new_name(const std::string& name) const;
  void collect(const std::string& prefix, std::vector<NamedParam>& out) const;

  std::vector<Entry> entries_;
  bool training_ = true;
};

/// An indexed list of modules; children are named "0", "1", ... (no forward of its own).
class ModuleList : public Module {
 public:
  /// Appends m under the next index; returns it.
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    register_module(std::to_string(items_.size()), m);
    items_.push_back(m);
    return m;
  }
  size_t size() const { return items_.size(); }
  Module& operator[](size_t i) const { return *items_.at(i); }
  /// Throws: a ModuleList is a container, its owner decides how to call the items.
  Tensor forward(const Tensor& x) override;

 private:
  std::vector<std::shared_ptr<Module>> items_;
};

}  // namespace seqlab::nn
