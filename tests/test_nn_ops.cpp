// layer_norm, rms_norm and dropout: float64 gradchecks (with and without affine parameters; dropout
// with its generator re-seeded inside f so the mask is fixed), fused kernels against naive loops
// in float32 and float64, dropout's keep rate and scaling, and the errors.
#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops/nn.h"
#include "core/kernels/norm.h"
#include "core/random.h"
#include "testing.h"

using namespace seqlab;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, double mean = 0) {
  Generator gen(seed);
  return randn(s, mean, 1, DType::f64, gen).set_requires_grad();
}

// Naive LayerNorm (center) or RMSNorm over the last axis: y, and {dx, dw, db} from the textbook
// formulas written out per element.
struct NaiveNorm {
  std::vector<double> y, dx, dw, db;
};
NaiveNorm naive_norm(bool center, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, double eps) {
  int64_t D = x.size(-1), R = x.numel() / D;
  std::vector<double> xv = x.to_vector(), gv = dy.to_vector();
  std::vector<double> wv = w.defined() ? w.to_vector() : std::vector<double>(D, 1.0);
  std::vector<double> bv = b.defined() ? b.to_vector() : std::vector<double>(D, 0.0);
  NaiveNorm r{std::vector<double>(xv.size()), std::vector<double>(xv.size()), std::vector<double>(D, 0.0),
              std::vector<double>(D, 0.0)};
  for (int64_t i = 0; i < R; ++i) {
    auto at = [&](int64_t j) { return static_cast<size_t>(i * D + j); };
    double m = 0, v = 0;
    if (center) {
      for (int64_t j = 0; j < D; ++j) m += xv[at(j)] / D;
    }
    for (int64_t j = 0; j < D; ++j) v += (xv[at(j)] - m) * (xv[at(j)] - m) / D;
    double s = 1 / std::sqrt(v + eps);
    std::vector<double> xh(D), g(D);
    double mg = 0, mgx = 0;
    for (int64_t j = 0; j < D; ++j) {
      xh[j] = (xv[at(j)] - m) * s;
      r.y[at(j)] = xh[j] * wv[j] + bv[j];
      g[j] = gv[at(j)] * wv[j];
      mg += g[j] / D;
      mgx += g[j] * xh[j] / D;
      r.dw[j] += gv[at(j)] * xh[j];
      r.db[j] += gv[at(j)];
    }
    for (int64_t j = 0; j < D; ++j) r.dx[at(j)] = s * (g[j] - (center ? mg : 0) - xh[j] * mgx);
  }
  return r;
}

}  // namespace

TEST_CASE("ops/layer_norm: gradcheck with and without affine parameters") {
  Tensor x = rnd({2, 3, 5}, 1, 0.5), w = rnd({5}, 2), b = rnd({5}, 3);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); },
                  (std::vector<Tensor>{x, w, b}));
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], Tensor()); },
                  (std::vector<Tensor>{x, w}));
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor()); },
                  (std::vector<Tensor>{x}));
  // Parameters only (x a constant) and a 1-D input.
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); },
                  (std::vector<Tensor>{x.detach(), w, b}));
  Tensor v = rnd({6}, 4);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-3); },
                  (std::vector<Tensor>{v}));
}

TEST_CASE("ops/rms_norm: gradcheck with and without weight") {
  Tensor x = rnd({2, 3, 5}, 5, 0.3), w = rnd({5}, 6);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1]); }, (std::vector<Tensor>{x, w}));
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return rms_norm(in[0], Tensor()); }, (std::vector<Tensor>{x}));
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1]); },
                  (std::vector<Tensor>{x.detach(), w}));
}

TEST_CASE("kernels/norm: layer_norm and rms_norm match naive loops, float32 and float64, TBB-split sizes") {
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dt));
    double tol = dt == DType::f32 ? 1e-4 : 1e-10, atol = dt == DType::f32 ? 1e-4 : 1e-11;
    for (Shape s : {Shape{3, 7}, Shape{8, 64, 96}, Shape{700, 33}}) {
      CAPTURE(to_string(s));
      Generator gen(9);
      int64_t D = s.back();
      Tensor x = randn(s, 0.5, 2, dt, gen), w = randn({D}, 1, 0.5, dt, gen), b = randn({D}, 0, 1, dt, gen);
      Tensor dy = randn(s, 0, 1, dt, gen);
      for (bool affine : {true, false}) {
        CAPTURE(affine);
        Tensor wa = affine ? w : Tensor(), ba = affine ? b : Tensor();
        NaiveNorm ref = naive_norm(true, x, wa, ba, dy, 1e-5);
        auto f = kernels::layer_norm_forward(x, wa, ba, 1e-5);
        CHECK_CLOSE(f.y, ref.y, tol, atol);
        auto [dx, dw, db] = kernels::layer_norm_backward(dy, x, wa, f.mean, f.rstd, true, true, true);
        CHECK_CLOSE(dx, ref.dx, tol, atol);
        CHECK_CLOSE(dw, ref.dw, tol, atol * 100);
        CHECK_CLOSE(db, ref.db, tol, atol * 100);

        NaiveNorm rr = naive_norm(false, x, wa, Tensor(), dy, 1e-5);
        auto g = kernels::rms_norm_forward(x, wa, 1e-5);
        CHECK_CLOSE(g.y, rr.y, tol, atol);
        auto [rdx, rdw] = kernels::rms_norm_backward(dy, x, wa, g.rstd, true, true);
        CHECK_CLOSE(rdx, rr.dx, tol, atol);
        CHECK_CLOSE(rdw, rr.dw, tol, atol * 100);
      }
    }
  }
}

TEST_CASE("ops/layer_norm: output rows have zero mean and unit variance") {
  Tensor x = randn({4, 256}, 3, 5);
  std::vector<double> y = layer_norm(x, Tensor(), Tensor()).to_vector();
  for (int r = 0; r < 4; ++r) {
    double m = 0, v = 0;
    for (int j = 0; j < 256; ++j) m += y[r * 256 + j] / 256;
    for (int j = 0; j < 256; ++j) v += (y[r * 256 + j] - m) * (y[r * 256 + j] - m) / 256;
    CHECK(std::abs(m) < 1e-5);
    CHECK(v == doctest::Approx(1.0).epsilon(1e-4));
  }
}

TEST_CASE("ops/dropout: gradcheck with a fixed mask") {
  Tensor x = rnd({4, 6}, 10);
  Generator gen;
  CHECK_GRADCHECK(
      [&gen](const std::vector<Tensor>& in) {
        gen.manual_seed(42);  // the same mask on every call
        return dropout(in[0], 0.4, true, gen);
      },
      std::vector<Tensor>{x});
}

TEST_CASE("ops/dropout: keep rate, scaling, determinism and eval identity") {
  const int64_t n = 200000;
  const double p = 0.3;
  Tensor x = Tensor::full({n}, 2.0);
  Generator gen(5);
  std::vector<double> y = dropout(x, p, true, gen).to_vector();
  int64_t kept = 0;
  bool scaled = true;
  for (double v : y) {
    if (v != 0) {
      ++kept;
      scaled = scaled && std::abs(v - 2.0 / (1 - p)) < 1e-5;
    }
  }
  CHECK(scaled);
  // Binomial(n, 0.7): standard deviation sqrt(n p (1 - p)) ~ 205; allow 5 of them.
  CHECK(std::abs(static_cast<double>(kept) - n * (1 - p)) < 5 * std::sqrt(n * p * (1 - p)));

  Generator g1(11), g2(11);
  CHECK(dropout(x, 0.5, true, g1).to_vector() == dropout(x, 0.5, true, g2).to_vector());

  Tensor e = dropout(x, 0.5, false, gen);
  CHECK(e.shares_storage(x));
  CHECK(dropout(x, 0.0, true, gen).shares_storage(x));
  std::vector<double> all = dropout(x, 1.0, true, gen).to_vector();
  CHECK(std::count(all.begin(), all.end(), 0.0) == n);
  CHECK_THROWS_WITH_AS(dropout(x, 1.5, true, gen), doctest::Contains("dropout: p must be in [0, 1], got 1.5"), Error);
}

TEST_CASE("ops/dropout: backward uses the forward mask") {
  Tensor x = Tensor::ones({1000}, DType::f64).set_requires_grad();
  Generator gen(3);
  Tensor y = dropout(x, 0.5, true, gen);
  backward(y, Tensor::ones({1000}, DType::f64));
  CHECK(x.grad().to_vector() == y.to_vector());
}

TEST_CASE("ops/layer_norm, rms_norm: shape errors name the op and both shapes") {
  Tensor x = Tensor::zeros({2, 5});
  CHECK_THROWS_WITH_AS(layer_norm(x, Tensor::zeros({4}), Tensor()),
                       doctest::Contains("layer_norm: weight of shape (4,) does not fit input of shape (2, 5)"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, Tensor(), Tensor::zeros({5, 1})),
                       doctest::Contains("layer_norm: bias of shape (5, 1) does not fit input of shape (2, 5)"), Error);
  CHECK_THROWS_WITH_AS(rms_norm(x, Tensor::zeros({6})),
                       doctest::Contains("rms_norm: weight of shape (6,) does not fit input of shape (2, 5)"), Error);
  CHECK_THROWS_AS(layer_norm(x, Tensor::zeros({5}, DType::f64), Tensor()), Error);
}
