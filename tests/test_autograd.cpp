// The engine: recording, accumulation, shape checks, freeing, no-grad, detach, deep chains and
// gradcheck itself. Uses small ops defined here with record() so it depends on nothing else.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "core/random.h"
#include "testing.h"

using namespace seqlab;

namespace {
// y = s * x;  dx = s * dy
Tensor scale(const Tensor& x, double s) {
  Tensor y = x.clone();
  double* p = y.data<double>();
  for (int64_t i = 0; i < y.numel(); ++i) p[i] *= s;
  return record("test_scale", y, {x}, [s](const Tensor& dy) {
    Tensor dx = dy.clone();
    double* q = dx.data<double>();
    for (int64_t i = 0; i < dx.numel(); ++i) q[i] *= s;
    return grads{dx};
  });
}
// y = a * b (same shape);  da = dy * b, db = dy * a
Tensor times(const Tensor& a, const Tensor& b) {
  Tensor y = a.clone();
  for (int64_t i = 0; i < y.numel(); ++i) y.data<double>()[i] *= b.data<double>()[i];
  return record("test_times", y, {a, b}, [a = a.detach(), b = b.detach()](const Tensor& dy) {
    Tensor da = dy.clone(), db = dy.clone();
    for (int64_t i = 0; i < dy.numel(); ++i) {
      da.data<double>()[i] *= b.data<double>()[i];
      db.data<double>()[i] *= a.data<double>()[i];
    }
    return grads{da, db};
  });
}
// sum of all elements -> shape {};  dx = dy broadcast
Tensor total(const Tensor& x) {
  double s = 0;
  for (double v : x.to_vector()) s += v;
  Shape shape = x.shape();
  return record("test_total", Tensor::scalar(s, DType::f64), {x}, [shape](const Tensor& dy) {
    return grads{Tensor::full(shape, dy.item(), DType::f64)};
  });
}
// (y0, y1) = (x, 2x): a two-output op;  dx = dy0 + 2 dy1
std::vector<Tensor> split2(const Tensor& x) {
  return record_multi("test_split2", {x.clone(), scale(x.detach(), 2.0)}, {x}, [](const std::vector<Tensor>& dys) {
    Tensor dx = dys[0].clone();
    for (int64_t i = 0; i < dx.numel(); ++i) dx.data<double>()[i] += 2 * dys[1].data<double>()[i];
    return grads{dx};
  });
}
}  // namespace

TEST_CASE("autograd: gradients accumulate over shared inputs") {
  Tensor x = Tensor::from_vector({1, 2, 3}, {3}, DType::f64).set_requires_grad();
  Tensor y = total(times(x, x));  // sum x^2 -> 2x
  backward(y);
  CHECK(x.grad().to_vector() == std::vector<double>{2, 4, 6});
  Tensor y2 = total(scale(x, 3.0));  // accumulates +3
  backward(y2);
  CHECK(x.grad().to_vector() == std::vector<double>{5, 7, 9});
  x.zero_grad();
  CHECK(!x.grad().defined());
}

TEST_CASE("autograd: leaf gradient never aliases another gradient") {
  Tensor a = Tensor::from_vector({1, 2}, {2}, DType::f64).set_requires_grad();
  Tensor b = Tensor::from_vector({3, 4}, {2}, DType::f64).set_requires_grad();
  // an op whose backward returns the same tensor for both inputs
  Tensor y = record("test_add_alias", a.clone(), {a, b}, [](const Tensor& dy) { return grads{dy, dy}; });
  backward(total(y));
  CHECK(!a.grad().shares_storage(b.grad()));
}

TEST_CASE("autograd: multi-output op, unused outputs get zeros") {
  Tensor x = Tensor::from_vector({1, -1}, {2}, DType::f64).set_requires_grad();
  auto ys = split2(x);
  backward(total(ys[1]));
  CHECK(x.grad().to_vector() == std::vector<double>{2, 2});
  x.zero_grad();
  auto zs = split2(x);
  backward(total(times(zs[0], zs[1])));  // sum 2x^2 -> 4x
  CHECK(x.grad().to_vector() == std::vector<double>{4, -4});
}

TEST_CASE("autograd: a wrong gradient shape names the op and both shapes") {
  Tensor x = Tensor::zeros({2, 3}, DType::f64).set_requires_grad();
  Tensor y = record("bad_op", x.clone(), {x}, [](const Tensor&) { return grads{Tensor::zeros({3, 2}, DType::f64)}; });
  CHECK_THROWS_WITH_AS(backward(total(y)), doctest::Contains("bad_op"), Error);
  Tensor y2 = record("bad_op", x.clone(), {x}, [](const Tensor&) { return grads{Tensor::zeros({3, 2}, DType::f64)}; });
  try {
    backward(total(y2));
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("(3, 2)") != std::string::npos);
    CHECK(m.find("(2, 3)") != std::string::npos);
  }
  Tensor y3 = record("short_op", x.clone(), {x}, [](const Tensor&) { return grads{}; });
  CHECK_THROWS_WITH_AS(backward(total(y3)), doctest::Contains("short_op"), Error);
}

TEST_CASE("autograd: graph is freed after backward unless retained") {
  Tensor x = Tensor::from_vector({1, 2}, {2}, DType::f64).set_requires_grad();
  Tensor y = total(times(x, x));
  backward(y, Tensor(), /*retain_graph=*/true);
  backward(y);
  CHECK(x.grad().to_vector() == std::vector<double>{4, 8});
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("second time"), Error);
}

TEST_CASE("autograd: no-grad guard and detach record nothing") {
  Tensor x = Tensor::from_vector({1, 2}, {2}, DType::f64).set_requires_grad();
  {
    NoGradGuard ng;
    CHECK(!grad_enabled());
    Tensor y = scale(x, 2);
    CHECK(!y.requires_grad());
    CHECK(!y.grad_fn());
  }
  CHECK(grad_enabled());
  Tensor d = scale(x, 2).detach();
  CHECK(!d.requires_grad());
  CHECK(!d.grad_fn());
  Tensor c = Tensor::ones({2}, DType::f64);  // no input requires grad: no node
  CHECK(!scale(c, 2).grad_fn());
  CHECK_THROWS_AS(backward(scale(c, 2)), Error);
}

TEST_CASE("autograd: a 100,000-node chain runs backward and is destroyed without recursion") {
  Tensor x = Tensor::from_vector({1.0}, {1}, DType::f64).set_requires_grad();
  Tensor y = x;
  const int n = 100000;
  for (int i = 0; i < n; ++i) y = scale(y, i % 2 ? 1.0 / 1.0001 : 1.0001);
  backward(total(y));
  CHECK(x.grad().item() == doctest::Approx(1.0).epsilon(1e-9));
  // A second chain that is dropped without backward must also tear down iteratively.
  Tensor z = x;
  for (int i = 0; i < n; ++i) z = scale(z, 1.0);
  z = Tensor();
  CHECK(true);
}

TEST_CASE("autograd: implicit gradient needs a one-element root") {
  Tensor x = Tensor::from_vector({1, 2}, {2}, DType::f64).set_requires_grad();
  Tensor y = scale(x, 2);
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("one-element"), Error);
  backward(y, Tensor::from_vector({1, 1}, {2}, DType::f64));
  CHECK(x.grad().to_vector() == std::vector<double>{2, 2});
}

TEST_CASE("gradcheck: passes a correct op and catches a wrong backward") {
  Tensor a = randn({3}, 0, 1, DType::f64).set_requires_grad();
  Tensor b = randn({3}, 0, 1, DType::f64).set_requires_grad();
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return times(in[0], in[1]); }, (std::vector<Tensor>{a, b}));
  auto wrong = [](const std::vector<Tensor>& in) {
    const Tensor& x = in[0];
    return record("wrong", x.clone(), {x}, [](const Tensor& dy) { return grads{dy.clone()}; }) ;
  };
  auto sq = [&](const std::vector<Tensor>& in) { return wrong({times(in[0], in[0])}); };
  auto r = gradcheck(sq, {a});
  CHECK(r.ok);  // wrong() is the identity with a correct backward: passes
  auto bad = [](const std::vector<Tensor>& in) {
    const Tensor& x = in[0];
    return record("bad", scale(x.detach(), 3.0), {x}, [](const Tensor& dy) { return grads{dy.clone()}; });
  };
  auto rb = gradcheck(bad, {a});
  CHECK(!rb.ok);
  CHECK(rb.max_rel_error > 0.5);
}

TEST_CASE("gradcheck: a wrong small gradient entry next to large ones fails (per-element check)") {
  // y_i = s_i * x_i with s = (10, 10, 1e-6): the backward doubles the third, small, entry. Against the
  // largest gradient (the old per-tensor norm) its error is ~1e-7 and passed at 1e-6; against its own
  // size, floored at kGradcheckFloor, it is ~1e-4.
  Tensor s = Tensor::from_vector({10, 10, 1e-6}, {3}, DType::f64);
  Tensor s_wrong = Tensor::from_vector({10, 10, 2e-6}, {3}, DType::f64);
  Tensor a = Tensor::from_vector({0.5, -1.0, 0.25}, {3}, DType::f64).set_requires_grad();
  auto op = [&](const Tensor& factor) {
    return [&s, factor](const std::vector<Tensor>& in) {
      const Tensor& x = in[0];
      return record("scaled", times(x.detach(), s), {x}, [factor](const Tensor& dy) { return grads{times(dy, factor)}; });
    };
  };
  CHECK_GRADCHECK(op(s), (std::vector<Tensor>{a}));
  auto r = gradcheck(op(s_wrong), {a});
  CHECK(!r.ok);
  CHECK(r.max_rel_error > 1e-5);
}

TEST_CASE("testing: CHECK_CLOSE fails NaN against NaN and infinities of different sign") {
  const double nan = std::nan(""), inf = INFINITY;
  CHECK(testing::close({1.0, 2.0}, {1.0, 2.0 + 1e-9}, 1e-6, 0).ok);
  CHECK(!testing::close({nan}, {nan}, 1e-3, 1e-3).ok);
  CHECK(!testing::close({nan}, {1.0}, 1e-3, 1e-3).ok);
  CHECK(!testing::close({1.0}, {nan}, 1e-3, 1e-3).ok);
  CHECK(!testing::close({inf}, {-inf}, 1e-3, 1e-3).ok);
  CHECK(!testing::close({inf}, {1e300}, 1e-3, 1e-3).ok);
  CHECK(testing::close({inf, -inf}, {inf, -inf}, 1e-3, 1e-3).ok);
  CHECK(!testing::close({1.0, 2.0}, {1.0, 2.1}, 1e-3, 1e-3).ok);
}
