// Broadcasting binary ops, scalar ops and the in-place kernels: gradchecks in float64, kernels
// against naive loops in float32/float64 (sizes that take the parallel path), and error messages.
#include <cmath>

#include "autograd/ops.h"
#include "core/kernels/elementwise.h"
#include "core/parallel.h"
#include "ops_testing.h"

using namespace seqlab;
using namespace seqlab::testing;

namespace {

using BinaryOp = Tensor (*)(const Tensor&, const Tensor&);

// The shape pairs every binary op is checked on: equal, trailing bias, middle broadcast, column
// against row, scalar either side, and both sides broadcast.
const std::vector<std::pair<Shape, Shape>> kPairs = {
    {{2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {4}}, {{2, 3, 4}, {2, 1, 4}}, {{3, 1}, {4}},
    {{2, 3}, {}},           {{}, {2, 3}},     {{4}, {2, 3, 4}},       {{2, 1, 4}, {1, 3, 1}},
    {{1}, {3}},             {{2, 3, 1}, {3, 1}}};

void gradcheck_binary(const char* name, BinaryOp op, bool positive_b) {
  uint64_t seed = 1;
  for (const auto& [sa, sb] : kPairs) {
    CAPTURE(to_string(sa));
    CAPTURE(to_string(sb));
    Tensor a = gc_input(sa, seed++);
    Tensor b = positive_b ? gc_input(sb, seed++, 0.5, 2.0) : gc_input(sb, seed++);
    auto f = [op](const std::vector<Tensor>& in) { return op(in[0], in[1]); };
    CHECK_OP_GRADCHECK(name, f, (std::vector<Tensor>{a, b}));
    // Only one side requiring grad: the other gets no gradient at all.
    Tensor c = b.detach();
    CHECK_OP_GRADCHECK(name, f, (std::vector<Tensor>{a, c}));
    backward(sum(op(a, c)));
    CHECK(a.grad().defined());
    CHECK_FALSE(c.grad().defined());
    a.zero_grad();
    Tensor d = a.detach();
    CHECK_OP_GRADCHECK(name, f, (std::vector<Tensor>{d, b}));
  }
}

}  // namespace

TEST_CASE("ops/add: gradcheck") { gradcheck_binary("add", &seqlab::add, false); }
TEST_CASE("ops/sub: gradcheck") { gradcheck_binary("sub", &seqlab::sub, false); }
TEST_CASE("ops/mul: gradcheck") { gradcheck_binary("mul", &seqlab::mul, false); }
TEST_CASE("ops/div: gradcheck") { gradcheck_binary("div", &seqlab::div, true); }

TEST_CASE("ops/binary: the same tensor on both sides") {
  Tensor x = gc_input({3, 2}, 7);
  auto f = [](const std::vector<Tensor>& in) { return mul(in[0], in[0]) + in[0] / add_scalar(mul(in[0], in[0]), 1.0); };
  CHECK_OP_GRADCHECK("mul", f, std::vector<Tensor>{x});
}

TEST_CASE("ops/neg: gradcheck") {
  CHECK_OP_GRADCHECK("neg", [](const std::vector<Tensor>& in) { return neg(in[0]); },
                     std::vector<Tensor>{gc_input({2, 3}, 11)});
}

TEST_CASE("ops/add_scalar: gradcheck") {
  CHECK_OP_GRADCHECK("add_scalar", [](const std::vector<Tensor>& in) { return add_scalar(in[0], 2.5); },
                     std::vector<Tensor>{gc_input({2, 3}, 12)});
}

TEST_CASE("ops/mul_scalar: gradcheck") {
  CHECK_OP_GRADCHECK("mul_scalar", [](const std::vector<Tensor>& in) { return mul_scalar(in[0], -1.5); },
                     std::vector<Tensor>{gc_input({2, 3}, 13)});
  CHECK_OP_GRADCHECK("mul_scalar", [](const std::vector<Tensor>& in) { return 3.0 * in[0]; },
                     std::vector<Tensor>{gc_input({}, 14)});
}

TEST_CASE("ops/pow_scalar: gradcheck") {
  for (double p : {2.0, 3.0, 1.0, 0.0, 0.5, -1.0, 1.7, -2.5}) {
    CAPTURE(p);
    Tensor x = gc_input({2, 3}, 15, 0.5, 2.0);
    CHECK_OP_GRADCHECK("pow_scalar", [p](const std::vector<Tensor>& in) { return pow_scalar(in[0], p); },
                       std::vector<Tensor>{x});
  }
  Tensor x = gc_input({4}, 16);  // integer powers on negative values
  CHECK_OP_GRADCHECK("pow_scalar", [](const std::vector<Tensor>& in) { return pow_scalar(in[0], 3.0); },
                     std::vector<Tensor>{x});
}

TEST_CASE("ops/elementwise: operators build the same graph as the functions") {
  Tensor a = Tensor::from_vector({1, 2, 3}, {3}, DType::f64);
  Tensor b = Tensor::from_vector({4, 5, 6}, {3}, DType::f64);
  CHECK_CLOSE((a + b) * 2.0 - a / b, (std::vector<double>{9.75, 13.6, 17.5}), 1e-15, 0);
  CHECK_CLOSE(-a + 1.0, (std::vector<double>{0, -1, -2}), 0, 0);
}

TEST_CASE("kernels/elementwise: broadcasting matches naive loops") {
  const std::vector<std::pair<Shape, Shape>> big = {
      {{300000}, {300000}},         {{300, 1000}, {1000}},        {{100, 30, 100}, {100, 1, 100}},
      {{1000, 300}, {1000, 1}},     {{300000}, {}},               {{}, {300000}},
      {{600, 1, 500}, {1, 2, 500}}, {{50, 60, 100}, {60, 1}},     {{7, 5}, {5}},
      {{3, 1}, {1, 4}}};
  const std::vector<std::pair<BinaryOp, std::function<double(double, double)>>> ops = {
      {&kernels::add, [](double x, double y) { return x + y; }},
      {&kernels::sub, [](double x, double y) { return x - y; }},
      {&kernels::mul, [](double x, double y) { return x * y; }},
      {&kernels::div, [](double x, double y) { return x / y; }}};
  for (DType dt : {DType::f32, DType::f64}) {
    Generator g(3);
    for (const auto& [sa, sb] : big) {
      CAPTURE(to_string(sa));
      CAPTURE(to_string(sb));
      Tensor a = randn(sa, 0, 1, dt, g);
      Tensor b = rand_uniform(sb, 0.5, 2.0, dt, g);
      const Shape out = broadcast_shapes(sa, sb, "test");
      for (const auto& [k, f] : ops) {
        Tensor y = k(a, b);
        CHECK(y.shape() == out);
        CHECK(y.dtype() == dt);
        // float32 results are rounded once from float32 inputs: a relative tolerance suffices.
        CHECK_CLOSE(y, naive_binary(a, b, out, f), dt == DType::f32 ? 1e-6 : 1e-15, 1e-30);
      }
    }
  }
}

TEST_CASE("kernels/elementwise: scalar maths matches naive loops") {
  for (DType dt : {DType::f32, DType::f64}) {
    const double tol = dt == DType::f32 ? 2e-6 : 1e-14;
    Generator g(4);
    Tensor x = rand_uniform({300001}, 0.25, 3.0, dt, g);
    std::vector<double> v = x.to_vector(), r(v.size());
    auto expect = [&](const std::function<double(double)>& f) {
      for (size_t i = 0; i < v.size(); ++i) r[i] = f(v[i]);
      return r;
    };
    CHECK_CLOSE(kernels::neg(x), expect([](double t) { return -t; }), 0, 0);
    CHECK_CLOSE(kernels::add_scalar(x, 1.25), expect([](double t) { return t + 1.25; }), tol, 0);
    CHECK_CLOSE(kernels::mul_scalar(x, -0.5), expect([](double t) { return -0.5 * t; }), tol, 0);
    for (double p : {2.0, 0.5, -1.0, 1.7}) {
      CAPTURE(p);
      CHECK_CLOSE(kernels::pow_scalar(x, p), expect([p](double t) { return std::pow(t, p); }), 4 * tol, 0);
      Tensor dy = rand_uniform({300001}, -1, 1, dt, g);
      std::vector<double> vdy = dy.to_vector(), e(v.size());
      for (size_t i = 0; i < v.size(); ++i) e[i] = vdy[i] * p * std::pow(v[i], p - 1);
      CHECK_CLOSE(kernels::pow_scalar_backward(dy, x, p), e, 4 * tol, 1e-30);
    }
    Tensor bt = kernels::broadcast_to(Tensor::from_vector({1, 2, 3}, {3, 1}, dt), {2, 3, 2}, 0.5);
    CHECK_CLOSE(bt, (std::vector<double>{.5, .5, 1, 1, 1.5, 1.5, .5, .5, 1, 1, 1.5, 1.5}), 0, 0);
  }
}

TEST_CASE("kernels/elementwise: in-place updates") {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator g(5);
    Tensor d = randn({400, 1000}, 0, 1, dt, g);
    Tensor s = randn({400, 1000}, 0, 1, dt, g);
    Tensor bias = randn({1000}, 0, 1, dt, g);
    std::vector<double> vd = d.to_vector(), vs = s.to_vector(), vb = bias.to_vector(), e(vd.size());
    const double tol = dt == DType::f32 ? 1e-5 : 1e-14;

    Tensor t = d.clone();
    kernels::add_(t, s, -0.1);
    for (size_t i = 0; i < e.size(); ++i) e[i] = vd[i] - 0.1 * vs[i];
    CHECK_CLOSE(t, e, tol, tol);

    t = d.clone();
    kernels::add_(t, bias);
    for (size_t i = 0; i < e.size(); ++i) e[i] = vd[i] + vb[i % 1000];
    CHECK_CLOSE(t, e, tol, tol);

    t = d.clone();
    kernels::mul_(t, bias);
    for (size_t i = 0; i < e.size(); ++i) e[i] = vd[i] * vb[i % 1000];
    CHECK_CLOSE(t, e, tol, tol);

    t = d.clone();
    kernels::axpby_(t, 0.9, s, 0.1);
    for (size_t i = 0; i < e.size(); ++i) e[i] = 0.9 * vd[i] + 0.1 * vs[i];
    CHECK_CLOSE(t, e, tol, tol);

    t = d.clone();
    kernels::addcmul_(t, s, s, 0.001);
    for (size_t i = 0; i < e.size(); ++i) e[i] = vd[i] + 0.001 * vs[i] * vs[i];
    CHECK_CLOSE(t, e, tol, tol);

    t = d.clone();
    kernels::scale_(t, 3.0);
    for (size_t i = 0; i < e.size(); ++i) e[i] = 3.0 * vd[i];
    CHECK_CLOSE(t, e, tol, tol);

    kernels::fill(t, 0.25);
    CHECK_CLOSE(t, std::vector<double>(e.size(), 0.25), 0, 0);
    kernels::copy_(t, s);
    CHECK_CLOSE(t, vs, 0, 0);

    Tensor small = Tensor::zeros({3}, dt);
    CHECK_THROWS_AS(kernels::add_(small, t), Error);  // (400, 1000) does not broadcast to (3,)
  }
}

TEST_CASE("kernels/elementwise: results do not depend on the thread count") {
  Generator g(6);
  Tensor a = randn({200, 30, 100}, 0, 1, DType::f32, g), b = randn({200, 1, 100}, 0, 1, DType::f32, g);
  set_num_threads(1);
  std::vector<double> one = kernels::div(a, b).to_vector();
  set_num_threads(2);
  std::vector<double> two = kernels::div(a, b).to_vector();
  set_num_threads(0);
  CHECK(one == two);
}

TEST_CASE("ops/elementwise: errors name the op and the shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  CHECK_THROWS_AS(add(a, b), Error);
  std::string m = error_of([&] { mul(a, b); });
  CHECK(m.find("mul") != std::string::npos);
  CHECK(m.find("(2, 3)") != std::string::npos);
  CHECK(m.find("(4,)") != std::string::npos);
  CHECK_THROWS_AS(sub(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 1, 4})), Error);
  CHECK_THROWS_AS(div(a, Tensor::zeros({2})), Error);
  m = error_of([&] { add(a, Tensor::zeros({2, 3}, DType::f64)); });
  CHECK(m.find("add") != std::string::npos);
  CHECK(m.find("float64") != std::string::npos);
  CHECK_THROWS_AS(add(Tensor::zeros({2}, DType::i32), Tensor::zeros({2}, DType::i32)), Error);
  CHECK_THROWS_AS(kernels::broadcast_to(a, {3}), Error);
}
