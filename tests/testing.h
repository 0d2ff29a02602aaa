// Test helpers shared by every suite: closeness checks that report the worst index, both values
// and the difference, a gradcheck wrapper, and reading a whole file.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "core/isa.h"
#include "core/tensor.h"

namespace seqlab::testing {

/// Runs body() once on every ISA path this CPU supports (core/isa.h), narrowest first, with the
/// path named in any failure; the path in use before is restored afterwards.
template <typename F>
void for_each_isa(F&& body) {
  for (Isa isa : supported_isas()) {
    IsaGuard guard(isa);
    const std::string name = isa_name(isa);
    INFO("ISA path ", name);
    MESSAGE("ISA path ", name);
    body();
  }
}

/// The bytes of a file ("" when it cannot be opened).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct CloseResult {
  bool ok = true;
  std::string message;
};

/// |a - b| <= atol + rtol * |b| elementwise; the message names the worst index. A NaN on either side
/// fails (NaN against NaN too: a kernel that returns NaN is wrong whatever the reference says), and an
/// infinity passes only against the same infinity.
inline CloseResult close(const std::vector<double>& a, const std::vector<double>& b, double rtol, double atol) {
  if (a.size() != b.size()) return {false, "size " + std::to_string(a.size()) + " vs " + std::to_string(b.size())};
  double worst = -1;
  size_t wi = 0;
  bool ok = true;
  for (size_t i = 0; i < a.size(); ++i) {
    double d = std::abs(a[i] - b[i]);
    double excess = d - (atol + rtol * std::abs(b[i]));
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) excess = a[i] == b[i] ? 0.0 : INFINITY;
    if (excess > 0) ok = false;
    if (excess > worst || i == 0) {
      worst = excess;
      wi = i;
    }
  }
  if (ok) return {true, ""};
  return {false, "worst index " + std::to_string(wi) + ": " + std::to_string(a[wi]) + " vs " +
                     std::to_string(b[wi]) + " (diff " + std::to_string(std::abs(a[wi] - b[wi])) + ")"};
}

}  // namespace seqlab::testing

/// Checks two tensors (or a tensor and a vector<double>) are close; reports the worst index.
#define CHECK_CLOSE(a, b, rtol, atol)                                                          \
  do {                                                                                         \
    auto r_ = ::seqlab::testing::close(::seqlab::testing::values(a), ::seqlab::testing::values(b), \
                                       (rtol), (atol));                                        \
    CHECK_MESSAGE(r_.ok, r_.message);                                                          \
  } while (0)

/// Runs gradcheck and checks it passes, printing the per-input report when it does not.
#define CHECK_GRADCHECK(f, inputs)                        \
  do {                                                    \
    auto g_ = ::seqlab::gradcheck((f), (inputs));         \
    CHECK_MESSAGE(g_.ok, g_.report);                      \
  } while (0)

namespace seqlab::testing {
inline std::vector<double> values(const Tensor& t) { return t.to_vector(); }
inline std::vector<double> values(const std::vector<double>& v) { return v; }

/// One forward and backward of `layer` on a fresh copy of x: y, dL/dx and every parameter's
/// gradient for L = sum(y * dy) (dy undefined: L = sum(y * y)), as vectors to compare bit for bit
/// across thread counts or runs.
template <typename Layer>
std::vector<std::vector<double>> forward_backward_values(Layer& layer, const Tensor& x_in, const Tensor& dy = Tensor()) {
  layer.zero_grad();
  Tensor x = x_in.detach().clone();
  x.set_requires_grad(true);
  Tensor y = layer.forward(x);
  backward(sum(mul(y, dy.defined() ? dy : y)));
  std::vector<std::vector<double>> out{y.to_vector(), x.grad().to_vector()};
  for (const auto& p : layer.named_parameters()) out.push_back(p.tensor.grad().to_vector());
  return out;
}
}  // namespace seqlab::testing
