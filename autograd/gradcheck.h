// Finite-difference gradient check: central differences in float64 against the analytic gradient
// of every input that requires grad. The scalar checked is sum(f(x) * w) for a fixed random w, so
// every output element contributes with a different weight. Each element of each gradient is
// checked against its own size: |analytic - numeric| <= tol * max(|numeric|, kGradcheckFloor).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace seqlab {

/// Entries whose numeric gradient is below this in magnitude are compared in absolute terms: central
/// differences carry an absolute error of ~1e-16 |f| / eps (about 1e-9 for the checked sums here).
inline constexpr double kGradcheckFloor = 1e-2;

struct GradcheckResult {
  bool ok = true;
  double max_rel_error = 0;  // max over inputs and elements of |analytic - numeric| / max(|numeric|, 1e-2)
  std::string report;        // per input: error, worst index, both values
};

/// Checks every float64 input with requires_grad(). `f` must be deterministic in its inputs.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, double eps = 1e-6, double tol = 1e-6,
                          uint64_t seed = 1234);

}  // namespace seqlab
