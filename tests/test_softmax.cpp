// softmax and log_softmax: float64 gradchecks along every axis, kernels against naive loops in
// float32 and float64 (sizes that spread lines over TBB tasks), stability on large logits.
#include <cmath>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops/softmax.h"
#include "core/kernels/softmax.h"
#include "core/random.h"
#include "testing.h"

using namespace seqlab;

namespace {

// Naive (log-)softmax of x along `axis` in double.
std::vector<double> naive(const Tensor& x, int64_t axis, bool log) {
  Shape s = x.shape();
  int64_t a = axis < 0 ? axis + x.dim() : axis;
  int64_t outer = 1, n = s[a], inner = 1;
  for (int64_t i = 0; i < a; ++i) outer *= s[i];
  for (int64_t i = a + 1; i < x.dim(); ++i) inner *= s[i];
  std::vector<double> v = x.to_vector(), y(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return static_cast<size_t>((o * n + j) * inner + i); };
      double m = -INFINITY, z = 0;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, v[at(j)]);
      for (int64_t j = 0; j < n; ++j) z += std::exp(v[at(j)] - m);
      for (int64_t j = 0; j < n; ++j) y[at(j)] = log ? v[at(j)] - m - std::log(z) : std::exp(v[at(j)] - m) / z;
    }
  return y;
}

// Naive backward from the definition: dx_k = sum_j dy_j dy_j/dx_k along each line.
std::vector<double> naive_backward(const Tensor& dy, const Tensor& x, int64_t axis, bool log) {
  std::vector<double> p = naive(x, axis, false), g = dy.to_vector(), dx(p.size());
  Shape s = x.shape();
  int64_t a = axis < 0 ? axis + x.dim() : axis;
  int64_t outer = 1, n = s[a], inner = 1;
  for (int64_t i = 0; i < a; ++i) outer *= s[i];
  for (int64_t i = a + 1; i < x.dim(); ++i) inner *= s[i];
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return static_cast<size_t>((o * n + j) * inner + i); };
      for (int64_t k = 0; k < n; ++k) {
        double acc = 0;
        for (int64_t j = 0; j < n; ++j) {
          double jac = log ? (j == k) - p[at(k)] : p[at(j)] * ((j == k) - p[at(k)]);
          acc += g[at(j)] * jac;
        }
        dx[at(k)] = acc;
      }
    }
  return dx;
}

}  // namespace

TEST_CASE("ops/softmax: gradcheck along every axis") {
  Generator gen(1);
  Tensor x = randn({2, 3, 4}, 0, 1, DType::f64, gen).set_requires_grad();
  for (int64_t axis : {0, 1, 2, -1, -3}) {
    CAPTURE(axis);
    CHECK_GRADCHECK([axis](const std::vector<Tensor>& in) { return softmax(in[0], axis); }, std::vector<Tensor>{x});
  }
  Tensor v = randn({5}, 0, 1, DType::f64, gen).set_requires_grad();
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return softmax(in[0]); }, std::vector<Tensor>{v});
}

TEST_CASE("ops/log_softmax: gradcheck along every axis") {
  Generator gen(2);
  Tensor x = randn({2, 3, 4}, 0, 1, DType::f64, gen).set_requires_grad();
  for (int64_t axis : {0, 1, 2, -1, -2}) {
    CAPTURE(axis);
    CHECK_GRADCHECK([axis](const std::vector<Tensor>& in) { return log_softmax(in[0], axis); },
                    std::vector<Tensor>{x});
  }
}

TEST_CASE("kernels/softmax: matches naive loops, float32 and float64, TBB-split sizes") {
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dt));
    double tol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-6 : 1e-14;
    Generator gen(3);
    struct Case {
      Shape shape;
      int64_t axis;
    };
    for (const Case& c : {Case{{3, 4, 5}, 1}, Case{{256, 1000}, -1}, Case{{40, 300, 6}, 1}, Case{{500, 70}, 0}}) {
      CAPTURE(to_string(c.shape));
      CAPTURE(c.axis);
      Tensor x = randn(c.shape, 0, 3, dt, gen), dy = randn(c.shape, 0, 1, dt, gen);
      Tensor y = kernels::softmax_forward(x, c.axis), ly = kernels::log_softmax_forward(x, c.axis);
      CHECK_CLOSE(y, naive(x, c.axis, false), tol, atol);
      CHECK_CLOSE(ly, naive(x, c.axis, true), tol, atol * 10);
      if (numel(c.shape) <= 100000 && c.shape[c.axis < 0 ? c.axis + c.shape.size() : c.axis] <= 300) {
        CHECK_CLOSE(kernels::softmax_backward(dy, y, c.axis), naive_backward(dy, x, c.axis, false), tol * 10, atol * 10);
        CHECK_CLOSE(kernels::log_softmax_backward(dy, ly, c.axis), naive_backward(dy, x, c.axis, true), tol * 10,
                    atol * 100);
      }
    }
  }
}

TEST_CASE("ops/softmax: stable for large logits, rows sum to one") {
  Tensor x = Tensor::from_vector({1000, 1001, 1002, -1000, -1001, -1002}, {2, 3});
  Tensor y = softmax(x), ly = log_softmax(x);
  for (double v : y.to_vector()) CHECK(std::isfinite(v));
  for (double v : ly.to_vector()) CHECK(std::isfinite(v));
  std::vector<double> p = y.to_vector();
  CHECK(p[0] + p[1] + p[2] == doctest::Approx(1.0));
  CHECK(p[3] + p[4] + p[5] == doctest::Approx(1.0));
  CHECK(ly.to_vector()[2] == doctest::Approx(-std::log(1 + std::exp(-1.0) + std::exp(-2.0))));
}

TEST_CASE("ops/softmax: axis errors name the op") {
  Tensor x = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(softmax(x, 2), doctest::Contains("softmax: axis 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(log_softmax(x, -3), doctest::Contains("log_softmax: axis -3"), Error);
  CHECK_THROWS_AS(softmax(Tensor::zeros({2}, DType::i32)), Error);
}
