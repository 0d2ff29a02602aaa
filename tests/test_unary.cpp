// Unary ops: gradchecks in float64 (inputs kept away from kinks and from small log/sqrt arguments),
// forward/backward kernels against naive loops in float32/float64, and PyTorch's edge rules.
#include <cmath>

#include "autograd/ops.h"
#include "core/kernels/unary.h"
#include "core/kernels/vmath.h"
#include "ops_testing.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // 16-lane vmath forms on the baseline ISA
using namespace seqlab;
using namespace seqlab::testing;

namespace {

using UnaryOp = Tensor (*)(const Tensor&);
using Fwd = Tensor (*)(const Tensor&);
using Bwd = Tensor (*)(const Tensor&, const Tensor&);

void gradcheck_unary(const char* name, const std::function<Tensor(const Tensor&)>& op, Tensor x) {
  CHECK_OP_GRADCHECK(name, [op](const std::vector<Tensor>& in) { return op(in[0]); }, std::vector<Tensor>{x});
}

double sigmoid_ref(double v) { return 1 / (1 + std::exp(-v)); }
double gelu_ref(double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }

// One unary function as the test sees it: kernels, reference derivative, and the input range.
struct Case {
  const char* name;
  Fwd fwd;
  Bwd bwd;
  bool bwd_takes_y;  // backward's second argument is y (else x)
  double (*f)(double);
  double (*df)(double);
  double lo, hi;
};

const Case kCases[] = {
    {"exp", &kernels::exp_forward, &kernels::exp_backward, true, [](double v) { return std::exp(v); },
     [](double v) { return std::exp(v); }, -5, 5},
    {"log", &kernels::log_forward, &kernels::log_backward, false, [](double v) { return std::log(v); },
     [](double v) { return 1 / v; }, 0.1, 10},
    {"sqrt", &kernels::sqrt_forward, &kernels::sqrt_backward, true, [](double v) { return std::sqrt(v); },
     [](double v) { return 0.5 / std::sqrt(v); }, 0.1, 10},
    {"tanh", &kernels::tanh_forward, &kernels::tanh_backward, true, [](double v) { return std::tanh(v); },
     [](double v) { return 1 - std::tanh(v) * std::tanh(v); }, -4, 4},
    {"sigmoid", &kernels::sigmoid_forward, &kernels::sigmoid_backward, true, sigmoid_ref,
     [](double v) { return sigmoid_ref(v) * (1 - sigmoid_ref(v)); }, -8, 8},
    {"silu", &kernels::silu_forward, &kernels::silu_backward, false, [](double v) { return v * sigmoid_ref(v); },
     [](double v) { return sigmoid_ref(v) * (1 + v * (1 - sigmoid_ref(v))); }, -8, 8},
    {"gelu", &kernels::gelu_forward, &kernels::gelu_backward, false, gelu_ref,
     [](double v) { return 0.5 * (1 + std::erf(v / std::sqrt(2.0))) + v * std::exp(-v * v / 2) / std::sqrt(2 * M_PI); },
     -5, 5},
    {"relu", &kernels::relu_forward, &kernels::relu_backward, true, [](double v) { return v > 0 ? v : 0.0; },
     [](double v) { return v > 0 ? 1.0 : 0.0; }, -3, 3},
    {"abs", &kernels::abs_forward, &kernels::abs_backward, false, [](double v) { return std::abs(v); },
     [](double v) { return v > 0 ? 1.0 : -1.0; }, -3, 3},
};

}  // namespace

TEST_CASE("ops/exp: gradcheck") { gradcheck_unary("exp", [](const Tensor& x) { return seqlab::exp(x); }, gc_input({2, 3}, 1)); }
TEST_CASE("ops/log: gradcheck") {
  gradcheck_unary("log", [](const Tensor& x) { return seqlab::log(x); }, gc_input({2, 3}, 2, 0.5, 3.0));
}
TEST_CASE("ops/sqrt: gradcheck") {
  gradcheck_unary("sqrt", [](const Tensor& x) { return seqlab::sqrt(x); }, gc_input({2, 3}, 3, 0.5, 3.0));
}
TEST_CASE("ops/tanh: gradcheck") { gradcheck_unary("tanh", [](const Tensor& x) { return seqlab::tanh(x); }, gc_input({2, 3}, 4)); }
TEST_CASE("ops/sigmoid: gradcheck") {
  gradcheck_unary("sigmoid", [](const Tensor& x) { return sigmoid(x); }, gc_input({2, 3}, 5));
  gradcheck_unary("sigmoid", [](const Tensor& x) { return sigmoid(x); },
                  Tensor::from_vector({-30, -6, 6, 30}, {4}, DType::f64).set_requires_grad());
}
TEST_CASE("ops/silu: gradcheck") {
  gradcheck_unary("silu", [](const Tensor& x) { return silu(x); }, gc_input({2, 3}, 6));
  gradcheck_unary("silu", [](const Tensor& x) { return silu(x); },
                  Tensor::from_vector({-30, -6, 6, 30}, {4}, DType::f64).set_requires_grad());
}
TEST_CASE("ops/gelu: gradcheck") {
  gradcheck_unary("gelu", [](const Tensor& x) { return gelu(x); }, gc_input({2, 3}, 7));
  gradcheck_unary("gelu", [](const Tensor& x) { return gelu(x); },
                  Tensor::from_vector({-7, -3, 3, 7}, {4}, DType::f64).set_requires_grad());
}
TEST_CASE("ops/softplus: gradcheck") {
  gradcheck_unary("softplus", [](const Tensor& x) { return softplus(x); }, gc_input({2, 3}, 8));
  // Both sides of the threshold (the function jumps by log1p(e^-t) there, so stay clear of it).
  Tensor x = Tensor::from_vector({-25, -3, -0.5, 0.2, 0.8, 1.5, 3, 25}, {8}, DType::f64).set_requires_grad();
  gradcheck_unary("softplus", [](const Tensor& t) { return softplus(t); }, x);
  gradcheck_unary("softplus", [](const Tensor& t) { return softplus(t, 1.0); }, x);
}
TEST_CASE("ops/relu: gradcheck") {
  Tensor x = Tensor::from_vector({-1.5, -0.3, 0.4, 2.0, -0.01, 0.02}, {2, 3}, DType::f64).set_requires_grad();
  gradcheck_unary("relu", [](const Tensor& t) { return relu(t); }, x);
}

TEST_CASE("ops/unary: chained ops") {
  Tensor x = gc_input({3, 2}, 9, 0.5, 2.0);
  gradcheck_unary("unary chain", [](const Tensor& t) { return seqlab::tanh(gelu(seqlab::log(seqlab::sqrt(t)) * 2.0)); }, x);
}

// Every ISA path: float32 GELU runs per-path vector loops (core/kernels/activation_vec.cpp).
TEST_CASE("kernels/unary: forward and backward match naive loops") {
  testing::for_each_isa([&] {
    for (DType dt : {DType::f32, DType::f64}) {
      // float32 maths (libm's float functions) against double references.
      const double tol = dt == DType::f32 ? 1e-5 : 1e-13;
      for (const Case& c : kCases) {
        CAPTURE(c.name);
        CAPTURE(dtype_name(dt));
        Generator g(10);
        Tensor x = rand_uniform({300001}, c.lo, c.hi, dt, g);
        Tensor dy = rand_uniform({300001}, -1, 1, dt, g);
        std::vector<double> vx = x.to_vector(), vdy = dy.to_vector(), ey(vx.size()), edx(vx.size());
        for (size_t i = 0; i < vx.size(); ++i) {
          ey[i] = c.f(vx[i]);
          edx[i] = vdy[i] * c.df(vx[i]);
        }
        Tensor y = c.fwd(x);
        CHECK_CLOSE(y, ey, tol, tol);
        CHECK_CLOSE(c.bwd(dy, c.bwd_takes_y ? y : x), edx, 10 * tol, tol);
      }
    }
  });
}

TEST_CASE("kernels/gelu: float32 special values on every ISA path") {
  testing::for_each_isa([&] {
    const std::vector<double> x = {NAN, INFINITY, -INFINITY, 0.0, -0.0, 3.9, 4.1, 12.0, -12.0, 1e-30};
    const Tensor y = kernels::gelu_forward(Tensor::from_vector(x, {10}, DType::f32));
    const Tensor dx = kernels::gelu_backward(Tensor::ones({10}, DType::f32), Tensor::from_vector(x, {10}, DType::f32));
    const std::vector<double> vy = y.to_vector(), vd = dx.to_vector();
    CHECK(std::isnan(vy[0]));
    CHECK(vy[1] == INFINITY);
    CHECK(vy[3] == 0.0);
    CHECK(vy[7] == doctest::Approx(12.0));
    CHECK(std::abs(vy[8]) < 1e-20);
    CHECK(vd[7] == doctest::Approx(1.0));
    CHECK(std::abs(vd[8]) < 1e-20);
    for (int i = 5; i <= 6; ++i) CHECK(vy[i] == doctest::Approx(gelu_ref(x[i])).epsilon(1e-6));
  });
}

TEST_CASE("kernels/softplus: threshold as PyTorch") {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator g(11);
    Tensor x = rand_uniform({300001}, -30, 30, dt, g);
    Tensor dy = rand_uniform({300001}, -1, 1, dt, g);
    std::vector<double> vx = x.to_vector(), vdy = dy.to_vector(), ey(vx.size()), edx(vx.size());
    for (double thr : {20.0, 1.0}) {
      for (size_t i = 0; i < vx.size(); ++i) {
        ey[i] = vx[i] > thr ? vx[i] : std::log1p(std::exp(vx[i]));
        edx[i] = vx[i] > thr ? vdy[i] : vdy[i] * sigmoid_ref(vx[i]);
      }
      CHECK_CLOSE(kernels::softplus_forward(x, thr), ey, 1e-6, 1e-30);
      CHECK_CLOSE(kernels::softplus_backward(dy, x, thr), edx, 1e-6, 1e-30);
    }
  }
  Tensor x = Tensor::from_vector({25, 19, -100}, {3}, DType::f64);
  CHECK_CLOSE(kernels::softplus_forward(x), (std::vector<double>{25, std::log1p(std::exp(19.0)), std::exp(-100.0)}),
              1e-15, 0);
}

TEST_CASE("kernels/unary: values PyTorch gives, and no overflow at the extremes") {
  // torch.nn.functional.gelu(torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64))
  CHECK_CLOSE(kernels::gelu_forward(Tensor::from_vector({1.0, -1.0, 0.5}, {3}, DType::f64)),
              (std::vector<double>{0.8413447460685429, -0.15865525393145707, 0.34573123063700656}), 1e-14, 0);
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = Tensor::from_vector({-1000, 1000, -100, 100}, {4}, dt);
    CHECK_CLOSE(kernels::sigmoid_forward(x), (std::vector<double>{0, 1, std::exp(-100.0), 1}), 1e-6, 1e-30);
    CHECK_CLOSE(kernels::silu_forward(x), (std::vector<double>{0, 1000, -100 * std::exp(-100.0), 100}), 1e-6, 1e-30);
    CHECK_CLOSE(kernels::softplus_forward(x), (std::vector<double>{0, 1000, std::exp(-100.0), 100}), 1e-6, 1e-30);
    Tensor y = kernels::relu_forward(Tensor::from_vector({-1, 0, 2}, {3}, dt));
    CHECK_CLOSE(kernels::relu_backward(Tensor::ones({3}, dt), y), (std::vector<double>{0, 0, 1}), 0, 0);
  }
}

TEST_CASE("ops/unary: errors name the op") {
  std::string m = error_of([] { seqlab::tanh(Tensor::zeros({2}, DType::i32)); });
  CHECK(m.find("tanh") != std::string::npos);
  CHECK_THROWS_AS(kernels::tanh_backward(Tensor::zeros({2}), Tensor::zeros({3})), Error);
}

TEST_CASE("kernels/unary: the vectorised float exp, tanh and sigmoid are within a few ulp") {
  std::vector<double> v;
  for (double t = -20; t <= 20; t += 0.001) v.push_back(t);
  for (double t : {1e-8, -1e-6, 1e-4, 0.3, 0.6249, 0.6251, -0.7, 80.0, -80.0, 88.0, -87.0}) v.push_back(t);
  Tensor x = Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, DType::f32);
  std::vector<double> xs = x.to_vector(), ee(xs.size()), et(xs.size()), es(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    ee[i] = std::exp(xs[i]);
    et[i] = std::tanh(xs[i]);
    es[i] = sigmoid_ref(xs[i]);
  }
  CHECK_CLOSE(kernels::exp_forward(x), ee, 3e-7, 0);
  CHECK_CLOSE(kernels::tanh_forward(x), et, 3e-7, 0);
  CHECK_CLOSE(kernels::sigmoid_forward(x), es, 4e-7, 0);
  const double inf = INFINITY, nan = NAN;
  Tensor e = kernels::exp_forward(Tensor::from_vector({-200, 200, inf, -inf, nan}, {5}));
  CHECK(e.to_vector()[0] == 0);
  CHECK(e.to_vector()[1] == inf);
  CHECK(e.to_vector()[2] == inf);
  CHECK(e.to_vector()[3] == 0);
  CHECK(std::isnan(e.to_vector()[4]));
  std::vector<double> t = kernels::tanh_forward(Tensor::from_vector({-inf, inf, nan}, {3})).to_vector();
  CHECK(t[0] == -1);
  CHECK(t[1] == 1);
  CHECK(std::isnan(t[2]));
}

TEST_CASE("kernels/vmath: float erf, softplus, log, tanh against libm in double") {
  // erf_of replaces std::erf in GELU (float): relative error <= 2.5e-7 (1.7e-7 measured) everywhere.
  double worst_erf = 0, worst_sp = 0, worst_log = 0, worst_tanh = 0;
  for (int i = -600000; i <= 600000; ++i) {
    const float x = static_cast<float>(i) * 1e-5f;  // [-6, 6]
    const double e = std::erf(static_cast<double>(x));
    if (e != 0) worst_erf = std::max(worst_erf, std::abs(kernels::vmath::erf_of(x) - e) / std::abs(e));
    const float y = static_cast<float>(i) * 5e-5f;  // [-30, 30]
    const double sp = y > 20 ? y : std::log1p(std::exp(static_cast<double>(y)));
    worst_sp = std::max(worst_sp, std::abs(kernels::vmath::softplus_of(y) - sp) / sp);
    const double th = std::tanh(static_cast<double>(x));
    if (th != 0) worst_tanh = std::max(worst_tanh, std::abs(kernels::vmath::tanh_of(x) - th) / std::abs(th));
    const float l = 1e-30f * std::pow(1.0001f, static_cast<float>(i + 600000) * 1.15f);  // 1e-30 .. 1e30
    if (std::isfinite(l) && l > 0 && std::abs(std::log(static_cast<double>(l))) > 1e-3)
      worst_log = std::max(worst_log, std::abs(kernels::vmath::log_of(l) - std::log(static_cast<double>(l))) /
                                          std::abs(std::log(static_cast<double>(l))));
  }
  MESSAGE("worst relative errors: erf ", worst_erf, ", softplus ", worst_sp, ", log ", worst_log, ", tanh ",
          worst_tanh);
  CHECK(worst_erf <= 2.5e-7);
  CHECK(worst_sp <= 3e-7);
  CHECK(worst_log <= 3e-7);
  CHECK(worst_tanh <= 3e-7);
  CHECK(std::isnan(kernels::vmath::erf_of(NAN)));
  CHECK(kernels::vmath::erf_of(INFINITY) == 1.0f);
  CHECK(kernels::vmath::erf_of(-INFINITY) == -1.0f);
  CHECK(kernels::vmath::softplus_of(100.0f) == 100.0f);
  CHECK(kernels::vmath::softplus_of(-100.0f) >= 0.0f);
}

TEST_CASE("kernels/vmath: float exp and exp_nonpositive against libm in double, scalar and 16 lanes") {
  namespace vm = kernels::vmath;
  double worst = 0, worst_np = 0, worst_vec = 0;
  for (int i = -870000; i <= 880000; ++i) {
    const float x = static_cast<float>(i) * 1e-4f;  // [-87, 88]
    const double e = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(vm::exp_of(x) - e) / e);
    if (x <= 0) worst_np = std::max(worst_np, std::abs(vm::exp_nonpositive_of(x) - e) / e);
  }
  // The 16-lane forms give the scalar forms' results lane for lane.
  for (int i = -5440; i <= 5500; i += 16) {
    vm::f32x16 v;
    for (int l = 0; l < 16; ++l) v[l] = static_cast<float>(i + l) * 0.016f;
    const vm::f32x16 a = vm::exp_of(v), b = vm::exp_nonpositive_of(v < vm::splat(0.0f) ? v : -v);
    for (int l = 0; l < 16; ++l) {
      worst_vec = std::max(worst_vec, static_cast<double>(std::abs(a[l] - vm::exp_of(v[l]))));
      const float w = v[l] < 0 ? v[l] : -v[l];
      worst_vec = std::max(worst_vec, static_cast<double>(std::abs(b[l] - vm::exp_nonpositive_of(w))));
    }
  }
  MESSAGE("worst relative errors: exp ", worst, ", exp_nonpositive ", worst_np);
  CHECK(worst <= 2.5e-7);
  CHECK(worst_np <= 2.5e-7);
  CHECK(worst_vec == 0);
  CHECK(vm::exp_of(0.0f) == 1.0f);
  CHECK(vm::exp_nonpositive_of(0.0f) == 1.0f);
  CHECK(vm::exp_of(-100.0f) == 0.0f);
  CHECK(vm::exp_nonpositive_of(-100.0f) == 0.0f);
  CHECK(vm::exp_nonpositive_of(-INFINITY) == 0.0f);  // masked attention scores
  CHECK(vm::exp_of(100.0f) == INFINITY);
  CHECK(std::isnan(vm::exp_of(NAN)));
  const vm::f32x16 masked = vm::splat(-INFINITY);
  CHECK(vm::exp_nonpositive_of(masked)[7] == 0.0f);
}

// The vector forms at every width (4, 8, 16 lanes: the SSE2, AVX2 and AVX-512 paths' widths) against
// the scalar forms, lane by lane, over [-12, 12] and the special values.
template <typename V>
void check_vector_forms_against_scalar() {
  namespace vm = kernels::vmath;
  constexpr int W = vm::lanes_of<V>;
  double worst_tanh = 0, worst_sig = 0, worst_sp = 0, worst_erf = 0, worst_e = 0;
  std::vector<float> xs;
  for (int i = -12000; i <= 12000; i += 3) xs.push_back(static_cast<float>(i) * 1e-3f);
  for (float s : {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-30f, -1e-30f}) xs.push_back(s);
  while (xs.size() % W) xs.push_back(0.5f);
  auto gap = [](float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0.0 : 1.0;
    if (a == b) return 0.0;
    return std::abs(static_cast<double>(a) - b) / std::max(1e-30, std::abs(static_cast<double>(b)));
  };
  for (size_t i = 0; i < xs.size(); i += W) {
    V v;
    for (int l = 0; l < W; ++l) v[l] = xs[i + l];
    V e;
    const V t = vm::tanh_of(v), sg = vm::sigmoid_of(v), sp = vm::softplus_of(v), er = vm::erf_exp_of(v, e);
    for (int l = 0; l < W; ++l) {
      const float x = xs[i + l];
      float es;
      const float ers = vm::erf_exp_of(x, es);
      worst_tanh = std::max(worst_tanh, gap(t[l], vm::tanh_of(x)));
      worst_sig = std::max(worst_sig, gap(sg[l], vm::sigmoid_of(x)));
      worst_sp = std::max(worst_sp, gap(sp[l], vm::softplus_of(x)));
      worst_erf = std::max(worst_erf, gap(er[l], ers));
      if (!std::isnan(x)) worst_e = std::max(worst_e, gap(e[l], es));
    }
  }
  MESSAGE(W, " lanes, worst relative gap to the scalar forms: tanh ", worst_tanh, ", sigmoid ", worst_sig,
          ", softplus ", worst_sp, ", erf ", worst_erf, ", exp(-x^2) ", worst_e);
  // Same operations lane for lane (only contraction into FMAs may differ), except exp(-x^2) without
  // the residual of x^2 in the vector form (vmath.h): up to 4e-6 relative at |x| near 10.
  CHECK(worst_tanh <= 1e-6);
  CHECK(worst_sig <= 1e-6);
  CHECK(worst_sp <= 1e-6);
  CHECK(worst_erf <= 1e-6);
  CHECK(worst_e <= 5e-6);
}

TEST_CASE("kernels/vmath: vector tanh, sigmoid, softplus, erf at 4, 8 and 16 lanes equal the scalar forms") {
  check_vector_forms_against_scalar<kernels::vmath::f32x4>();
  check_vector_forms_against_scalar<kernels::vmath::f32x8>();
  check_vector_forms_against_scalar<kernels::vmath::f32x16>();
}
