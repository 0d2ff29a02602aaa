// Module: parameter and child registration, recursive traversal, dtype conversion, state dicts.
#include "layers/module.h"

#include <set>

#include "core/error.h"

namespace seqlab::nn {

void Module::check_new_name(const std::string& name) const {
  SEQLAB_CHECK(!name.empty(), "Module: a parameter or child name must not be empty");
  SEQLAB_CHECK(name.find('.') == std::string::npos, "Module: name '", name,
               "' contains '.', which separates path components");
  for (const Entry& e : entries_)
    SEQLAB_CHECK(e.name != name, "Module: name '", name, "' is already registered");
}

Tensor Module::register_parameter(const std::string& name, Tensor t, ParamOptions options) {
  check_new_name(name);
  SEQLAB_CHECK(t.defined(), "Module: parameter '", name, "' is an undefined tensor");
  SEQLAB_CHECK(t.dtype() != DType::i32, "Module: parameter '", name, "' must be float32 or float64");
  SEQLAB_CHECK(options.lr_scale >= 0, "Module: parameter '", name, "': lr_scale must be >= 0, got ",
               options.lr_scale);
  t.set_requires_grad(true);
  entries_.push_back({name, t, options, nullptr});
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name);
  SEQLAB_CHECK(m != nullptr, "Module: child '", name, "' is null");
  SEQLAB_CHECK(m.get() != this, "Module: child '", name, "' is the module itself");
  m->train(training_);
  entries_.push_back({name, Tensor(), {}, std::move(m)});
}

void Module::collect(const std::string& prefix, std::vector<NamedParam>& out) const {
  for (const Entry& e : entries_) {
    if (e.child) e.child->collect(prefix + e.name + ".", out);
    else out.push_back({prefix + e.name, e.tensor, e.options});
  }
}

std::vector<NamedParam> Module::named_parameters() const {
  std::vector<NamedParam> out;
  collect("", out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (NamedParam& p : named_parameters()) out.push_back(p.tensor);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  for (const Entry& e : entries_)
    if (e.child) out.emplace_back(e.name, e.child);
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (const Entry& e : entries_)
    if (e.child) e.child->train(on);
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const NamedParam& p : named_parameters()) n += p.tensor.numel();
  return n;
}

void Module::zero_grad() {
  for (NamedParam& p : named_parameters()) p.tensor.zero_grad();
}

void Module::to(DType dtype) {
  SEQLAB_CHECK(dtype != DType::i32, "Module::to: parameters must be float32 or float64, got int32");
  for (NamedParam& p : named_parameters()) {
    TensorImpl* impl = p.tensor.impl();
    impl->grad = Tensor();
    if (impl->dtype == dtype) continue;
    // Swap the storage under the existing impl so that every copy of the handle follows.
    Tensor converted = p.tensor.to(dtype);
    impl->storage = converted.impl()->storage;
    impl->dtype = dtype;
  }
}

void Module::to(Device device) {
  for (NamedParam& p : named_parameters()) {
    TensorImpl* impl = p.tensor.impl();
    impl->grad = Tensor();
    if (p.tensor.device() == device) continue;
    impl->storage = p.tensor.to(device).impl()->storage;
  }
}

Device Module::device() const {
  std::vector<NamedParam> ps = named_parameters();
  return ps.empty() ? Device::cpu : ps.front().tensor.device();
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (const NamedParam& p : named_parameters()) out.emplace(p.name, p.tensor.detach().clone());
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state) {
  std::vector<NamedParam> params = named_parameters();
  std::set<std::string> known;
  for (const NamedParam& p : params) {
    known.insert(p.name);
    auto it = state.find(p.name);
    SEQLAB_CHECK(it != state.end(), "load_state_dict: missing key '", p.name, "' (shape ",
                 to_string(p.tensor.shape()), ")");
    SEQLAB_CHECK(it->second.defined(), "load_state_dict: key '", p.name, "' holds an undefined tensor");
    SEQLAB_CHECK(it->second.shape() == p.tensor.shape(), "load_state_dict: shape mismatch for '", p.name,
                 "': the state dict has ", to_string(it->second.shape()), ", the module expects ",
                 to_string(p.tensor.shape()));
  }
  for (const auto& [name, t] : state) {
    (void)t;
    SEQLAB_CHECK(known.count(name), "load_state_dict: unexpected key '", name, "' (the module has ",
                 params.size(), " parameters", params.empty() ? "" : ", e.g. '",
                 params.empty() ? "" : params.front().name, params.empty() ? "" : "'", ")");
  }
  for (NamedParam& p : params) p.tensor.copy_from(state.at(p.name));
}

Tensor ModuleList::forward(const Tensor&) {
  throw Error("ModuleList::forward: a ModuleList has no forward; call its items");
}

}  // namespace seqlab::nn
