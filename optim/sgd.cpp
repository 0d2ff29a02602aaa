// SGD update: one fused in-place loop per parameter, in the parameter's dtype.
#include "optim/sgd.h"

#include "core/cuda/optim.h"
#include "core/device.h"

#include "core/parallel.h"

namespace seqlab::optim {

void SGDOptions::validate() const {
  SEQLAB_CHECK(lr >= 0, "SGDOptions.lr: expected >= 0, got ", lr);
  SEQLAB_CHECK(momentum >= 0, "SGDOptions.momentum: expected >= 0, got ", momentum);
  SEQLAB_CHECK(dampening >= 0 && dampening <= 1, "SGDOptions.dampening: expected in [0, 1], got ", dampening);
  SEQLAB_CHECK(weight_decay >= 0, "SGDOptions.weight_decay: expected >= 0, got ", weight_decay);
  SEQLAB_CHECK(!nesterov || (momentum > 0 && dampening == 0),
               "SGDOptions.nesterov: needs momentum > 0 and dampening = 0 (got momentum ", momentum,
               ", dampening ", dampening, ")");
}

namespace {
std::vector<std::string> kinds(const SGDOptions& o) {
  if (o.momentum > 0) return {"momentum_buffer"};
  return {};
}
}  // namespace

SGD::SGD(const std::vector<nn::NamedParam>& params, const SGDOptions& options)
    : SGD(make_param_groups(params, options.lr, options.weight_decay), options) {}

SGD::SGD(std::vector<ParamGroup> groups, const SGDOptions& options)
    : Optimizer((options.validate(), std::move(groups)), kinds(options)), options_(options) {}

void SGD::update(const ParamGroup& group, Tensor& p, const Tensor& g, std::vector<Tensor>& state) {
  const bool first = step_count() == 1;
  if constexpr (kCuda) {
    if (on_cuda("SGD", p, g, state.empty() ? Tensor() : state[0])) {
      cuda::sgd_update(p, g, state.empty() ? nullptr : &state[0], group.lr, group.weight_decay, options_.momentum,
                       1.0 - options_.dampening, options_.nesterov, first);
      return;
    }
  }
  dispatch_float(p.dtype(), "SGD", [&]<typename T>() {
    T* pp = p.data<T>();
    const T* pg = g.data<T>();
    T* buf = state.empty() ? nullptr : state[0].data<T>();
    const T lr = static_cast<T>(group.lr), wd = static_cast<T>(group.weight_decay);
    const T mu = static_cast<T>(options_.momentum), damp = static_cast<T>(1.0 - options_.dampening);
    const bool nesterov = options_.nesterov;
    parallel_for(0, p.numel(), kOptimGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        T d = pg[i];
        if (wd != T(0)) d += wd * pp[i];
        if (buf) {
          buf[i] = first ? d : mu * buf[i] + damp * d;
          d = nesterov ? d + mu * buf[i] : buf[i];
        }
        pp[i] -= lr * d;
      }
    });
  });
}

}  // namespace seqlab::optim
