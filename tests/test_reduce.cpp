// Reductions: gradchecks over every axis combination of a rank-3 tensor (negative axes, keepdim),
// kernels against naive double loops on sizes that take the parallel and chunked paths, bitwise
// determinism across thread counts, sum_to / mul_sum_to, max ties and NaN, and error messages.
#include <cmath>
#include <limits>

#include "autograd/ops.h"
#include "core/kernels/reduce.h"
#include "core/parallel.h"
#include "ops_testing.h"

using namespace seqlab;
using namespace seqlab::testing;

namespace {

const std::vector<std::vector<int64_t>> kAxes = {{0},    {1},       {2},     {0, 1},  {0, 2},
                                                 {1, 2}, {0, 1, 2}, {-1},    {-3, -1}, {2, -3, 1}, {}};

// Naive sum over `axes` (normalised) in double; the output is row-major over the kept axes.
std::vector<double> naive_sum(const Tensor& x, std::vector<int64_t> axes) {
  const Shape& s = x.shape();
  for (int64_t& a : axes) a = a < 0 ? a + x.dim() : a;
  Shape kept;
  for (size_t i = 0; i < s.size(); ++i)
    kept.push_back(std::find(axes.begin(), axes.end(), int64_t(i)) != axes.end() ? 1 : s[i]);
  std::vector<double> v = x.to_vector(), r(static_cast<size_t>(numel(kept)), 0.0);
  for (int64_t i = 0; i < x.numel(); ++i)
    r[static_cast<size_t>(broadcast_index(unravel(i, s), kept, s))] += v[static_cast<size_t>(i)];
  return r;
}

}  // namespace

TEST_CASE("ops/sum: gradcheck") {
  for (const auto& axes : kAxes)
    for (bool keep : {false, true}) {
      CAPTURE(axes.size());
      CAPTURE(keep);
      Tensor x = gc_input({2, 3, 4}, 1);
      CHECK_OP_GRADCHECK("sum", ([axes, keep](const std::vector<Tensor>& in) { return sum(in[0], axes, keep); }),
                         std::vector<Tensor>{x});
    }
  CHECK_OP_GRADCHECK("sum", [](const std::vector<Tensor>& in) { return sum(in[0]); },
                     std::vector<Tensor>{gc_input({2, 3, 4}, 2)});
  CHECK_OP_GRADCHECK("sum", [](const std::vector<Tensor>& in) { return sum(in[0], {0, 2}); },
                     std::vector<Tensor>{gc_input({2, 1, 3}, 3)});
}

TEST_CASE("ops/mean: gradcheck") {
  for (const auto& axes : kAxes)
    for (bool keep : {false, true}) {
      CAPTURE(axes.size());
      CAPTURE(keep);
      Tensor x = gc_input({2, 3, 4}, 4);
      CHECK_OP_GRADCHECK("mean", ([axes, keep](const std::vector<Tensor>& in) { return mean(in[0], axes, keep); }),
                         std::vector<Tensor>{x});
    }
  CHECK_OP_GRADCHECK("mean", [](const std::vector<Tensor>& in) { return mean(in[0]); },
                     std::vector<Tensor>{gc_input({2, 3, 4}, 5)});
}

TEST_CASE("ops/max: gradcheck") {
  for (int64_t axis : {0, 1, 2, -1, -2})
    for (bool keep : {false, true}) {
      CAPTURE(axis);
      CAPTURE(keep);
      Tensor x = gc_input({2, 3, 4}, 6);  // distinct normals: gaps far above the 1e-6 step
      CHECK_OP_GRADCHECK("max", ([axis, keep](const std::vector<Tensor>& in) { return max(in[0], axis, keep); }),
                         std::vector<Tensor>{x});
    }
}

TEST_CASE("ops/reduce: shapes of the results") {
  Tensor x = Tensor::zeros({2, 3, 4});
  CHECK(sum(x, {1}).shape() == Shape{2, 4});
  CHECK(sum(x, {1}, true).shape() == Shape{2, 1, 4});
  CHECK(mean(x, {-1, 0}).shape() == Shape{3});
  CHECK(sum(x).shape() == Shape{});
  CHECK(max(x, -1, true).shape() == Shape{2, 3, 1});
  CHECK(sum(x, {}).shape() == Shape{2, 3, 4});  // no axes: nothing reduced (as NumPy's axis=())
}

TEST_CASE("kernels/reduce: sums match naive loops") {
  // (shape, axes): contiguous rows, columns, both, few long rows, long narrow columns, separated groups.
  const std::vector<std::pair<Shape, std::vector<int64_t>>> cases = {
      {{300000}, {0}},          {{600, 500}, {0}},        {{600, 500}, {1}},       {{3, 100000}, {1}},
      {{3, 100000}, {0}},       {{100000, 3}, {0}},       {{100000, 3}, {1}},      {{20, 150, 100}, {0, 2}},
      {{20, 150, 100}, {1}},    {{20, 150, 100}, {0, 1}}, {{2, 150000}, {0, 1}},   {{7, 1, 5}, {0, 1}},
      {{5000, 70}, {0}},        {{40, 5000, 2}, {1}},     {{4, 3, 2, 5}, {0, 2}},  {{1, 70000, 1}, {1}}};
  for (DType dt : {DType::f32, DType::f64}) {
    for (const auto& [shape, axes] : cases) {
      CAPTURE(to_string(shape));
      CAPTURE(dtype_name(dt));
      Generator g(7);
      // Positive values for float32, so the tolerance can be relative (no cancellation).
      Tensor x = dt == DType::f32 ? rand_uniform(shape, 0, 1, dt, g) : randn(shape, 0, 1, dt, g);
      std::vector<double> e = naive_sum(x, axes);
      const double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 0 : 1e-10;
      CHECK_CLOSE(kernels::sum(x, axes), e, rtol, atol);
      CHECK(kernels::sum(x, axes, true).numel() == static_cast<int64_t>(e.size()));
      int64_t n = 1;
      for (int64_t a : axes) n *= shape[static_cast<size_t>(a)];
      for (double& v : e) v /= static_cast<double>(n);
      CHECK_CLOSE(kernels::mean(x, axes), e, rtol, atol);
    }
    Generator g(8);
    Tensor x = dt == DType::f32 ? rand_uniform({300001}, 0, 1, dt, g) : randn({300001}, 0, 1, dt, g);
    double s = 0, sq = 0;
    for (double v : x.to_vector()) {
      s += v;
      sq += v * v;
    }
    CHECK_CLOSE(kernels::sum_all(x), (std::vector<double>{s}), dt == DType::f32 ? 1e-6 : 1e-12, 1e-10);
    CHECK_CLOSE(kernels::mean_all(x), (std::vector<double>{s / 300001}), dt == DType::f32 ? 1e-6 : 1e-12, 1e-15);
    CHECK(std::abs(kernels::sum_squares(x) - sq) <= 1e-12 * sq);
  }
}

TEST_CASE("kernels/reduce: sums are bit-identical for 1 and 2 threads") {
  Generator g(9);
  Tensor x = randn({64, 300, 40}, 0, 1, DType::f32, g);
  std::vector<std::vector<double>> runs[2];
  for (int t : {1, 2}) {
    set_num_threads(t);
    for (const auto& axes : std::vector<std::vector<int64_t>>{{0}, {1}, {2}, {0, 1}, {0, 2}, {0, 1, 2}})
      runs[t - 1].push_back(kernels::sum(x, axes).to_vector());
    runs[t - 1].push_back(kernels::sum_all(x).to_vector());
    runs[t - 1].push_back(kernels::sum_to(x, {300, 1}).to_vector());
    runs[t - 1].push_back(kernels::mul_sum_to(x, x, {40}).to_vector());
  }
  set_num_threads(0);
  CHECK(runs[0] == runs[1]);
}

TEST_CASE("kernels/sum_to: folds broadcast axes back") {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator g(10);
    Tensor gy = rand_uniform({40, 50, 60}, 0, 1, dt, g);
    const double rtol = dt == DType::f32 ? 1e-5 : 1e-12;
    CHECK(kernels::sum_to(gy, {40, 50, 60}).shares_storage(gy));  // nothing to reduce: no copy
    CHECK_CLOSE(kernels::sum_to(gy, {60}), naive_sum(gy, {0, 1}), rtol, 0);
    CHECK_CLOSE(kernels::sum_to(gy, {1, 60}), naive_sum(gy, {0, 1}), rtol, 0);
    CHECK_CLOSE(kernels::sum_to(gy, {40, 1, 60}), naive_sum(gy, {1}), rtol, 0);
    CHECK_CLOSE(kernels::sum_to(gy, {50, 1}), naive_sum(gy, {0, 2}), rtol, 0);
    CHECK_CLOSE(kernels::sum_to(gy, {}), naive_sum(gy, {0, 1, 2}), rtol, 0);
    CHECK(kernels::sum_to(gy, {1, 50, 1}).shape() == Shape{1, 50, 1});

    // mul_sum_to: the fused leading-rows path and the general fallback against mul + naive sum.
    Tensor b = rand_uniform({40, 50, 60}, 0, 1, dt, g);
    Tensor bias = rand_uniform({60}, 0, 1, dt, g);
    std::vector<double> va = gy.to_vector(), vb = b.to_vector(), vbias = bias.to_vector();
    std::vector<double> prod(va.size()), prod_bias(va.size());
    for (size_t i = 0; i < va.size(); ++i) {
      prod[i] = va[i] * vb[i];
      prod_bias[i] = va[i] * vbias[i % 60];
    }
    Tensor p = Tensor::from_vector(prod, gy.shape(), DType::f64), pb = Tensor::from_vector(prod_bias, gy.shape(), DType::f64);
    for (const Shape& t : std::vector<Shape>{{60}, {50, 60}, {1, 1, 60}, {}, {40, 1, 60}, {1, 50, 1}}) {
      CAPTURE(to_string(t));
      std::vector<int64_t> axes;
      Shape padded(3 - t.size(), 1);
      padded.insert(padded.end(), t.begin(), t.end());
      for (int64_t i = 0; i < 3; ++i)
        if (padded[static_cast<size_t>(i)] == 1) axes.push_back(i);
      CHECK_CLOSE(kernels::mul_sum_to(gy, b, t), naive_sum(p, axes), rtol, 0);
      CHECK(kernels::mul_sum_to(gy, b, t).shape() == t);
      CHECK_CLOSE(kernels::mul_sum_to(gy, bias, t), naive_sum(pb, axes), rtol, 0);
    }
  }
  CHECK_THROWS_AS(kernels::sum_to(Tensor::zeros({2, 3}), {4}), Error);
  CHECK_THROWS_AS(kernels::sum_to(Tensor::zeros({3}), {2, 3}), Error);
}

TEST_CASE("kernels/max: values and first index match naive loops") {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator g(11);
    Tensor x = randn({30, 100, 101}, 0, 1, dt, g);
    std::vector<double> v = x.to_vector();
    for (int64_t axis : {0, 1, 2}) {
      CAPTURE(axis);
      const int64_t A = axis == 0 ? 1 : (axis == 1 ? 30 : 3000), K = x.shape()[static_cast<size_t>(axis)];
      const int64_t B = x.numel() / (A * K);
      std::vector<double> ev(static_cast<size_t>(A * B)), ei(static_cast<size_t>(A * B));
      for (int64_t a = 0; a < A; ++a)
        for (int64_t b = 0; b < B; ++b) {
          double best = -INFINITY;
          int64_t bi = 0;
          for (int64_t k = 0; k < K; ++k)
            if (v[static_cast<size_t>((a * K + k) * B + b)] > best) {
              best = v[static_cast<size_t>((a * K + k) * B + b)];
              bi = k;
            }
          ev[static_cast<size_t>(a * B + b)] = best;
          ei[static_cast<size_t>(a * B + b)] = static_cast<double>(bi);
        }
      kernels::MaxResult r = kernels::max(x, axis);
      CHECK_CLOSE(r.values, ev, 0, 0);
      CHECK_CLOSE(r.indices, ei, 0, 0);
    }
  }
  // Ties go to the first position (and so does the gradient); NaN propagates.
  Tensor t = Tensor::from_vector({1, 3, 3, 2, 5, 5}, {2, 3}, DType::f64).set_requires_grad();
  Tensor m = max(t, 1);
  CHECK_CLOSE(m, (std::vector<double>{3, 5}), 0, 0);
  backward(sum(m));
  CHECK_CLOSE(t.grad(), (std::vector<double>{0, 1, 0, 0, 1, 0}), 0, 0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor n = Tensor::from_vector({1, nan, 2, 4, 0, nan}, {2, 3}, DType::f64);
  kernels::MaxResult r = kernels::max(n, 1);
  CHECK(std::isnan(r.values.to_vector()[0]));
  CHECK(std::isnan(r.values.to_vector()[1]));
  CHECK(r.indices.to_vector() == std::vector<double>{1, 2});
}

TEST_CASE("ops/reduce: errors name the op and the shape") {
  Tensor x = Tensor::zeros({2, 3, 4});
  std::string m = error_of([&] { sum(x, {3}); });
  CHECK(m.find("sum") != std::string::npos);
  CHECK(m.find("(2, 3, 4)") != std::string::npos);
  CHECK_THROWS_AS(sum(x, {-4}), Error);
  CHECK_THROWS_AS(mean(x, {1, -2}), Error);  // repeated axis
  m = error_of([&] { max(x, 5); });
  CHECK(m.find("max") != std::string::npos);
  CHECK(m.find("(2, 3, 4)") != std::string::npos);
  CHECK_THROWS_AS(max(Tensor::zeros({2, 0}), 1), Error);
  CHECK_THROWS_AS(sum(Tensor::zeros({2}, DType::i32)), Error);
}
