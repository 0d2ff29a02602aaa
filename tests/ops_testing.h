// Helpers for the op suites (elementwise, unary, reduce, shape): a gradcheck that can also log its
// error (SEQLAB_GRADCHECK_LOG=1), an error-message catcher, and naive reference loops.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "testing.h"

namespace seqlab::testing {

/// The message of the seqlab::Error that f throws, or "" when it throws nothing.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// Float64 input with values drawn from N(0, 1) (seeded), marked as requiring grad.
inline Tensor gc_input(const Shape& s, uint64_t seed, double lo = 0, double hi = 0) {
  Generator g(seed);
  Tensor t = hi > lo ? rand_uniform(s, lo, hi, DType::f64, g) : randn(s, 0, 1, DType::f64, g);
  t.set_requires_grad();
  return t;
}

/// Row-major index of `idx` (a multi-index of `out`) into a tensor of shape `s` broadcast to `out`.
inline int64_t broadcast_index(const std::vector<int64_t>& idx, const Shape& s, const Shape& out) {
  int64_t off = 0;
  const size_t lead = out.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i) off = off * s[i] + (s[i] == 1 ? 0 : idx[i + lead]);
  return off;
}

/// Multi-index of flat position `f` in shape `s`.
inline std::vector<int64_t> unravel(int64_t f, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (size_t i = s.size(); i-- > 0;) {
    idx[i] = f % s[i];
    f /= s[i];
  }
  return idx;
}

/// Naive broadcasting binary op on the values of a and b, in double.
inline std::vector<double> naive_binary(const Tensor& a, const Tensor& b, const Shape& out,
                                        const std::function<double(double, double)>& f) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector(), r(static_cast<size_t>(numel(out)));
  for (int64_t i = 0; i < numel(out); ++i) {
    std::vector<int64_t> idx = unravel(i, out);
    r[static_cast<size_t>(i)] = f(va[static_cast<size_t>(broadcast_index(idx, a.shape(), out))],
                                  vb[static_cast<size_t>(broadcast_index(idx, b.shape(), out))]);
  }
  return r;
}

}  // namespace seqlab::testing

/// CHECK_GRADCHECK, and with SEQLAB_GRADCHECK_LOG set also prints "gradcheck <op> <max rel error>".
#define CHECK_OP_GRADCHECK(op, f, inputs)                                                   \
  do {                                                                                      \
    CHECK_GRADCHECK(f, inputs);                                                             \
    if (std::getenv("SEQLAB_GRADCHECK_LOG"))                                                \
      std::printf("gradcheck %s %.3g\n", (op), ::seqlab::gradcheck((f), (inputs)).max_rel_error); \
  } while (0)
