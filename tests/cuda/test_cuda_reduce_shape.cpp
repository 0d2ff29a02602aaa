// The device reductions (sum, mean, sum_to, mul_sum_to, max), shape copies (permute, transpose, flip,
// slice, concat, split) and softmax against the CPU kernels on the same inputs; float64 comparisons of the
// backward kernels are the device gradient checks. Shapes cover several blocks, sizes that are not
// multiples of 32, multi-pass sums and empty tensors.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/kernels/reduce.h"
#include "core/kernels/shape.h"
#include "core/kernels/softmax.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

namespace {

Tensor gpu(const Tensor& t) { return t.to(Device::cuda); }

std::string dname(DType d) { return dtype_name(d); }

// Exact equality of two tensors' values (NaN equal to NaN), shapes and dtypes.
void check_same(const Tensor& a, const Tensor& b, const std::string& what) {
  REQUIRE_MESSAGE(a.shape() == b.shape(), what << ": shape " << to_string(a.shape()) << " vs " << to_string(b.shape()));
  CHECK_MESSAGE(a.dtype() == b.dtype(), what << ": dtype");
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  size_t bad = x.size();
  for (size_t i = 0; i < x.size() && bad == x.size(); ++i)
    if (!(x[i] == y[i] || (std::isnan(x[i]) && std::isnan(y[i])))) bad = i;
  CHECK_MESSAGE(bad == x.size(), what << ": entry " << bad << " differs: " << (bad < x.size() ? x[bad] : 0) << " vs "
                                      << (bad < y.size() ? y[bad] : 0));
}

// Random values of int32 tensors spread over a range (rand_cpu's [-1, 1) would round to 0).
Tensor rand_any(const Shape& s, uint64_t seed, DType d) {
  return d == DType::i32 ? rand_cpu(s, seed, d, -1000, 1000) : rand_cpu(s, seed, d);
}

// Values with many ties: integers in [-3, 2].
Tensor rand_ties(const Shape& s, uint64_t seed, DType d) {
  std::vector<double> v = rand_cpu(s, seed, DType::f64, -3, 3).to_vector();
  for (double& x : v) x = std::floor(x);
  return Tensor::from_vector(v, s, d);
}

// Sum tolerances: float32 rtol 1e-5, atol 1e-5 * sqrt(terms); float64 rtol 1e-12, atol 1e-13 * sqrt(terms).
void check_sum(const Tensor& g, const Tensor& c, int64_t terms, const std::string& what) {
  const double root = std::sqrt(static_cast<double>(std::max<int64_t>(terms, 1)));
  if (c.dtype() == DType::f64) check_close(g, c, 1e-12, 1e-13 * root, what);
  else check_close(g, c, 1e-5, 1e-5 * root, what);
}

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda reduce: sum and mean over axes with keepdim - float32 and float64") {
  SEQLAB_REQUIRE_GPU();
  struct Case {
    Shape shape;
    std::vector<int64_t> axes;
  };
  const std::vector<Case> cases = {
      {{3, 1000, 37}, {}},        {{3, 1000, 37}, {0}},       {{3, 1000, 37}, {1}},    {{3, 1000, 37}, {2}},
      {{3, 1000, 37}, {0, 2}},    {{3, 1000, 37}, {-1}},      {{3, 1000, 37}, {0, 1, 2}}, {{3, 1000, 37}, {1, 2}},
      {{2, 70000}, {1}},          {{2, 70000}, {0}},          {{1300, 5}, {0}},        {{70001}, {0}},
      {{4, 1, 33, 1, 5}, {1, 2}}, {{4, 1, 33, 1, 5}, {0, 2, 4}}, {{4, 1, 33, 1, 5}, {3}}, {{5, 3, 7, 2}, {0, 2}},
      {{0, 5}, {0}},              {{5, 0}, {1}},              {{5, 0}, {0}},           {{}, {}},
  };
  uint64_t seed = 10;
  for (DType d : {DType::f32, DType::f64}) {
    for (const Case& c : cases) {
      Tensor x = rand_cpu(c.shape, ++seed, d);
      Tensor xg = gpu(x);
      int64_t terms = 1;
      for (int64_t a : c.axes) terms *= c.shape[static_cast<size_t>(a < 0 ? a + static_cast<int64_t>(c.shape.size()) : a)];
      for (bool keep : {false, true}) {
        const std::string what = str(dname(d), " ", to_string(c.shape), " axes ", c.axes.size(), " keepdim ", keep);
        Tensor gs = kernels::sum(xg, c.axes, keep);
        CHECK(gs.device() == Device::cuda);
        check_sum(gs, kernels::sum(x, c.axes, keep), terms, "sum " + what);
        if (x.numel() == 0)  // 0 / 0: NaN on both sides
          check_same(kernels::mean(xg, c.axes, keep), kernels::mean(x, c.axes, keep), "mean " + what);
        else
          check_sum(kernels::mean(xg, c.axes, keep), kernels::mean(x, c.axes, keep), terms, "mean " + what);
      }
    }
  }
}

TEST_CASE("cuda reduce: sum_all - mean_all and sum_squares") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType d : {DType::f32, DType::f64}) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{31}, int64_t{1000}, int64_t{16385}, int64_t{100003}}) {
      Tensor x = rand_cpu({n}, ++seed, d);
      Tensor xg = gpu(x);
      const std::string what = str(dname(d), " n ", n);
      Tensor s = kernels::sum_all(xg);
      CHECK(s.shape() == Shape{});
      check_sum(s, kernels::sum_all(x), n, "sum_all " + what);
      if (n == 0) check_same(kernels::mean_all(xg), kernels::mean_all(x), "mean_all " + what);  // NaN both
      else check_sum(kernels::mean_all(xg), kernels::mean_all(x), n, "mean_all " + what);
      const double gq = kernels::sum_squares(xg), cq = kernels::sum_squares(x);
      CHECK_MESSAGE(std::abs(gq - cq) <= 1e-12 * std::abs(cq) + 1e-300, "sum_squares " << what << ": " << gq << " vs "
                                                                                     << cq);
    }
  }
  Tensor x = rand_cpu({7, 300, 11}, 5);
  CHECK(std::abs(kernels::sum_squares(gpu(x)) - kernels::sum_squares(x)) <= 1e-12 * kernels::sum_squares(x));
}

TEST_CASE("cuda reduce: sum_to and mul_sum_to - fast path and broadcasting") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64}) {
    Tensor g = rand_cpu({5, 300, 7}, 200, d);
    Tensor gg = gpu(g);
    for (const Shape& t : {Shape{300, 1}, Shape{7}, Shape{1, 1, 7}, Shape{5, 1, 1}, Shape{}, Shape{1}, Shape{300, 7}}) {
      Tensor r = kernels::sum_to(gg, t);
      CHECK(r.device() == Device::cuda);
      check_sum(r, kernels::sum_to(g, t), g.numel() / numel(t), str("sum_to ", dname(d), " ", to_string(t)));
    }
    CHECK(kernels::sum_to(gg, g.shape()).shares_storage(gg));

    struct Case {
      Shape a, b, target;
    };
    const std::vector<Case> cases = {
        {{4000, 33}, {4000, 33}, {33}},          {{4000, 33}, {4000, 33}, {1, 33}},
        {{4000, 33}, {4000, 33}, {}},            {{2000, 3, 33}, {2000, 3, 33}, {3, 33}},
        {{40, 33}, {40, 33}, {40, 1}},           {{40, 33}, {40, 33}, {40, 33}},
        {{6, 1, 9}, {5, 9}, {5, 1}},             {{6, 1, 9}, {5, 9}, {6, 5, 9}},
        {{300, 1}, {1, 70}, {70}},               {{0, 33}, {0, 33}, {33}},
    };
    uint64_t seed = 300;
    for (const Case& c : cases) {
      Tensor a = rand_cpu(c.a, ++seed, d), b = rand_cpu(c.b, ++seed, d);
      Tensor cpu = kernels::mul_sum_to(a, b, c.target);
      Tensor dev = kernels::mul_sum_to(gpu(a), gpu(b), c.target);
      CHECK(dev.device() == Device::cuda);
      const int64_t terms = cpu.numel() ? numel(broadcast_shapes(c.a, c.b, "t")) / cpu.numel() : 1;
      check_sum(dev, cpu, terms, str("mul_sum_to ", dname(d), " ", to_string(c.a), " ", to_string(c.b), " -> ",
                                     to_string(c.target)));
    }
  }
  CHECK_THROWS_WITH_AS(kernels::mul_sum_to(gpu(rand_cpu({3, 4}, 1)), gpu(rand_cpu({3, 4}, 2, DType::f64)), {4}),
                       doctest::Contains("mul: dtypes differ"), Error);
}

TEST_CASE("cuda reduce: max and max_backward - ties to the first position - NaN wins") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 400;
  for (DType d : {DType::f32, DType::f64}) {
    struct Case {
      Shape shape;
      int64_t axis;
    };
    const std::vector<Case> cases = {{{7, 300, 9}, 0}, {{7, 300, 9}, 1}, {{7, 300, 9}, 2}, {{7, 300, 9}, -1},
                                     {{3, 5000}, 1},   {{3, 5000}, 0},   {{1}, 0},         {{33, 1, 2}, 1}};
    for (const Case& c : cases) {
      for (bool nan : {false, true}) {
        Tensor x = rand_ties(c.shape, ++seed, d);
        if (nan && x.numel() > 10) {
          std::vector<double> v = x.to_vector();
          for (size_t i = 3; i < v.size(); i += 97) v[i] = NAN;
          for (size_t i = 5; i < v.size(); i += 89) v[i] = NAN;
          x = Tensor::from_vector(v, c.shape, d);
        }
        for (bool keep : {false, true}) {
          const std::string what = str(dname(d), " ", to_string(c.shape), " axis ", c.axis, " keepdim ", keep, " nan ", nan);
          kernels::MaxResult cr = kernels::max(x, c.axis, keep);
          kernels::MaxResult gr = kernels::max(gpu(x), c.axis, keep);
          CHECK(gr.values.device() == Device::cuda);
          check_same(gr.values, cr.values, "max values " + what);
          check_same(gr.indices, cr.indices, "max indices " + what);
          Tensor dy = rand_cpu(cr.values.shape(), ++seed, d);
          check_same(kernels::max_backward(gpu(dy), gpu(cr.indices), c.shape, c.axis),
                     kernels::max_backward(dy, cr.indices, c.shape, c.axis), "max_backward " + what);
        }
      }
    }
  }
}

TEST_CASE("cuda shape: permute and transpose in every dtype") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 500;
  for (DType d : {DType::f32, DType::f64, DType::i32}) {
    Tensor x = rand_any({2, 3, 4, 5}, ++seed, d);
    Tensor xg = gpu(x);
    std::vector<int64_t> p = {0, 1, 2, 3};
    do {
      check_same(kernels::permute(xg, p), kernels::permute(x, p), str("permute ", dname(d), " ", p[0], p[1], p[2], p[3]));
    } while (std::next_permutation(p.begin(), p.end()));
    struct Case {
      Shape shape;
      std::vector<int64_t> dims;
    };
    const std::vector<Case> cases = {{{3, 45, 70}, {0, 2, 1}},   {{45, 70}, {1, 0}},         {{64, 64}, {1, 0}},
                                     {{5, 33, 2, 40}, {0, 3, 2, 1}}, {{2, 300, 257}, {2, 1, 0}}, {{2, 300, 257}, {1, 0, 2}},
                                     {{7, 1, 9}, {1, 0, 2}},     {{7, 1, 9}, {-1, 0, 1}},    {{0, 4}, {1, 0}},
                                     {{6, 2, 3, 4, 5}, {4, 3, 2, 1, 0}}};
    for (const Case& c : cases) {
      Tensor y = rand_any(c.shape, ++seed, d);
      check_same(kernels::permute(gpu(y), c.dims), kernels::permute(y, c.dims),
                 str("permute ", dname(d), " ", to_string(c.shape)));
    }
    Tensor y = rand_any({3, 45, 70}, ++seed, d);
    for (auto [a0, a1] : {std::pair<int64_t, int64_t>{0, 2}, {1, 2}, {-1, -2}, {0, 1}, {1, 1}})
      check_same(kernels::transpose(gpu(y), a0, a1), kernels::transpose(y, a0, a1),
                 str("transpose ", dname(d), " ", a0, " ", a1));
  }
}

TEST_CASE("cuda shape: flip - slice and slice_backward in every dtype") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 600;
  for (DType d : {DType::f32, DType::f64, DType::i32}) {
    Tensor x = rand_any({4, 37, 9}, ++seed, d);
    Tensor xg = gpu(x);
    for (int64_t ax : {0, 1, 2, -1}) check_same(kernels::flip(xg, ax), kernels::flip(x, ax), str("flip ", dname(d), " ", ax));
    struct Range {
      int64_t axis, start, end;
    };
    for (Range r : {Range{0, 1, 3}, Range{1, 0, 37}, Range{1, 5, 36}, Range{1, -10, -1}, Range{2, 2, 9}, Range{-1, 0, 1},
                    Range{1, 3, 3}}) {
      const std::string what = str(dname(d), " axis ", r.axis, " [", r.start, ", ", r.end, ")");
      Tensor cs = kernels::slice(x, r.axis, r.start, r.end);
      check_same(kernels::slice(xg, r.axis, r.start, r.end), cs, "slice " + what);
      Tensor dy = rand_any(cs.shape(), ++seed, d);
      check_same(kernels::slice_backward(gpu(dy), x.shape(), r.axis, r.start),
                 kernels::slice_backward(dy, x.shape(), r.axis, r.start), "slice_backward " + what);
    }
  }
  CHECK_THROWS_WITH_AS(kernels::slice(gpu(rand_cpu({4, 5}, 1)), 1, 2, 7), doctest::Contains("slice: range [2, 7)"), Error);
}

TEST_CASE("cuda shape: concat of many tensors along every axis") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 700;
  for (DType d : {DType::f32, DType::f64, DType::i32}) {
    for (int64_t ax : {0, 1, 2, -1}) {
      std::vector<Tensor> cpu, dev;
      for (int i = 0; i < 37; ++i) {
        Shape s = {3, 4, 5};
        s[static_cast<size_t>(ax < 0 ? ax + 3 : ax)] = (i % 7 == 3) ? 0 : 1 + (i * 5) % 4;
        cpu.push_back(rand_any(s, ++seed, d));
        dev.push_back(gpu(cpu.back()));
      }
      check_same(kernels::concat(dev, ax), kernels::concat(cpu, ax), str("concat 37 ", dname(d), " axis ", ax));
      std::vector<Tensor> two_c = {cpu[0], cpu[1]}, two_g = {dev[0], dev[1]};
      check_same(kernels::concat(two_g, ax), kernels::concat(two_c, ax), str("concat 2 ", dname(d), " axis ", ax));
    }
  }
  std::vector<Tensor> bad = {gpu(rand_cpu({2, 3}, 1)), gpu(rand_cpu({3, 3}, 2))};
  CHECK_THROWS_WITH_AS(kernels::concat(bad, 1), doctest::Contains("differ outside axis"), Error);
}

TEST_CASE("cuda shape: split into many parts along every axis (one launch per 16 parts)") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 800;
  for (DType d : {DType::f32, DType::f64, DType::i32}) {
    for (int64_t ax : {0, 1, 2}) {
      std::vector<int64_t> sizes;  // 37 parts, some empty: three launches
      int64_t total = 0;
      for (int i = 0; i < 37; ++i) {
        sizes.push_back((i % 7 == 3) ? 0 : 1 + (i * 5) % 4);
        total += sizes.back();
      }
      Shape s = {3, 4, 5};
      s[static_cast<size_t>(ax)] = total;
      const Tensor x = rand_any(s, ++seed, d);
      const std::vector<Tensor> cpu = kernels::split(x, ax, sizes), dev = kernels::split(gpu(x), ax, sizes);
      REQUIRE(dev.size() == sizes.size());
      for (size_t i = 0; i < sizes.size(); ++i)
        check_same(dev[i], cpu[i], str("split part ", i, " ", dname(d), " axis ", ax));
      check_same(kernels::concat(dev, ax), x, str("concat of split ", dname(d), " axis ", ax));
      const std::vector<int64_t> two = {1, total - 1};
      const std::vector<Tensor> c2 = kernels::split(x, ax, two), g2 = kernels::split(gpu(x), ax, two);
      check_same(g2[0], c2[0], str("split 2 first ", dname(d), " axis ", ax));
      check_same(g2[1], c2[1], str("split 2 second ", dname(d), " axis ", ax));
    }
  }
}

TEST_CASE("cuda softmax: softmax and log_softmax forward and backward over every axis") {
  SEQLAB_REQUIRE_GPU();
  struct Case {
    Shape shape;
    int64_t axis;
  };
  const std::vector<Case> cases = {{{6, 10}, -1},    {{3, 1000}, 1},     {{2, 5000}, -1},    {{4, 37, 50}, 0},
                                   {{4, 37, 50}, 1}, {{4, 37, 50}, 2},   {{2, 3, 70, 5}, 2}, {{300, 1}, 1},
                                   {{1, 33}, 0},     {{0, 7}, 1},        {{9}, 0}};
  uint64_t seed = 800;
  for (DType d : {DType::f32, DType::f64}) {
    const bool f64 = d == DType::f64;
    for (const Case& c : cases) {
      Tensor x = rand_cpu(c.shape, ++seed, d, -4, 4);
      Tensor dy = rand_cpu(c.shape, ++seed, d);
      const std::string what = str(dname(d), " ", to_string(c.shape), " axis ", c.axis);
      // softmax, with a few -inf entries
      {
        std::vector<double> v = x.to_vector();
        const int64_t ax = c.shape.empty() ? 0 : (c.axis < 0 ? c.axis + static_cast<int64_t>(c.shape.size()) : c.axis);
        if (c.shape[static_cast<size_t>(ax)] > 1)  // no line of -inf only (its softmax is NaN on both sides)
          for (size_t i = 2; i < v.size(); i += 13) v[i] = -INFINITY;
        Tensor xi = Tensor::from_vector(v, c.shape, d);
        Tensor y = kernels::softmax_forward(xi, c.axis);
        check_close(kernels::softmax_forward(gpu(xi), c.axis), y, f64 ? 1e-12 : 1e-5, f64 ? 1e-14 : 1e-6,
                    "softmax forward " + what);
        check_close(kernels::softmax_backward(gpu(dy), gpu(y), c.axis), kernels::softmax_backward(dy, y, c.axis),
                    f64 ? 1e-12 : 1e-5, f64 ? 1e-13 : 1e-6, "softmax backward " + what);
      }
      {
        Tensor y = kernels::log_softmax_forward(x, c.axis);
        check_close(kernels::log_softmax_forward(gpu(x), c.axis), y, f64 ? 1e-12 : 1e-5, f64 ? 1e-13 : 1e-5,
                    "log_softmax forward " + what);
        check_close(kernels::log_softmax_backward(gpu(dy), gpu(y), c.axis),
                    kernels::log_softmax_backward(dy, y, c.axis), f64 ? 1e-12 : 1e-5, f64 ? 1e-12 : 1e-5,
                    "log_softmax backward " + what);
      }
    }
  }
}

TEST_CASE("cuda reduce_shape: the same device computation twice is bit-identical") {
  SEQLAB_REQUIRE_GPU();
  Tensor a = gpu(rand_cpu({1300, 70}, 900));
  Tensor b = gpu(rand_cpu({100003}, 901));
  Tensor c = gpu(rand_cpu({4, 37, 50}, 902, DType::f32, -4, 4));
  Tensor e = gpu(rand_cpu({2, 70000}, 903));
  auto run = [&] {
    std::vector<std::vector<double>> r;
    r.push_back(kernels::sum(a, {0}).to_vector());
    r.push_back(kernels::mean(a, {1}, true).to_vector());
    r.push_back(kernels::sum(e, {1}).to_vector());
    r.push_back(kernels::sum_all(b).to_vector());
    r.push_back({kernels::sum_squares(b)});
    r.push_back(kernels::mul_sum_to(a, a, {70}).to_vector());
    r.push_back(kernels::softmax_forward(c, 1).to_vector());
    r.push_back(kernels::log_softmax_forward(c, -1).to_vector());
    r.push_back(kernels::softmax_backward(c, c, 0).to_vector());
    r.push_back(kernels::max(a, 1).values.to_vector());
    return r;
  };
  const auto first = run();
  const auto second = run();
  REQUIRE(first.size() == second.size());
  for (size_t i = 0; i < first.size(); ++i) CHECK_MESSAGE(first[i] == second[i], "result " << i << " differs");
}

TEST_CASE("cuda reduce: errors name the op as on the CPU") {
  SEQLAB_REQUIRE_GPU();
  Tensor x = gpu(rand_cpu({3, 4}, 1));
  CHECK_THROWS_WITH_AS(kernels::sum(x, {2}), doctest::Contains("sum: axis 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(kernels::mean(x, {0, -2}), doctest::Contains("mean: an axis is repeated"), Error);
  CHECK_THROWS_WITH_AS(kernels::max(gpu(rand_cpu({3, 0}, 1)), 1), doctest::Contains("max: axis 1 has size 0"), Error);
  CHECK_THROWS_WITH_AS(kernels::sum_to(x, {5}), doctest::Contains("sum_to: cannot reduce"), Error);
  CHECK_THROWS_WITH_AS(kernels::sum(gpu(rand_any({3}, 1, DType::i32)), {0}), doctest::Contains("sum: expected a float32"),
                       Error);
  CHECK_THROWS_WITH_AS(kernels::softmax_backward(x, gpu(rand_cpu({4, 3}, 2)), 1),
                       doctest::Contains("softmax backward: gradient of shape"), Error);
  CHECK_THROWS_WITH_AS(kernels::permute(x, {0, 0}), doctest::Contains("permute: axis 0 repeated"), Error);
}

}  // TEST_SUITE
