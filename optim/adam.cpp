// Adam / AdamW update: one fused in-place loop per parameter, in the parameter's dtype.
#include "optim/adam.h"

#include "core/cuda/multi_tensor.h"
#include "core/cuda/optim.h"
#include "core/device.h"

#include <cmath>

#include "core/parallel.h"

namespace seqlab::optim {

void AdamOptions::validate() const {
  SEQLAB_CHECK(lr >= 0, "AdamOptions.lr: expected >= 0, got ", lr);
  SEQLAB_CHECK(beta1 >= 0 && beta1 < 1, "AdamOptions.beta1: expected in [0, 1), got ", beta1);
  SEQLAB_CHECK(beta2 >= 0 && beta2 < 1, "AdamOptions.beta2: expected in [0, 1), got ", beta2);
  SEQLAB_CHECK(eps >= 0, "AdamOptions.eps: expected >= 0, got ", eps);
  SEQLAB_CHECK(weight_decay >= 0, "AdamOptions.weight_decay: expected >= 0, got ", weight_decay);
}

Adam::Adam(const std::vector<nn::NamedParam>& params, const AdamOptions& options)
    : Adam(make_param_groups(params, options.lr, options.weight_decay), options, false) {}

Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& options) : Adam(std::move(groups), options, false) {}

Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& options, bool decoupled)
    : Optimizer((options.validate(), std::move(groups)), {"exp_avg", "exp_avg_sq"}),
      options_(options),
      decoupled_(decoupled) {}

AdamW::AdamW(const std::vector<nn::NamedParam>& params, const AdamOptions& options)
    : Adam(make_param_groups(params, options.lr, options.weight_decay), options, true) {}

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamOptions& options) : Adam(std::move(groups), options, true) {}

namespace {

// One chunk of the update: m, v and the parameter in place (decoupled decay applied first).
template <typename T>
void adam_chunk(int64_t lo, int64_t hi, T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                T b1c, T b2, T b2c, T eps, T step_size, T bc2s, T l2, T shrink, bool decay) {
  if (decay)
    for (int64_t i = lo; i < hi; ++i) p[i] *= shrink;
  for (int64_t i = lo; i < hi; ++i) {
    const T gi = l2 != T(0) ? g[i] + l2 * p[i] : g[i];
    m[i] += b1c * (gi - m[i]);  // lerp, as torch
    v[i] = b2 * v[i] + b2c * gi * gi;
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2s + eps);
  }
}

}  // namespace

// The scalars of step t for one group (step() passes step_count(), already incremented): what every
// path uses.
Adam::StepScalars Adam::scalars(const ParamGroup& group, int64_t step) const {
  const double t = static_cast<double>(step);
  StepScalars s;
  s.b1c = 1 - options_.beta1;
  s.b2 = options_.beta2;
  s.b2c = 1 - options_.beta2;
  s.eps = options_.eps;
  s.step_size = group.lr / (1 - std::pow(options_.beta1, t));
  s.bc2s = std::sqrt(1 - std::pow(options_.beta2, t));
  s.l2 = decoupled_ ? 0.0 : group.weight_decay;
  s.shrink = 1 - group.lr * group.weight_decay;
  s.decay = decoupled_ && group.weight_decay != 0;
  return s;
}

bool Adam::update_many(const ParamGroup& group, std::vector<Item>& items) {
  if constexpr (kCuda) {
    if (items.empty() || !cuda::multi_tensor()) return false;
    std::vector<cuda::AdamTensors> ts;
    for (Item& it : items) {
      std::vector<Tensor>& st = *it.state;
      if (!on_cuda("Adam", *it.p, *it.g, st[0], st[1])) return false;  // CPU parameters: one at a time
      ts.push_back({it.p, it.g, &st[0], &st[1]});
    }
    const StepScalars s = scalars(group, step_count());
    cuda::adam_update_many(ts, s.b1c, s.b2, s.b2c, s.eps, s.step_size, s.bc2s, s.l2, s.shrink, s.decay);
    return true;
  }
  (void)group;
  (void)items;
  return false;
}

int64_t Adam::device_scalars_per_group() const { return kCuda ? 9 : 0; }

void Adam::device_scalars(double* out) const {
  for (const ParamGroup& g : param_groups()) {
    const StepScalars s = scalars(g, step_count() + 1);
    for (double v : {s.b1c, s.b2, s.b2c, s.eps, s.step_size, s.bc2s, s.l2, s.shrink, s.decay ? 1.0 : 0.0}) *out++ = v;
  }
}

bool Adam::update_many_gated(const ParamGroup& group, std::vector<Item>& items, const double* scalars,
                             const double* gate) {
  if constexpr (kCuda) {
    if (!cuda::multi_tensor()) return false;
    std::vector<cuda::AdamTensors> ts;
    for (Item& it : items) {
      std::vector<Tensor>& st = *it.state;
      if (!on_cuda("Adam", *it.p, *it.g, st[0], st[1])) return false;
      ts.push_back({it.p, it.g, &st[0], &st[1]});
    }
    cuda::adam_update_many_gated(ts, scalars, gate);
    return true;
  }
  (void)group;
  (void)items;
  (void)scalars;
  (void)gate;
  return false;
}

void Adam::update(const ParamGroup& group, Tensor& p, const Tensor& g, std::vector<Tensor>& state) {
  const StepScalars s = scalars(group, step_count());
  if constexpr (kCuda) {
    if (on_cuda("Adam", p, g, state[0], state[1])) {
      cuda::adam_update(p, g, state[0], state[1], s.b1c, s.b2, s.b2c, s.eps, s.step_size, s.bc2s, s.l2, s.shrink,
                        s.decay);
      return;
    }
  }
  dispatch_float(p.dtype(), "Adam", [&]<typename T>() {
    T* pp = p.data<T>();
    const T* pg = g.data<T>();
    T* m = state[0].data<T>();
    T* v = state[1].data<T>();
    const T b1c = static_cast<T>(s.b1c), b2 = static_cast<T>(s.b2), b2c = static_cast<T>(s.b2c),
            eps = static_cast<T>(s.eps), step_size = static_cast<T>(s.step_size), bc2s = static_cast<T>(s.bc2s),
            l2 = static_cast<T>(s.l2), shrink = static_cast<T>(s.shrink);
    parallel_for(0, p.numel(), kOptimGrain, [&](int64_t lo, int64_t hi) {
      adam_chunk<T>(lo, hi, pp, pg, m, v, b1c, b2, b2c, eps, step_size, bc2s, l2, shrink, s.decay);
    });
  });
}

}  // namespace seqlab::optim
