// Losses: float64 gradchecks (both arguments; cross-entropy with ignored positions), values against
// hand-computed and naive references in float32 and float64, and the error messages.
#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops/loss.h"
#include "core/kernels/loss.h"
#include "core/random.h"
#include "testing.h"

using namespace seqlab;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, double std = 1) {
  Generator gen(seed);
  return randn(s, 0, std, DType::f64, gen).set_requires_grad();
}

Tensor targets(const std::vector<double>& t) {
  return Tensor::from_vector(t, {static_cast<int64_t>(t.size())}, DType::i32);
}

// Naive mean cross-entropy over non-ignored rows.
double naive_ce(const Tensor& logits, const std::vector<double>& t, int ignore) {
  int64_t N = logits.size(0), V = logits.size(1);
  std::vector<double> x = logits.to_vector();
  double s = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (static_cast<int>(t[static_cast<size_t>(i)]) == ignore) continue;
    double m = -INFINITY, z = 0;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, x[static_cast<size_t>(i * V + j)]);
    for (int64_t j = 0; j < V; ++j) z += std::exp(x[static_cast<size_t>(i * V + j)] - m);
    s += m + std::log(z) - x[static_cast<size_t>(i * V + static_cast<int64_t>(t[static_cast<size_t>(i)]))];
    ++count;
  }
  return s / static_cast<double>(count);
}

}  // namespace

TEST_CASE("ops/mse_loss: gradcheck") {
  Tensor p = rnd({3, 4}, 1), t = rnd({3, 4}, 2);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return mse_loss(in[0], in[1]); }, (std::vector<Tensor>{p, t}));
}

TEST_CASE("ops/l1_loss: gradcheck") {
  Tensor p = rnd({3, 4}, 3), t = rnd({3, 4}, 4);  // no difference within eps of the kink at 0
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return l1_loss(in[0], in[1]); }, (std::vector<Tensor>{p, t}));
}

TEST_CASE("ops/huber_loss: gradcheck on both branches") {
  Tensor p = rnd({4, 5}, 5, 1.5), t = rnd({4, 5}, 6, 1.5);  // differences on both sides of delta
  std::vector<double> pv = p.to_vector(), tv = t.to_vector();
  int below = 0, above = 0;
  for (size_t i = 0; i < pv.size(); ++i) (std::abs(pv[i] - tv[i]) < 1.0 ? below : above)++;
  CHECK(below > 0);
  CHECK(above > 0);
  for (double delta : {1.0, 0.5}) {
    CHECK_GRADCHECK([delta](const std::vector<Tensor>& in) { return huber_loss(in[0], in[1], delta); },
                    (std::vector<Tensor>{p, t}));
  }
}

TEST_CASE("ops/huber_loss: PyTorch HuberLoss values") {
  Tensor p = Tensor::from_vector({0.5, 2.0, -3.0}, {3}, DType::f64), t = Tensor::zeros({3}, DType::f64);
  // torch.nn.HuberLoss(delta=1)([0.5, 2, -3], 0) = mean(0.125, 1.5, 2.5)
  CHECK(huber_loss(p, t, 1.0).item() == doctest::Approx(4.125 / 3));
  // delta = 2: mean(0.125, 2 (the two branches meet at |d| = delta), 4)
  CHECK(huber_loss(p, t, 2.0).item() == doctest::Approx(6.125 / 3));
  CHECK(mse_loss(p, t).item() == doctest::Approx((0.25 + 4 + 9) / 3));
  CHECK(l1_loss(p, t).item() == doctest::Approx(5.5 / 3));
}

TEST_CASE("kernels/loss: point losses match naive loops, float32 and float64, TBB-split sizes") {
  using kernels::PointLoss;
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dt));
    Generator gen(7);
    Tensor p = randn({300, 257}, 0, 2, dt, gen), t = randn({300, 257}, 0, 2, dt, gen);
    std::vector<double> pv = p.to_vector(), tv = t.to_vector();
    double n = static_cast<double>(pv.size()), tol = dt == DType::f32 ? 1e-5 : 1e-12;
    for (PointLoss k : {PointLoss::mse, PointLoss::l1, PointLoss::huber}) {
      double s = 0;
      std::vector<double> grad(pv.size());
      for (size_t i = 0; i < pv.size(); ++i) {
        double d = pv[i] - tv[i], a = std::abs(d);
        s += k == PointLoss::mse ? d * d : k == PointLoss::l1 ? a : (a < 1.5 ? 0.5 * d * d : 1.5 * (a - 0.75));
        grad[i] = (k == PointLoss::mse ? 2 * d : k == PointLoss::l1 ? (d > 0) - (d < 0) : std::clamp(d, -1.5, 1.5)) * 3 / n;
      }
      CHECK(kernels::point_loss_forward(k, p, t, 1.5, "loss").item() == doctest::Approx(s / n).epsilon(tol));
      auto [dp, dt_] = kernels::point_loss_backward(k, Tensor::scalar(3, dt), p, t, 1.5, true, true);
      CHECK_CLOSE(dp, grad, tol, 1e-12);
      for (double& g : grad) g = -g;
      CHECK_CLOSE(dt_, grad, tol, 1e-12);
    }
  }
}

TEST_CASE("ops/cross_entropy: gradcheck with ignored positions") {
  Tensor x = rnd({5, 4}, 8);
  for (auto [tv, ignore] : std::vector<std::pair<std::vector<double>, int>>{
           {{1, 0, 3, 2, 1}, -100},          // nothing ignored
           {{-100, 0, 3, -100, 1}, -100},    // first and middle rows ignored
           {{2, 0, 3, 1, 7}, 7},             // last row ignored, custom index
           {{2, 2, 3, 1, 2}, 2}}) {          // ignore_index inside [0, V): those rows are skipped
    CAPTURE(ignore);
    Tensor t = targets(tv);
    auto f = [t, ignore](const std::vector<Tensor>& in) { return cross_entropy(in[0], t, ignore); };
    CHECK_GRADCHECK(f, std::vector<Tensor>{x});
    CHECK(cross_entropy(x.detach(), t, ignore).item() == doctest::Approx(naive_ce(x, tv, ignore)).epsilon(1e-12));
  }
}

TEST_CASE("ops/cross_entropy: every row ignored gives loss 0 and a zero gradient") {
  Tensor x = rnd({3, 4}, 9);
  Tensor loss = cross_entropy(x, targets({-100, -100, -100}));
  CHECK(loss.item() == 0.0);
  backward(loss);
  for (double g : x.grad().to_vector()) CHECK(g == 0.0);
}

TEST_CASE("kernels/cross_entropy: matches naive loops, float32 and float64, TBB-split sizes") {
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dt));
    Generator gen(10);
    const int64_t N = 300, V = 1000;
    Tensor x = randn({N, V}, 0, 3, dt, gen);
    std::vector<double> tv(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) tv[static_cast<size_t>(i)] = i % 7 == 0 ? -1 : static_cast<double>(gen.randint(V));
    Tensor t = targets(tv);
    auto f = kernels::cross_entropy_forward(x, t, -1);
    CHECK(f.count == N - (N + 6) / 7);
    double tol = dt == DType::f32 ? 1e-6 : 1e-12;
    CHECK(f.loss.item() == doctest::Approx(naive_ce(x, tv, -1)).epsilon(tol));
    Tensor dx = kernels::cross_entropy_backward(Tensor::scalar(2, dt), x, t, f.lse, f.count, -1);
    // Naive: (softmax - onehot) * 2 / count on kept rows.
    std::vector<double> xv = x.to_vector(), ref(xv.size(), 0.0);
    for (int64_t i = 0; i < N; ++i) {
      if (tv[static_cast<size_t>(i)] == -1) continue;
      double m = -INFINITY, z = 0;
      for (int64_t j = 0; j < V; ++j) m = std::max(m, xv[static_cast<size_t>(i * V + j)]);
      for (int64_t j = 0; j < V; ++j) z += std::exp(xv[static_cast<size_t>(i * V + j)] - m);
      for (int64_t j = 0; j < V; ++j)
        ref[static_cast<size_t>(i * V + j)] =
            (std::exp(xv[static_cast<size_t>(i * V + j)] - m) / z - (j == tv[static_cast<size_t>(i)])) * 2 /
            static_cast<double>(f.count);
    }
    CHECK_CLOSE(dx, ref, tol * 10, 1e-12);
  }
}

TEST_CASE("ops/losses: errors name the op, the shapes and the bad target") {
  Tensor p = Tensor::zeros({2, 3}), t = Tensor::zeros({3, 2});
  CHECK_THROWS_WITH_AS(mse_loss(p, t), doctest::Contains("mse_loss: pred of shape (2, 3) and target of shape (3, 2)"),
                       Error);
  CHECK_THROWS_WITH_AS(l1_loss(p, t), doctest::Contains("l1_loss: pred of shape (2, 3)"), Error);
  CHECK_THROWS_WITH_AS(huber_loss(p, t), doctest::Contains("huber_loss: pred of shape (2, 3)"), Error);
  CHECK_THROWS_WITH_AS(huber_loss(p, p, 0.0), doctest::Contains("delta must be > 0"), Error);
  Tensor logits = Tensor::zeros({2, 4});
  CHECK_THROWS_WITH_AS(cross_entropy(logits, targets({1, 4})),
                       doctest::Contains("target 4 at row 1 is out of range for V = 4"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, targets({-1, 0})), doctest::Contains("target -1 at row 0"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, targets({1, 2, 3})),
                       doctest::Contains("logits of shape (2, 4) need targets of shape (2,), got (3,)"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::zeros({2})), doctest::Contains("targets must be int32"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(Tensor::zeros({2, 3, 4}), targets({1, 2})),
                       doctest::Contains("logits must be (N, V), got shape (2, 3, 4)"), Error);
}
