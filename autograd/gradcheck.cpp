#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/node.h"
#include "core/random.h"

namespace seqlab {
namespace {
double weighted_sum(const Tensor& y_any, const Tensor& w) {
  const Tensor y = y_any.to(Device::cpu);  // a device output is summed on the host
  const double* py = y.data<double>();
  const double* pw = w.data<double>();
  double s = 0;
  for (int64_t i = 0, n = y.numel(); i < n; ++i) s += py[i] * pw[i];
  return s;
}
}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, double eps, double tol, uint64_t seed) {
  for (const Tensor& x : inputs)
    SEQLAB_CHECK(!x.requires_grad() || x.dtype() == DType::f64, "gradcheck: inputs must be float64");
  for (const Tensor& x : inputs)
    if (x.defined()) const_cast<Tensor&>(x).zero_grad();

  Tensor y = f(inputs);
  SEQLAB_CHECK(y.dtype() == DType::f64, "gradcheck: output must be float64");
  Generator gen(seed);
  Tensor w = randn(y.shape(), 0, 1, DType::f64, gen);
  backward(y, w.to(y.device()));

  GradcheckResult r;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor analytic = (x.grad().defined() ? x.grad() : Tensor::zeros_like(x)).to(Device::cpu);
    // A device input is perturbed in a host copy, sent back before each evaluation.
    const bool on_device = x.device() != Device::cpu;
    Tensor host = on_device ? x.to(Device::cpu) : x;
    double* px = host.data<double>();
    auto send = [&] {
      if (on_device) const_cast<Tensor&>(x).copy_from(host);
    };
    std::vector<double> numeric(static_cast<size_t>(x.numel()));
    {
      NoGradGuard ng;
      for (int64_t i = 0; i < x.numel(); ++i) {
        double orig = px[i];
        px[i] = orig + eps;
        send();
        double fp = weighted_sum(f(inputs), w);
        px[i] = orig - eps;
        send();
        double fm = weighted_sum(f(inputs), w);
        px[i] = orig;
        send();
        numeric[static_cast<size_t>(i)] = (fp - fm) / (2 * eps);
      }
    }
    // Per element, against the element's own size (with an absolute floor for entries near 0): a
    // wrong small entry next to large ones fails too, which a per-tensor norm would hide.
    const double* pa = analytic.data<double>();
    double rel = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double n = numeric[static_cast<size_t>(i)];
      const double e = std::abs(pa[i] - n) / std::max(std::abs(n), kGradcheckFloor);
      if (std::isnan(e) || e > rel) {
        rel = std::isnan(e) ? INFINITY : e;
        worst = i;
        if (std::isinf(rel)) break;
      }
    }
    r.max_rel_error = std::max(r.max_rel_error, rel);
    if (!(rel <= tol)) r.ok = false;
    r.report += str("input ", k, " ", to_string(x.shape()), ": rel error ", rel, " (worst index ", worst,
                    ": analytic ", pa[worst], ", numeric ", numeric[static_cast<size_t>(worst)], ")\n");
  }
  for (const Tensor& x : inputs)
    if (x.defined()) const_cast<Tensor&>(x).zero_grad();
  return r;
}

}  // namespace seqlab
