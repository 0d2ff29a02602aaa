// The elementwise and unary kernels on the device against the CPU kernels: broadcasting binary ops of
// every kind (equal shapes over several blocks, scalar operands, rows, both sides broadcast, rank 6
// and 9, empty), broadcast_to, the scalar ops with pow's special cases and its backward, the in-place
// updates (which must change the destination's device storage), every unary forward and backward in
// float32 and float64 (the float64 backward comparison is the device gradient check), the shape and
// dtype errors, and bit-identical reruns.
#include <string>
#include <vector>

#include "core/device.h"
#include "core/kernels/elementwise.h"
#include "core/kernels/unary.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

namespace {

namespace k = seqlab::kernels;

Tensor dev(const Tensor& t) { return t.to(Device::cuda); }

struct Tol {
  double rtol, atol;
};
// float32: a few ulp (the transcendentals are CUDA's on the device, the CPU's own approximations on
// the host); float64: a few ulp of double.
Tol tol_of(DType d) { return d == DType::f64 ? Tol{1e-12, 1e-14} : Tol{1e-5, 1e-6}; }

void compare(const Tensor& gpu, const Tensor& cpu, DType d, const std::string& what) {
  CHECK_MESSAGE(gpu.device() == Device::cuda, what << ": result not on cuda");
  CHECK_MESSAGE(gpu.dtype() == cpu.dtype(), what << ": dtype");
  const Tol t = tol_of(d);
  check_close(gpu, cpu, t.rtol, t.atol, what);
}

std::string label(const char* op, DType d, const Shape& a, const Shape& b = {}) {
  return str(op, " ", dtype_name(d), " ", to_string(a), " ", to_string(b));
}

// Random values with every `every`-th one exactly 0 (relu and abs at their kinks).
Tensor with_zeros(const Shape& s, uint64_t seed, DType d, int every) {
  std::vector<double> v = rand_cpu(s, seed, DType::f64).to_vector();
  for (size_t i = 0; i < v.size(); i += static_cast<size_t>(every)) v[i] = 0.0;
  return Tensor::from_vector(v, s, d);
}

const DType kFloatTypes[] = {DType::f32, DType::f64};

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda elementwise: add - sub - mul - div with broadcasting of every kind match the CPU") {
  SEQLAB_REQUIRE_GPU();
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{1000, 1037}, {1000, 1037}},                         // equal shapes, many blocks, odd size
      {{3, 37, 65}, {65}},                                  // rows
      {{65}, {3, 37, 65}},                                  // rows, on the left
      {{4, 1, 33}, {1, 29, 1}},                             // both sides broadcast
      {{2, 3, 1, 5, 1, 7}, {3, 4, 1, 6, 1}},                // rank 6, different ranks
      {{2, 1, 2, 1, 2, 1, 2, 1, 3}, {1, 2, 1, 2, 1, 2, 1, 2, 3}},  // rank 9, nothing merges
      {{}, {7, 300}},                                       // scalar on the left
      {{7, 300}, {1}},                                      // one element on the right
      {{1}, {}},                                            // one element each
      {{5, 1}, {5, 1}},                                     // size-1 dims
      {{0, 5}, {5}},                                        // empty
  };
  const std::vector<std::pair<const char*, Tensor (*)(const Tensor&, const Tensor&)>> ops = {
      {"add", &k::add}, {"sub", &k::sub}, {"mul", &k::mul}, {"div", &k::div}};
  uint64_t seed = 10;
  for (DType d : kFloatTypes) {
    for (const auto& [sa, sb] : cases) {
      Tensor a = rand_cpu(sa, seed++, d, -2, 2);
      Tensor b = rand_cpu(sb, seed++, d, 0.5, 2);  // away from 0 for div
      Tensor ga = dev(a), gb = dev(b);
      for (const auto& [name, f] : ops) compare(f(ga, gb), f(a, b), d, label(name, d, sa, sb));
    }
  }
}

TEST_CASE("cuda elementwise: broadcast_to with and without alpha") {
  SEQLAB_REQUIRE_GPU();
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 1, 5}, {2, 3, 4, 5}}, {{}, {1000}}, {{1, 1}, {7, 1, 9}}, {{129, 33}, {129, 33}}, {{65}, {3, 37, 65}}};
  uint64_t seed = 100;
  for (DType d : kFloatTypes) {
    for (const auto& [sx, so] : cases) {
      Tensor x = rand_cpu(sx, seed++, d);
      for (double alpha : {1.0, -2.5}) {
        compare(k::broadcast_to(dev(x), so, alpha), k::broadcast_to(x, so, alpha), d,
                label("broadcast_to", d, sx, so) + str(" alpha ", alpha));
      }
    }
  }
  CHECK_THROWS_AS(k::broadcast_to(dev(rand_cpu({3, 4}, 1)), {4, 3}), Error);
  CHECK_THROWS_AS(k::broadcast_to(dev(rand_cpu({3, 4}, 1)), {4}), Error);
}

TEST_CASE("cuda elementwise: neg - add_scalar - mul_scalar - pow_scalar and its backward with the special powers") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 200;
  for (DType d : kFloatTypes) {
    for (const Shape& s : {Shape{1031}, Shape{5, 300, 7}, Shape{}}) {
      Tensor x = rand_cpu(s, seed++, d, 0.1, 2.0);  // positive: pow of any power is defined
      Tensor dy = rand_cpu(s, seed++, d);
      Tensor gx = dev(x), gdy = dev(dy);
      compare(k::neg(gx), k::neg(x), d, label("neg", d, s));
      compare(k::add_scalar(gx, 0.75), k::add_scalar(x, 0.75), d, label("add_scalar", d, s));
      compare(k::mul_scalar(gx, -1.5), k::mul_scalar(x, -1.5), d, label("mul_scalar", d, s));
      for (double p : {2.0, 1.0, 0.5, -1.0, 0.0, 3.0, -2.5, 1.7}) {
        compare(k::pow_scalar(gx, p), k::pow_scalar(x, p), d, label("pow_scalar", d, s) + str(" p ", p));
        compare(k::pow_scalar_backward(gdy, gx, p), k::pow_scalar_backward(dy, x, p), d,
                label("pow_scalar_backward", d, s) + str(" p ", p));
      }
    }
    // dy of another shape with the same numel: dx takes x's shape.
    Tensor x = rand_cpu({77}, seed++, d, 0.1, 2.0), dy = rand_cpu({7, 11}, seed++, d);
    compare(k::pow_scalar_backward(dev(dy), dev(x), 1.3), k::pow_scalar_backward(dy, x, 1.3), d,
            label("pow_scalar_backward", d, {7, 11}, {77}));
  }
  CHECK_THROWS_AS(k::pow_scalar_backward(dev(rand_cpu({5}, 1)), dev(rand_cpu({6}, 2)), 2.0), Error);
}

TEST_CASE("cuda elementwise: the in-place updates change the device storage as on the CPU") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 300;
  for (DType d : kFloatTypes) {
    // add_ and mul_ with src broadcast to dst (rows, columns, a scalar, the same shape).
    const std::vector<std::pair<Shape, Shape>> cases = {
        {{3, 37, 65}, {65}}, {{4, 29, 33}, {29, 1}}, {{1031}, {}}, {{1000, 517}, {1000, 517}}, {{0, 3}, {3}}};
    for (const auto& [sd, ss] : cases) {
      Tensor dst = rand_cpu(sd, seed++, d), src = rand_cpu(ss, seed++, d);
      for (double alpha : {1.0, 0.3}) {
        Tensor c = dst.clone(), g = dev(dst);
        Tensor before = g;
        k::add_(c, src, alpha);
        k::add_(g, dev(src), alpha);
        CHECK(g.shares_storage(before));
        compare(g, c, d, label("add_", d, sd, ss) + str(" alpha ", alpha));
      }
      Tensor c = dst.clone(), g = dev(dst);
      Tensor before = g;
      k::mul_(c, src);
      k::mul_(g, dev(src));
      CHECK(g.shares_storage(before));
      compare(g, c, d, label("mul_", d, sd, ss));
    }
    // add_ of a tensor to itself.
    {
      Tensor x = rand_cpu({777}, seed++, d), c = x.clone(), g = dev(x);
      k::add_(c, c, 0.5);
      k::add_(g, g, 0.5);
      compare(g, c, d, label("add_ self", d, {777}));
    }
    for (const Shape& s : {Shape{1031}, Shape{3, 129, 65}}) {
      Tensor dst = rand_cpu(s, seed++, d), a = rand_cpu(s, seed++, d), b = rand_cpu(s, seed++, d);
      Tensor src_flat = a.view({numel(s)});  // axpby_ and addcmul_ need equal numel only
      {
        Tensor c = dst.clone(), g = dev(dst), before = g;
        k::axpby_(c, 0.9, src_flat, 0.1);
        k::axpby_(g, 0.9, dev(src_flat), 0.1);
        CHECK(g.shares_storage(before));
        compare(g, c, d, label("axpby_", d, s));
      }
      {
        Tensor c = dst.clone(), g = dev(dst), before = g;
        k::addcmul_(c, src_flat, b, 0.37);
        k::addcmul_(g, dev(src_flat), dev(b), 0.37);
        CHECK(g.shares_storage(before));
        compare(g, c, d, label("addcmul_", d, s));
      }
      {
        Tensor c = dst.clone(), g = dev(dst), before = g;
        k::scale_(c, 1.7);
        k::scale_(g, 1.7);
        CHECK(g.shares_storage(before));
        compare(g, c, d, label("scale_", d, s));
      }
      {
        Tensor c = dst.clone(), g = dev(dst), before = g;
        k::fill(c, 3.25);
        k::fill(g, 3.25);
        CHECK(g.shares_storage(before));
        compare(g, c, d, label("fill", d, s));
      }
      {
        Tensor g = dev(dst), before = g;
        k::copy_(g, dev(src_flat));
        CHECK(g.shares_storage(before));
        CHECK(g.shape() == s);
        CHECK(g.to_vector() == src_flat.to_vector());
      }
    }
  }
  // copy_ moves int32 too.
  Tensor xi = rand_cpu({1001}, 9, DType::i32, -1000, 1000), gi = Tensor::zeros({1001}, DType::i32, Device::cuda);
  k::copy_(gi, dev(xi));
  CHECK(gi.to_vector() == xi.to_vector());
}

TEST_CASE("cuda elementwise: shape - dtype and device errors as on the CPU") {
  SEQLAB_REQUIRE_GPU();
  Tensor a = dev(rand_cpu({3, 4}, 1)), b = dev(rand_cpu({4, 3}, 2));
  CHECK_THROWS_AS(k::add(a, b), Error);
  CHECK_THROWS_AS(k::mul(a, dev(rand_cpu({3, 4}, 3, DType::f64))), Error);
  CHECK_THROWS_AS(k::add(dev(rand_cpu({3}, 4, DType::i32)), dev(rand_cpu({3}, 5, DType::i32))), Error);
  Tensor d31 = dev(rand_cpu({3, 1}, 6));
  try {
    k::add_(d31, a);
    FAIL("add_ broadcast the destination");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("does not broadcast to the destination") != std::string::npos);
  }
  CHECK_THROWS_AS(k::mul_(d31, a), Error);
  CHECK_THROWS_AS(k::axpby_(a, 1.0, dev(rand_cpu({5}, 7)), 1.0), Error);
  CHECK_THROWS_AS(k::addcmul_(a, a, dev(rand_cpu({11}, 8)), 1.0), Error);
  Tensor ai = dev(rand_cpu({4}, 9, DType::i32, 0, 10));
  CHECK_THROWS_AS(k::fill(ai, 1.0), Error);
  CHECK_THROWS_AS(k::scale_(ai, 2.0), Error);
  Tensor host = rand_cpu({3, 4}, 10);
  CHECK_THROWS_AS(k::add_(a, host), Error);  // devices differ
  CHECK_THROWS_AS(k::copy_(a, host), Error);
  CHECK_THROWS_AS(k::tanh_backward(a, b), Error);  // shapes differ
  CHECK_THROWS_AS(k::gelu_backward(a, dev(rand_cpu({12}, 11))), Error);
  CHECK_THROWS_AS(k::exp_forward(ai), Error);
}

TEST_CASE("cuda elementwise: every unary forward and backward matches the CPU in float32 and float64") {
  SEQLAB_REQUIRE_GPU();
  using Fwd = Tensor (*)(const Tensor&);
  using Bwd = Tensor (*)(const Tensor&, const Tensor&);
  struct Case {
    const char* name;
    Fwd fwd;
    Bwd bwd;
    bool bwd_takes_y;  // the backward's second argument is the forward's output
    double lo, hi;     // input range
    int zeros_every;   // > 0: exact zeros among the inputs
  };
  const std::vector<Case> cases = {
      {"exp", &k::exp_forward, &k::exp_backward, true, -5, 5, 0},
      {"log", &k::log_forward, &k::log_backward, false, 0.05, 10, 0},
      {"sqrt", &k::sqrt_forward, &k::sqrt_backward, true, 0.01, 4, 0},
      {"tanh", &k::tanh_forward, &k::tanh_backward, true, -4, 4, 0},
      {"sigmoid", &k::sigmoid_forward, &k::sigmoid_backward, true, -12, 12, 0},
      {"silu", &k::silu_forward, &k::silu_backward, false, -8, 8, 0},
      {"gelu", &k::gelu_forward, &k::gelu_backward, false, -6, 6, 0},
      {"relu", &k::relu_forward, &k::relu_backward, true, -1, 1, 5},
      {"abs", &k::abs_forward, &k::abs_backward, false, -1, 1, 5},
  };
  uint64_t seed = 400;
  for (DType d : kFloatTypes) {
    for (const Shape& s : {Shape{1031}, Shape{3, 129, 65}, Shape{0, 4}}) {
      for (const Case& c : cases) {
        Tensor x = c.zeros_every ? with_zeros(s, seed++, d, c.zeros_every) : rand_cpu(s, seed++, d, c.lo, c.hi);
        Tensor dy = rand_cpu(s, seed++, d);
        Tensor y = c.fwd(x);
        compare(c.fwd(dev(x)), y, d, label(c.name, d, s));
        // The backward on identical inputs (y from the CPU, so only the backward is compared).
        const Tensor& arg = c.bwd_takes_y ? y : x;
        compare(c.bwd(dev(dy), dev(arg)), c.bwd(dy, arg), d, label(c.name, d, s) + " backward");
      }
      // softplus with PyTorch's threshold and a small one: both sides of the threshold are hit.
      Tensor x = rand_cpu(s, seed++, d, -30, 30), dy = rand_cpu(s, seed++, d);
      for (double th : {20.0, 1.5}) {
        compare(k::softplus_forward(dev(x), th), k::softplus_forward(x, th), d,
                label("softplus", d, s) + str(" threshold ", th));
        compare(k::softplus_backward(dev(dy), dev(x), th), k::softplus_backward(dy, x, th), d,
                label("softplus backward", d, s) + str(" threshold ", th));
      }
    }
  }
}

TEST_CASE("cuda elementwise: the same device computation twice gives bit-identical results") {
  SEQLAB_REQUIRE_GPU();
  Tensor a = dev(rand_cpu({3, 37, 65}, 500)), b = dev(rand_cpu({65}, 501));
  Tensor x = dev(rand_cpu({4, 1, 33}, 502, DType::f32, -6, 6)), z = dev(rand_cpu({1, 29, 1}, 503));
  auto run = [&]() {
    std::vector<std::vector<double>> out;
    out.push_back(k::add(a, b).to_vector());
    out.push_back(k::div(x, z).to_vector());
    out.push_back(k::gelu_forward(a).to_vector());
    out.push_back(k::gelu_backward(a, a).to_vector());
    out.push_back(k::softplus_forward(x).to_vector());
    out.push_back(k::pow_scalar(k::abs_forward(a), 1.7).to_vector());
    Tensor acc = a.clone();
    k::add_(acc, b, 0.3);
    k::addcmul_(acc, a, a, 0.1);
    out.push_back(acc.to_vector());
    return out;
  };
  CHECK(run() == run());
}

}  // TEST_SUITE
