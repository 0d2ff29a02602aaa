// Optimizer base: parameter groups, step bookkeeping and state save/restore.
#include "optim/optimizer.h"

#include <set>

#include "autograd/node.h"
#include "core/error.h"

namespace seqlab::optim {

std::vector<ParamGroup> make_param_groups(const std::vector<nn::NamedParam>& params, double base_lr,
                                          double weight_decay) {
  std::vector<ParamGroup> groups;
  std::vector<std::pair<bool, double>> keys;  // (decayed, lr_scale) of each group
  for (const nn::NamedParam& p : params) {
    std::pair<bool, double> key{p.options.weight_decay, p.options.lr_scale};
    size_t g = 0;
    while (g < keys.size() && keys[g] != key) ++g;
    if (g == keys.size()) {
      keys.push_back(key);
      ParamGroup pg;
      pg.lr = base_lr * key.second;
      pg.weight_decay = key.first ? weight_decay : 0.0;
      pg.lr_scale = key.second;
      groups.push_back(std::move(pg));
    }
    groups[g].params.push_back(p.tensor);
    groups[g].names.push_back(p.name);
  }
  return groups;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, std::vector<std::string> state_kinds)
    : groups_(std::move(groups)), kinds_(std::move(state_kinds)) {
  SEQLAB_CHECK(!groups_.empty(), "optimizer: no parameter groups");
  std::set<std::string> seen;
  base_lr_ = groups_.front().lr / (groups_.front().lr_scale > 0 ? groups_.front().lr_scale : 1.0);
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    if (g.names.empty())
      for (size_t i = 0; i < g.params.size(); ++i) g.names.push_back(str(gi, ".", i));
    SEQLAB_CHECK(g.names.size() == g.params.size(), "optimizer: group ", gi, " has ", g.params.size(),
                 " params but ", g.names.size(), " names");
    SEQLAB_CHECK(g.lr >= 0, "optimizer: group ", gi, ": lr must be >= 0, got ", g.lr);
    SEQLAB_CHECK(g.weight_decay >= 0, "optimizer: group ", gi, ": weight_decay must be >= 0, got ", g.weight_decay);
    state_.emplace_back();
    for (size_t i = 0; i < g.params.size(); ++i) {
      const Tensor& p = g.params[i];
      SEQLAB_CHECK(p.defined() && p.dtype() != DType::i32, "optimizer: parameter '", g.names[i],
                   "' must be a float32 or float64 tensor");
      SEQLAB_CHECK(seen.insert(g.names[i]).second, "optimizer: parameter name '", g.names[i],
                   "' appears twice");
      std::vector<Tensor> st;
      for (size_t k = 0; k < kinds_.size(); ++k) st.push_back(Tensor::zeros_like(p));
      state_.back().push_back(std::move(st));
    }
  }
}

// The items of group gi: every parameter with a gradient (its state following the parameter's dtype).
void Optimizer::collect_items(size_t gi, std::vector<Tensor>& grads, std::vector<Item>& items) {
  ParamGroup& g = groups_[gi];
  grads.assign(g.params.size(), Tensor());
  items.clear();
  for (size_t i = 0; i < g.params.size(); ++i) {
    Tensor& p = g.params[i];
    Tensor& grad = grads[i];
    grad = p.grad();
    if (!grad.defined()) continue;
    SEQLAB_CHECK(grad.shape() == p.shape() && grad.dtype() == p.dtype(), "optimizer: gradient of '", g.names[i],
                 "' is ", dtype_name(grad.dtype()), " ", to_string(grad.shape()), ", the parameter is ",
                 dtype_name(p.dtype()), " ", to_string(p.shape()));
    std::vector<Tensor>& st = state_[gi][i];
    // The module was moved to another dtype after the optimizer was built: follow it once.
    for (Tensor& s : st)
      if (s.dtype() != p.dtype()) s = s.to(p.dtype());
    items.push_back({&p, &grad, &st});
  }
}

void Optimizer::step() {
  NoGradGuard no_grad;
  ++step_;
  std::vector<Tensor> grads;
  std::vector<Item> items;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    collect_items(gi, grads, items);
    if (!update_many(groups_[gi], items))
      for (Item& it : items) update(groups_[gi], *it.p, *it.g, *it.state);
  }
}

void Optimizer::step_gated(const double* scalars, const double* gate) {
  NoGradGuard no_grad;
  const int64_t k = device_scalars_per_group();
  SEQLAB_CHECK(k > 0, "optimizer: this optimizer has no device-side step (a captured training step needs Adam or AdamW)");
  std::vector<Tensor> grads;
  std::vector<Item> items;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    collect_items(gi, grads, items);
    if (items.empty()) continue;
    SEQLAB_CHECK(update_many_gated(groups_[gi], items, scalars + static_cast<int64_t>(gi) * k, gate),
                 "optimizer: group ", gi, " cannot take a device-side step (CPU parameters, or multi-tensor "
                 "launches off: SEQLAB_CUDA_MULTI_TENSOR=0)");
  }
}

void Optimizer::zero_grad() {
  for (ParamGroup& g : groups_)
    for (Tensor& p : g.params) p.zero_grad();
}

void Optimizer::set_lr(double base_lr) {
  SEQLAB_CHECK(base_lr >= 0, "optimizer: set_lr expects lr >= 0, got ", base_lr);
  base_lr_ = base_lr;
  for (ParamGroup& g : groups_) g.lr = base_lr * g.lr_scale;
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> out;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i)
      for (size_t k = 0; k < kinds_.size(); ++k)
        out.emplace(kinds_[k] + "." + groups_[gi].names[i], state_[gi][i][k].clone());
  out.emplace("step", Tensor::scalar(static_cast<double>(step_), DType::f64));
  return out;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  auto step_it = state.find("step");
  SEQLAB_CHECK(step_it != state.end() && step_it->second.defined() && step_it->second.numel() == 1,
               "optimizer load_state_dict: missing key 'step' (a one-element tensor)");
  std::set<std::string> known{"step"};
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i)
      for (size_t k = 0; k < kinds_.size(); ++k) {
        std::string key = kinds_[k] + "." + groups_[gi].names[i];
        known.insert(key);
        auto it = state.find(key);
        SEQLAB_CHECK(it != state.end() && it->second.defined(), "optimizer load_state_dict: missing key '",
                     key, "'");
        const Shape& want = groups_[gi].params[i].shape();
        SEQLAB_CHECK(it->second.shape() == want, "optimizer load_state_dict: shape mismatch for '", key,
                     "': the state dict has ", to_string(it->second.shape()), ", the parameter is ",
                     to_string(want));
      }
  for (const auto& kv : state)
    SEQLAB_CHECK(known.count(kv.first), "optimizer load_state_dict: unexpected key '", kv.first, "'");
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i)
      for (size_t k = 0; k < kinds_.size(); ++k) {
        Tensor& s = state_[gi][i][k];
        if (s.dtype() != groups_[gi].params[i].dtype()) s = Tensor::zeros_like(groups_[gi].params[i]);
        s.copy_from(state.at(kinds_[k] + "." + groups_[gi].names[i]));
      }
  step_ = static_cast<int64_t>(step_it->second.item());
}

}  // namespace seqlab::optim
