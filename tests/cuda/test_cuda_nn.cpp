// GEMMs (matmul, linear, column_sum), LayerNorm / RMSNorm, dropout, the point losses, cross-entropy
// and the embedding lookup on the device against the CPU kernels on the same inputs. float64 backward
// against the CPU's float64 backward is the device gradient check; dropout's device mask is checked
// against its own Philox definition (known-answer vectors), its keep rate and its values.
#include <array>
#include <cmath>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops/embedding.h"
#include "core/cuda/matmul.h"
#include "core/cuda/nn.h"
#include "core/device.h"
#include "core/kernels/loss.h"
#include "core/kernels/matmul.h"
#include "core/kernels/norm.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

namespace {

Tensor dev(const Tensor& t) { return t.defined() ? t.to(Device::cuda) : Tensor(); }

Shape cat(Shape a, const Shape& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct Tol {
  double rtol, atol;
};

// float32 / float64 tolerances of one comparison.
Tol tol(DType d, Tol f32, Tol f64) { return d == DType::f64 ? f64 : f32; }

std::string dname(DType d) { return dtype_name(d); }

// int32 ids uniform in [0, V).
Tensor ids_cpu(const Shape& s, int64_t V, uint64_t seed) {
  Generator g(seed);
  std::vector<double> v(static_cast<size_t>(numel(s)));
  for (double& x : v) x = static_cast<double>(g.randint(static_cast<uint64_t>(V)));
  return Tensor::from_vector(v, s, DType::i32);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// matmul forward and backward (every need_* combination) of one configuration, device against CPU.
void check_matmul(const Shape& lead, int64_t M, int64_t K, int64_t N, bool ta, bool tb, bool shared, DType d,
                  Tol t, uint64_t seed) {
  const Shape sa = cat(lead, ta ? Shape{K, M} : Shape{M, K});
  const Shape sb = cat(shared ? Shape{} : lead, tb ? Shape{N, K} : Shape{K, N});
  const std::string what = str("matmul ", to_string(sa), " @ ", to_string(sb), " ta=", ta, " tb=", tb, " ", dname(d));
  Tensor a = rand_cpu(sa, seed, d), b = rand_cpu(sb, seed + 1, d);
  Tensor y = kernels::matmul_forward(a, b, ta, tb);
  Tensor yg = kernels::matmul_forward(dev(a), dev(b), ta, tb);
  CHECK(yg.device() == Device::cuda);
  check_close(yg, y, t.rtol, t.atol, what + " forward");
  Tensor dy = rand_cpu(y.shape(), seed + 2, d);
  for (auto [need_a, need_b] : {std::pair{true, true}, {true, false}, {false, true}}) {
    auto g = kernels::matmul_backward(dy, a, b, sa, sb, ta, tb, need_a, need_b);
    // a is read only for db and b only for da: pass the device copy only where it is read.
    auto gg = kernels::matmul_backward(dev(dy), need_b ? dev(a) : Tensor(), need_a ? dev(b) : Tensor(), sa, sb, ta,
                                       tb, need_a, need_b);
    check_close(gg[0], g[0], t.rtol, t.atol, what + " da");
    check_close(gg[1], g[1], t.rtol, t.atol, what + " db");
  }
}

void check_norm(bool layer, const Shape& s, bool with_w, bool with_b, DType d, uint64_t seed) {
  const std::string what = str(layer ? "layer_norm " : "rms_norm ", to_string(s), " w=", with_w, " b=", with_b, " ",
                               dname(d));
  const int64_t D = s.back();
  Tensor x = rand_cpu(s, seed, d, -2, 3);
  Tensor w = with_w ? rand_cpu({D}, seed + 1, d, 0.5, 1.5) : Tensor();
  Tensor b = with_b ? rand_cpu({D}, seed + 2, d) : Tensor();
  Tensor dy = rand_cpu(s, seed + 3, d);
  const double eps = 1e-5;
  const Tol ty = tol(d, {1e-5, 1e-5}, {1e-11, 1e-12});
  const Tol tstat = {1e-12, 1e-14};  // mean / rstd are float64 either way
  const Tol tg = tol(d, {1e-4, 2e-5}, {1e-10, 1e-12});
  if (layer) {
    auto f = kernels::layer_norm_forward(x, w, b, eps);
    auto fg = kernels::layer_norm_forward(dev(x), dev(w), dev(b), eps);
    check_close(fg.y, f.y, ty.rtol, ty.atol, what + " y");
    check_close(fg.mean, f.mean, tstat.rtol, tstat.atol, what + " mean");
    check_close(fg.rstd, f.rstd, tstat.rtol, tstat.atol, what + " rstd");
    for (auto [nx, nw, nb] : {std::tuple{true, true, true}, {true, false, false}, {false, true, true}}) {
      if (!with_w && nw) nw = false;
      if (!with_b && nb) nb = false;
      auto g = kernels::layer_norm_backward(dy, x, w, f.mean, f.rstd, nx, nw, nb);
      auto gg = kernels::layer_norm_backward(dev(dy), dev(x), dev(w), fg.mean, fg.rstd, nx, nw, nb);
      check_close(gg[0], g[0], tg.rtol, tg.atol, what + " dx");
      check_close(gg[1], g[1], tg.rtol, tg.atol, what + " dw");
      check_close(gg[2], g[2], tg.rtol, tg.atol, what + " db");
    }
  } else {
    auto f = kernels::rms_norm_forward(x, w, eps);
    auto fg = kernels::rms_norm_forward(dev(x), dev(w), eps);
    check_close(fg.y, f.y, ty.rtol, ty.atol, what + " y");
    CHECK(!fg.mean.defined());
    check_close(fg.rstd, f.rstd, tstat.rtol, tstat.atol, what + " rstd");
    for (auto [nx, nw] : {std::pair{true, true}, {true, false}, {false, true}}) {
      if (!with_w && nw) nw = false;
      auto g = kernels::rms_norm_backward(dy, x, w, f.rstd, nx, nw);
      auto gg = kernels::rms_norm_backward(dev(dy), dev(x), dev(w), fg.rstd, nx, nw);
      check_close(gg[0], g[0], tg.rtol, tg.atol, what + " dx");
      check_close(gg[1], g[1], tg.rtol, tg.atol, what + " dw");
    }
  }
}

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda nn: matmul 2-D - batched and shared - every transpose - forward and backward") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType d : {DType::f32, DType::f64}) {
    const Tol t = tol(d, {1e-4, 2e-5}, {1e-12, 1e-12});
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        check_matmul({}, 37, 45, 29, ta, tb, false, d, t, seed += 3);
        check_matmul({3}, 33, 17, 65, ta, tb, false, d, t, seed += 3);
        check_matmul({2, 3}, 19, 40, 21, ta, tb, false, d, t, seed += 3);
        check_matmul({2, 3}, 19, 40, 21, ta, tb, true, d, t, seed += 3);  // shared (K, N): db sums the batch
        check_matmul({5}, 1, 7, 1, ta, tb, true, d, t, seed += 3);
        check_matmul({4}, 6, 0, 5, ta, tb, false, d, t, seed += 3);  // empty inner axis: zeros
      }
  }
  // A product large enough for several cuBLAS tiles each way.
  check_matmul({}, 130, 257, 300, false, true, false, DType::f32, {1e-4, 1e-4}, 7);
  check_matmul({2}, 130, 257, 300, true, false, true, DType::f32, {1e-4, 1e-4}, 8);
}

TEST_CASE("cuda nn: TF32 and bfloat16 GEMMs (set_matmul_precision) - close to float32 but not identical - strict again when switched back") {
  SEQLAB_REQUIRE_GPU();
  using cuda::MatmulPrecision;
  Tensor a = rand_cpu({256, 512}, 11), b = rand_cpu({512, 192}, 12);
  Tensor ref = kernels::matmul_forward(a.to(DType::f64), b.to(DType::f64), false, false);  // exact enough
  REQUIRE(cuda::matmul_precision() == MatmulPrecision::highest);
  auto product = [&] { return kernels::matmul_forward(dev(a), dev(b), false, false).to(Device::cpu); };
  // the strided batched path too: two products, no shared operand
  Tensor a2 = rand_cpu({2, 256, 512}, 13), b2 = rand_cpu({2, 512, 192}, 14);
  Tensor ref2 = kernels::matmul_forward(a2.to(DType::f64), b2.to(DType::f64), false, false);
  auto batched = [&] { return kernels::matmul_forward(dev(a2), dev(b2), false, false).to(Device::cpu); };
  const Tensor strict = product(), strict_b = batched();
  cuda::set_matmul_precision(MatmulPrecision::high);
  CHECK(cuda::matmul_precision() == MatmulPrecision::high);
  const Tensor t32 = product();
  cuda::set_matmul_precision(MatmulPrecision::medium);
  CHECK(cuda::matmul_precision() == MatmulPrecision::medium);
  const Tensor bf = product(), bf_b = batched();
  cuda::set_matmul_precision(MatmulPrecision::highest);
  const Tensor again = product();
  auto worst = [&](const Tensor& x) {
    std::vector<double> u = x.to_vector(), r = (x.dim() == 3 ? ref2 : ref).to_vector();
    REQUIRE(u.size() == r.size());
    double w = 0;
    for (size_t i = 0; i < u.size(); ++i) w = std::max(w, std::abs(u[i] - r[i]));
    return w;
  };
  // Entries are sums of 512 products of U(-1, 1) values (|entry| ~ 7): float32 rounds at ~1e-6 of
  // that, TF32's 10-bit inputs at ~1e-3 relative per product, bfloat16's 7-bit inputs at ~8e-3.
  CHECK(worst(strict) < 1e-4);
  CHECK(worst(strict_b) < 1e-4);
  CHECK(worst(t32) > 1e-4);
  CHECK(worst(t32) < 5e-2);
  // CUBLAS_COMPUTE_32F_FAST_16BF allows bfloat16 and cuBLAS may still pick a TF32 kernel: on an H100
  // (session 16) this 2-D product gave TF32's error exactly, the batched one bfloat16's.
  CHECK(worst(bf) >= worst(t32));
  CHECK(worst(bf) < 0.3);
  CHECK(worst(bf_b) > 1e-3);
  CHECK(worst(bf_b) < 0.3);
  CHECK(again.to_vector() == strict.to_vector());
  CHECK(cuda::matmul_precision_of("medium") == MatmulPrecision::medium);
  CHECK(cuda::matmul_precision_of("high") == MatmulPrecision::high);
  CHECK(cuda::matmul_precision_of("highest") == MatmulPrecision::highest);
}

TEST_CASE("cuda nn: matmul shape errors match the CPU's") {
  SEQLAB_REQUIRE_GPU();
  Tensor a = rand_cpu({3, 4}, 1), b = rand_cpu({5, 6}, 2);
  std::string cpu = error_of([&] { kernels::matmul_forward(a, b, false, false); });
  std::string gpu = error_of([&] { kernels::matmul_forward(dev(a), dev(b), false, false); });
  CHECK(cpu.find("do not multiply") != std::string::npos);
  CHECK(gpu == cpu);
}

TEST_CASE("cuda nn: linear forward and backward - with and without bias") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64}) {
    const Tol t = tol(d, {1e-4, 2e-5}, {1e-12, 1e-12});
    for (bool with_b : {true, false}) {
      const std::string what = str("linear ", dname(d), " bias=", with_b);
      Tensor x = rand_cpu({2, 37, 50}, 11, d), w = rand_cpu({70, 50}, 12, d);
      Tensor b = with_b ? rand_cpu({70}, 13, d) : Tensor();
      Tensor y = kernels::linear_forward(x, w, b);
      Tensor yg = kernels::linear_forward(dev(x), dev(w), dev(b));
      check_close(yg, y, t.rtol, t.atol, what + " forward");
      Tensor dy = rand_cpu(y.shape(), 14, d);
      for (auto [nx, nw, nb] : {std::tuple{true, true, true}, {true, false, false}, {false, true, true}}) {
        auto g = kernels::linear_backward(dy, x, w, nx, nw, nb);
        auto gg = kernels::linear_backward(dev(dy), nw ? dev(x) : Tensor(), nx ? dev(w) : Tensor(), nx, nw, nb);
        check_close(gg[0], g[0], t.rtol, t.atol, what + " dx");
        check_close(gg[1], g[1], t.rtol, t.atol, what + " dw");
        check_close(gg[2], g[2], t.rtol, t.atol, what + " db");
      }
    }
  }
  // No input features: y is the bias broadcast.
  Tensor x = Tensor::zeros({3, 0}), w = Tensor::zeros({4, 0}), b = rand_cpu({4}, 15);
  check_close(kernels::linear_forward(dev(x), dev(w), dev(b)), kernels::linear_forward(x, w, b), 0, 1e-30,
              "linear in = 0");
}

TEST_CASE("cuda nn: column_sum over many row chunks and odd widths") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64}) {
    const Tol t = tol(d, {1e-6, 1e-6}, {1e-12, 1e-12});
    for (auto [R, C] : {std::pair<int64_t, int64_t>{1000, 37}, {70001, 3}, {5, 300}, {1, 1}}) {
      Tensor x = rand_cpu({R, C}, 20 + R, d);
      check_close(cuda::column_sum(dev(x), C), kernels::column_sum(x, C), t.rtol, t.atol,
                  str("column_sum ", R, "x", C, " ", dname(d)));
    }
    Tensor e = Tensor::zeros({0, 5}, d);
    check_close(kernels::column_sum(dev(e), 5), kernels::column_sum(e, 5), 0, 1e-30, "column_sum of no rows");
  }
}

TEST_CASE("cuda nn: layer_norm forward and backward") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 300;
  for (DType d : {DType::f32, DType::f64})
    for (const Shape& s : {Shape{5, 7, 33}, Shape{300, 300}, Shape{2, 1000}, Shape{64, 5}, Shape{2000, 16}})
      for (auto [w, b] : {std::pair{true, true}, {false, false}, {true, false}})
        check_norm(true, s, w, b, d, seed += 5);
}

TEST_CASE("cuda nn: rms_norm forward and backward") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 400;
  for (DType d : {DType::f32, DType::f64})
    for (const Shape& s : {Shape{5, 7, 33}, Shape{300, 300}, Shape{2, 1000}, Shape{64, 5}, Shape{2000, 16}})
      for (bool w : {true, false}) check_norm(false, s, w, false, d, seed += 5);
}

TEST_CASE("cuda nn: Philox4x32-10 known-answer vectors") {
  SEQLAB_REQUIRE_GPU();
  using A4 = std::array<uint32_t, 4>;
  CHECK(cuda::philox4x32_10({0, 0, 0, 0}, {0, 0}) == A4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(cuda::philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        A4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(cuda::philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        A4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("cuda nn: dropout mask: values - keep rate - the seed - and apply_mask") {
  SEQLAB_REQUIRE_GPU();
  const int64_t n = int64_t{1} << 20;
  for (DType d : {DType::f32, DType::f64})
    for (double p : {0.3, 0.9}) {
      const std::string what = str("dropout p=", p, " ", dname(d));
      Generator g(7), ref(7);
      Tensor m = kernels::dropout_mask({1024, 1024}, d, p, g, Device::cuda);
      REQUIRE(m.device() == Device::cuda);
      CHECK(m.shape() == Shape{1024, 1024});
      CHECK(m.dtype() == d);
      const uint64_t seed = ref.next_u64();
      CHECK(g.next_u64() == ref.next_u64());  // exactly one draw per call
      const double keep = d == DType::f32 ? static_cast<double>(static_cast<float>(1.0 / (1.0 - p))) : 1.0 / (1.0 - p);
      std::vector<double> v = m.to_vector();
      int64_t kept = 0, wrong = 0, mismatched = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double x = v[static_cast<size_t>(i)];
        if (x == keep) ++kept;
        else if (x != 0) ++wrong;
        const double want = cuda::philox_uniform(seed, static_cast<uint64_t>(i)) < p ? 0.0 : keep;
        if (x != want) ++mismatched;
      }
      CHECK_MESSAGE(wrong == 0, what);
      CHECK_MESSAGE(mismatched == 0, what);
      const double rate = static_cast<double>(kept) / static_cast<double>(n);
      const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(n));
      CHECK_MESSAGE(std::abs(rate - (1 - p)) < 5 * sigma, what << ": keep rate " << rate);
      // The same seed gives the same mask; another seed another one.
      Generator g2(7), g3(8);
      CHECK(kernels::dropout_mask({1024, 1024}, d, p, g2, Device::cuda).to_vector() == v);
      CHECK(kernels::dropout_mask({1024, 1024}, d, p, g3, Device::cuda).to_vector() != v);
      // apply_mask: one product per element, as the CPU.
      Tensor x = rand_cpu({1024, 1024}, 9, d);
      Tensor mc = m.to(Device::cpu);
      CHECK(kernels::apply_mask(dev(x), m).to_vector() == kernels::apply_mask(x, mc).to_vector());
    }
  // p = 0 keeps all (ones), p = 1 drops all; odd sizes; the CPU overload for Device::cpu.
  Generator g(3);
  CHECK(kernels::dropout_mask({1000, 3}, DType::f32, 0.0, g, Device::cuda).to_vector() ==
        std::vector<double>(3000, 1.0));
  CHECK(kernels::dropout_mask({7, 33}, DType::f32, 1.0, g, Device::cuda).to_vector() ==
        std::vector<double>(231, 0.0));
  Generator c1(5), c2(5);
  Tensor mcpu = kernels::dropout_mask({17, 5}, DType::f32, 0.5, c1, Device::cpu);
  CHECK(mcpu.device() == Device::cpu);
  CHECK(mcpu.to_vector() == kernels::dropout_mask({17, 5}, DType::f32, 0.5, c2).to_vector());
  CHECK(error_of([&] { kernels::dropout_mask({4}, DType::f32, 1.5, g, Device::cuda); }) ==
        error_of([&] { kernels::dropout_mask({4}, DType::f32, 1.5, g); }));
}

TEST_CASE("cuda nn: mse - l1 and huber losses - forward and backward") {
  SEQLAB_REQUIRE_GPU();
  using kernels::PointLoss;
  for (DType d : {DType::f32, DType::f64})
    for (PointLoss kind : {PointLoss::mse, PointLoss::l1, PointLoss::huber})
      for (int64_t n : {int64_t{50001}, int64_t{31}}) {
        const std::string what = str("loss ", static_cast<int>(kind), " n=", n, " ", dname(d));
        Tensor pred = rand_cpu({n}, 30 + n, d);
        std::vector<double> tv = rand_cpu({n}, 31 + n, d).to_vector(), pv = pred.to_vector();
        for (int64_t i = 0; i < n; i += 7) tv[static_cast<size_t>(i)] = pv[static_cast<size_t>(i)];  // d = 0
        Tensor target = Tensor::from_vector(tv, {n}, d);
        const double delta = 0.5;
        const Tol tf = tol(d, {1e-6, 1e-7}, {1e-12, 1e-14});
        Tensor y = kernels::point_loss_forward(kind, pred, target, delta, "loss");
        Tensor yg = kernels::point_loss_forward(kind, dev(pred), dev(target), delta, "loss");
        CHECK(yg.shape() == Shape{});
        check_close(yg, y, tf.rtol, tf.atol, what + " forward");
        Tensor dy = Tensor::scalar(0.7, d);
        const Tol tb = tol(d, {1e-6, 1e-12}, {1e-14, 1e-18});
        for (auto [np, nt] : {std::pair{true, true}, {true, false}, {false, true}, {false, false}}) {
          auto g = kernels::point_loss_backward(kind, dy, pred, target, delta, np, nt);
          auto gg = kernels::point_loss_backward(kind, dev(dy), dev(pred), dev(target), delta, np, nt);
          check_close(gg[0], g[0], tb.rtol, tb.atol, what + " dpred");
          check_close(gg[1], g[1], tb.rtol, tb.atol, what + " dtarget");
        }
      }
  // The mean of nothing is NaN on both; a bad delta is the same error.
  Tensor e = Tensor::zeros({0});
  CHECK(std::isnan(kernels::point_loss_forward(PointLoss::mse, dev(e), dev(e), 0, "mse_loss").item()));
  Tensor a = rand_cpu({4}, 1), b = rand_cpu({4}, 2);
  CHECK(error_of([&] { kernels::point_loss_forward(PointLoss::huber, dev(a), dev(b), -1, "huber_loss"); }) ==
        error_of([&] { kernels::point_loss_forward(PointLoss::huber, a, b, -1, "huber_loss"); }));
}

TEST_CASE("cuda nn: cross_entropy with ignore_index - forward and backward") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64})
    for (auto [N, V] : {std::pair<int64_t, int64_t>{300, 37}, {17, 1000}, {1, 1}, {2000, 5}})
      for (int ignore : {-100, 3}) {
        const std::string what = str("cross_entropy N=", N, " V=", V, " ignore=", ignore, " ", dname(d));
        Tensor x = rand_cpu({N, V}, 50 + N, d, -4, 4);
        std::vector<double> tv = ids_cpu({N}, V, 51 + N).to_vector();
        for (int64_t i = 0; i < N; i += 5) tv[static_cast<size_t>(i)] = ignore;
        Tensor t = Tensor::from_vector(tv, {N}, DType::i32);
        auto f = kernels::cross_entropy_forward(x, t, ignore);
        auto fg = kernels::cross_entropy_forward(dev(x), dev(t), ignore);
        CHECK_MESSAGE(fg.count == f.count, what);
        check_close(fg.loss, f.loss, tol(d, {1e-6, 1e-7}, {1e-12, 1e-14}).rtol,
                    tol(d, {1e-6, 1e-7}, {1e-12, 1e-14}).atol, what + " loss");
        check_close(fg.lse, f.lse, 1e-12, 1e-14, what + " lse");
        Tensor dy = Tensor::scalar(1.3, d);
        const Tol tb = tol(d, {1e-6, 1e-12}, {1e-11, 1e-16});
        check_close(kernels::cross_entropy_backward(dev(dy), dev(x), dev(t), fg.lse, fg.count, ignore),
                    kernels::cross_entropy_backward(dy, x, t, f.lse, f.count, ignore), tb.rtol, tb.atol,
                    what + " dlogits");
      }
  // Every row ignored: loss 0, count 0, zero gradients.
  Tensor x = rand_cpu({6, 9}, 60), t = Tensor::full({6}, -100, DType::i32);
  auto fg = kernels::cross_entropy_forward(dev(x), dev(t), -100);
  CHECK(fg.count == 0);
  CHECK(fg.loss.item() == 0);
  CHECK(kernels::cross_entropy_backward(dev(Tensor::scalar(1)), dev(x), dev(t), fg.lse, 0, -100).to_vector() ==
        std::vector<double>(54, 0.0));
  // A target out of range: the CPU's message, naming the first bad row.
  std::vector<double> tv(200, 2.0);
  tv[150] = 9;
  tv[170] = -1;
  Tensor bad = Tensor::from_vector(tv, {200}, DType::i32);
  Tensor xb = rand_cpu({200, 9}, 61);
  std::string cpu = error_of([&] { kernels::cross_entropy_forward(xb, bad, -100); });
  CHECK(cpu.find("target 9 at row 150") != std::string::npos);
  CHECK(error_of([&] { kernels::cross_entropy_forward(dev(xb), dev(bad), -100); }) == cpu);
}

TEST_CASE("cuda nn: embedding gather and scatter-add backward") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64})
    for (auto [V, D, S] : {std::tuple<int64_t, int64_t, Shape>{50, 40, Shape{3, 70}}, {1000, 300, Shape{4, 130}},
                           {7, 1, Shape{600}}}) {
      const std::string what = str("embedding V=", V, " D=", D, " ids ", to_string(S), " ", dname(d));
      Tensor w = rand_cpu({V, D}, 70 + V, d), ids = ids_cpu(S, V, 71 + V);
      Tensor wc = w.clone().set_requires_grad(), wg = dev(w).set_requires_grad();
      Tensor y = embedding(wc, ids), yg = embedding(wg, dev(ids));
      REQUIRE(yg.device() == Device::cuda);
      CHECK_MESSAGE(yg.to_vector() == y.to_vector(), what << " forward");
      Tensor dy = rand_cpu(y.shape(), 72 + V, d);
      backward(y, dy);
      backward(yg, dev(dy));
      REQUIRE(wg.grad().defined());
      CHECK(wg.grad().device() == Device::cuda);
      const Tol t = tol(d, {1e-6, 1e-7}, {1e-14, 1e-15});
      check_close(wg.grad(), wc.grad(), t.rtol, t.atol, what + " dweight (autograd)");
      check_close(cuda::embedding_backward(dev(dy), dev(ids), V, D), wc.grad(), t.rtol, t.atol,
                  what + " dweight (kernel)");
    }
  // An id out of range: the CPU's message, naming the first bad position.
  Tensor w = rand_cpu({10, 4}, 80);
  std::vector<double> iv(700, 1.0);
  iv[555] = 10;
  iv[600] = -3;
  Tensor ids = Tensor::from_vector(iv, {7, 100}, DType::i32);
  std::string cpu = error_of([&] { embedding(w, ids); });
  CHECK(cpu.find("id 10 at position 555") != std::string::npos);
  CHECK(error_of([&] { embedding(dev(w), dev(ids)); }) == cpu);
}

TEST_CASE("cuda nn: the same device computation twice gives bit-identical results") {
  SEQLAB_REQUIRE_GPU();
  Tensor a = dev(rand_cpu({4, 65, 130}, 90)), b = dev(rand_cpu({130, 47}, 91));
  Tensor x = dev(rand_cpu({3000, 77}, 92)), w = dev(rand_cpu({77}, 93)), bb = dev(rand_cpu({77}, 94));
  Tensor dy = dev(rand_cpu({3000, 77}, 95));
  Tensor logits = dev(rand_cpu({500, 300}, 96)), t = dev(ids_cpu({500}, 300, 97));
  Tensor ids = dev(ids_cpu({2000}, 300, 98)), dye = dev(rand_cpu({2000, 77}, 99));
  auto run = [&] {
    std::vector<std::vector<double>> out;
    Tensor y = kernels::matmul_forward(a, b, false, false);
    auto gm = kernels::matmul_backward(y, a, b, a.shape(), b.shape(), false, false, true, true);
    out.push_back(y.to_vector());
    out.push_back(gm[1].to_vector());
    out.push_back(kernels::column_sum(x, 77).to_vector());
    auto f = kernels::layer_norm_forward(x, w, bb, 1e-5);
    auto g = kernels::layer_norm_backward(dy, x, w, f.mean, f.rstd, true, true, true);
    for (const Tensor& r : {f.y, g[0], g[1], g[2]}) out.push_back(r.to_vector());
    auto fr = kernels::rms_norm_forward(x, w, 1e-5);
    auto gr = kernels::rms_norm_backward(dy, x, w, fr.rstd, true, true);
    for (const Tensor& r : {fr.y, gr[0], gr[1]}) out.push_back(r.to_vector());
    auto ce = kernels::cross_entropy_forward(logits, t, -100);
    out.push_back(ce.loss.to_vector());
    out.push_back(kernels::cross_entropy_backward(Tensor::scalar(1, DType::f32, Device::cuda), logits, t, ce.lse,
                                                  ce.count, -100)
                      .to_vector());
    out.push_back(kernels::point_loss_forward(kernels::PointLoss::huber, x, dy, 0.3, "huber_loss").to_vector());
    out.push_back(cuda::embedding_backward(dye, ids, 300, 77).to_vector());
    Generator gen(11);
    out.push_back(kernels::dropout_mask({999, 7}, DType::f32, 0.2, gen, Device::cuda).to_vector());
    return out;
  };
  auto r1 = run(), r2 = run();
  REQUIRE(r1.size() == r2.size());
  for (size_t i = 0; i < r1.size(); ++i) CHECK_MESSAGE(r1[i] == r2[i], "result " << i << " differs between runs");
}

}  // TEST_SUITE
