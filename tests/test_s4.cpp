// LSSL and S4 (layers/s4, autograd/ops/s4, core/kernels/{s4,hippo}): HiPPO-LegS values and its DPLR
// decomposition, float64 gradchecks of both kernel ops and both layers (input and every parameter),
// the S4 generating-function kernel against powers of the dense discretised DPLR matrix, LSSL against
// S4 in the LegS eigenbasis, step mode against the parallel forward, PyTorch reference values
// (tests/fixtures/gen_s4.py), options and the registry.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <complex>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/ops/s4.h"
#include "core/kernels/hippo.h"
#include "core/kernels/s4.h"
#include "core/random.h"
#include "fixtures.h"
#include "layers/registry.h"
#include "layers/s4.h"
#include "layers/s4d.h"
#include "testing.h"

using namespace seqlab;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
using cd = std::complex<double>;

double max_rel(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double md = 0, mb = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    md = std::max(md, std::abs(x[i] - y[i]));
    mb = std::max(mb, std::abs(y[i]));
  }
  return md / std::max(mb, 1e-12);
}

std::vector<Tensor> leaves(const std::vector<Tensor>& xs, DType dt) {
  std::vector<Tensor> out;
  for (const Tensor& x : xs) out.push_back(x.to(dt).set_requires_grad());
  return out;
}

// S4 kernel parameters away from the init: dt where the kernel varies within a few steps.
struct S4Params {
  Tensor log_dt, log_A_real, A_imag, P, B, C;
  std::vector<Tensor> all() const { return {log_dt, log_A_real, A_imag, P, B, C}; }
};
S4Params s4params(int64_t D, int64_t M, uint64_t seed, DType dt = DType::f64) {
  Generator gen(seed);
  S4Params p;
  p.log_dt = rand_uniform({D}, std::log(0.1), std::log(0.6), dt, gen);
  p.log_A_real = randn({D, M}, std::log(0.5), 0.3, dt, gen);
  p.A_imag = randn({D, M}, 0.0, 2.0, dt, gen);
  p.P = randn({D, M, 2}, 0, 0.5, dt, gen);
  p.B = randn({D, M, 2}, 0, 0.7, dt, gen);
  p.C = randn({D, M, 2}, 0, 0.7, dt, gen);
  return p;
}

template <typename L>
void set_log_dt(L& layer, double lo, double hi, DType dt) {
  NoGradGuard ng;  // a dt range where the kernel varies over the few test steps
  Tensor p = layer.named_parameters()[0].tensor;  // a handle sharing the storage
  p.copy_from(rand_uniform(p.shape(), std::log(lo), std::log(hi), dt));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs step() over the time axis of x and returns the stacked outputs, (B, T, D) flattened.
std::vector<double> stepped(nn::SequenceLayer& layer, const Tensor& x, DType dt) {
  int64_t B = x.size(0), T = x.size(1), D = x.size(2);
  nn::StepState st = layer.init_state(B, dt);
  std::vector<double> xv = x.to_vector(), out(xv.size());
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> xt(static_cast<size_t>(B * D));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) xt[b * D + d] = xv[(b * T + t) * D + d];
    std::vector<double> yt = layer.step(Tensor::from_vector(xt, {B, D}, dt), st).to_vector();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) out[(b * T + t) * D + d] = yt[b * D + d];
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// HiPPO

TEST_CASE("kernels/hippo: LegS matrix against known small values") {
  auto h = kernels::hippo_legs(3);
  std::vector<double> A = {-1, 0, 0, -std::sqrt(3.0), -2, 0, -std::sqrt(5.0), -std::sqrt(15.0), -3};
  std::vector<double> B = {1, std::sqrt(3.0), std::sqrt(5.0)};
  CHECK_CLOSE(h.A, A, 1e-15, 1e-15);
  CHECK_CLOSE(h.B, B, 1e-15, 1e-15);
  CHECK(contains(error_of([] { kernels::hippo_legs(0); }), "N >= 1"));
}

TEST_CASE("kernels/hippo: Jacobi eigen-solver and the DPLR decomposition reconstruct A") {
  for (int64_t N : {2, 8, 64, 256}) {
    auto h = kernels::hippo_legs(N);
    auto r = kernels::nplr_legs(N);
    const int64_t M = N / 2;
    // A == 2 Re(V diag(Lambda) V*) - p p^T (the conjugate half contributes the conjugate term)
    double worst = 0, worst_b = 0, worst_u = 0;
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j) {
        cd s(0, 0), g(0, 0);
        for (int64_t m = 0; m < M; ++m) {
          s += r.V[i * M + m] * r.Lambda[m] * std::conj(r.V[j * M + m]);
          g += r.V[i * M + m] * std::conj(r.V[j * M + m]);
        }
        worst = std::max(worst, std::abs(2 * s.real() - r.p[i] * r.p[j] - h.A[i * N + j]));
        worst_u = std::max(worst_u, std::abs(2 * g.real() - (i == j ? 1.0 : 0.0)));  // V V* + conj = I
      }
    for (int64_t i = 0; i < N; ++i) {  // b = 2 Re(V B~)
      cd s(0, 0);
      for (int64_t m = 0; m < M; ++m) s += r.V[i * M + m] * r.B[m];
      worst_b = std::max(worst_b, std::abs(2 * s.real() - h.B[i]));
    }
    INFO("N = " << N);
    CHECK(worst < 1e-10);
    CHECK(worst_u < 1e-10);
    CHECK(worst_b < 1e-10);
    for (int64_t m = 0; m < M; ++m) {
      CHECK(r.Lambda[m].real() == -0.5);
      CHECK(r.Lambda[m].imag() < 0);
    }
    MESSAGE("nplr_legs N=" << N << ": max |V L V* - P P^T - A| " << worst << ", unitarity " << worst_u
                           << ", B " << worst_b);
  }
  {  // eigenvalues against torch.linalg.eigh (tests/fixtures/gen_s4.py)
    auto fx = testing::load_fixture("s4.txt");
    auto r = kernels::nplr_legs(8);
    std::vector<double> wi;
    for (const cd& l : r.Lambda) wi.push_back(l.imag());
    CHECK_CLOSE(wi, testing::fixture_tensor(fx, "hippo.w8"), 1e-12, 1e-12);
  }
  // a generic Hermitian matrix
  const int64_t n = 5;
  Generator gen(3);
  std::vector<cd> H(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      cd v(gen.normal(), i == j ? 0.0 : gen.normal());
      H[i * n + j] = v;
      H[j * n + i] = std::conj(v);
    }
  auto e = kernels::hermitian_eigh(n, H);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      cd s(0, 0);
      for (int64_t k = 0; k < n; ++k) s += e.V[i * n + k] * e.w[k] * std::conj(e.V[j * n + k]);
      worst = std::max(worst, std::abs(s - H[i * n + j]));
    }
  CHECK(worst < 1e-12);
  CHECK(std::is_sorted(e.w.begin(), e.w.end()));
}

// ---------------------------------------------------------------------------------------------
// Kernel ops

TEST_CASE("layers/lssl: kernel op gradcheck") {
  auto hp = std::make_shared<const kernels::HippoLegs>(kernels::hippo_legs(4));
  Generator gen(5);
  Tensor log_dt = rand_uniform({3}, std::log(0.1), std::log(0.6), DType::f64, gen);
  Tensor C = randn({3, 4}, 0, 1, DType::f64, gen);
  for (int64_t T : {1, 7}) {
    Fn f = [&](const std::vector<Tensor>& in) { return lssl_kernel(in[0], in[1], hp, T); };
    auto g = gradcheck(f, leaves({log_dt, C}, DType::f64));
    INFO("T = " << T << "\n" << g.report);
    CHECK(g.ok);
    MESSAGE("lssl_kernel gradcheck T=" << T << ": max rel error " << g.max_rel_error);
  }
}

TEST_CASE("layers/s4: kernel op gradcheck") {
  for (int64_t T : {1, 2, 6, 7}) {
    S4Params p = s4params(2, 3, 10 + T);
    Fn f = [T](const std::vector<Tensor>& in) { return s4_kernel(in[0], in[1], in[2], in[3], in[4], in[5], T); };
    auto g = gradcheck(f, leaves(p.all(), DType::f64));
    INFO("T = " << T << "\n" << g.report);
    CHECK(g.ok);
    MESSAGE("s4_kernel gradcheck T=" << T << ": max rel error " << g.max_rel_error);
  }
}

TEST_CASE("layers/s4: generating-function kernel equals powers of the dense discretised DPLR matrix") {
  for (int64_t T : {1, 5, 12, 33}) {
    S4Params p = s4params(3, 4, 20 + T);
    Tensor K = kernels::s4_kernel_forward(p.log_dt, p.log_A_real, p.A_imag, p.P, p.B, p.C, T);
    auto disc = kernels::s4_discretise(p.log_dt, p.log_A_real, p.A_imag, p.P, p.B);
    Tensor Kd = kernels::s4_kernel_dense(disc, p.C, T);
    INFO("T = " << T);
    CHECK_CLOSE(K, Kd, 1e-10, 1e-12);
    MESSAGE("s4 kernel (Cauchy + Woodbury + DFT) vs dense powers T=" << T << ": max rel diff " << max_rel(K, Kd));
    S4Params p32 = s4params(3, 4, 20 + T, DType::f32);
    Tensor K32 = kernels::s4_kernel_forward(p32.log_dt, p32.log_A_real, p32.A_imag, p32.P, p32.B, p32.C, T);
    CHECK_CLOSE(K32, Kd, 1e-4, 1e-5);
  }
}

TEST_CASE("layers/s4: S4 at the LegS NPLR init equals LSSL in the eigenbasis") {
  // A = V (Lambda - P~ P~*) V* with P~ = V* p, so C_lssl dA^l dB = C~ dA_dplr^l dB~ with C~ = C_lssl V.
  const int64_t N = 16, M = N / 2, D = 2, T = 40;
  auto hp = std::make_shared<const kernels::HippoLegs>(kernels::hippo_legs(N));
  auto r = kernels::nplr_legs(N);
  Generator gen(9);
  Tensor log_dt = rand_uniform({D}, std::log(1e-2), std::log(0.2), DType::f64, gen);
  Tensor C = randn({D, N}, 0, 1, DType::f64, gen);
  std::vector<double> cv = C.to_vector(), lar(D * M), ai(D * M), pp(D * M * 2), bb(D * M * 2), cc(D * M * 2);
  for (int64_t d = 0; d < D; ++d)
    for (int64_t m = 0; m < M; ++m) {
      int64_t i = d * M + m;
      cd c(0, 0);
      for (int64_t n = 0; n < N; ++n) c += cv[d * N + n] * r.V[n * M + m];
      lar[i] = std::log(-r.Lambda[m].real());
      ai[i] = r.Lambda[m].imag();
      pp[2 * i] = r.P[m].real(), pp[2 * i + 1] = r.P[m].imag();
      bb[2 * i] = r.B[m].real(), bb[2 * i + 1] = r.B[m].imag();
      cc[2 * i] = c.real(), cc[2 * i + 1] = c.imag();
    }
  Tensor Kl = kernels::lssl_kernel_forward(log_dt, C, *hp, T);
  Tensor Ks = kernels::s4_kernel_forward(log_dt, Tensor::from_vector(lar, {D, M}, DType::f64),
                                         Tensor::from_vector(ai, {D, M}, DType::f64),
                                         Tensor::from_vector(pp, {D, M, 2}, DType::f64),
                                         Tensor::from_vector(bb, {D, M, 2}, DType::f64),
                                         Tensor::from_vector(cc, {D, M, 2}, DType::f64), T);
  CHECK_CLOSE(Ks, Kl, 1e-9, 1e-12);
  MESSAGE("S4 (NPLR eigenbasis) vs LSSL kernel, N=16 T=40: max rel diff " << max_rel(Ks, Kl));
}

// ---------------------------------------------------------------------------------------------
// Layers

TEST_CASE("layers/lssl: gradcheck of the input and every parameter") {
  Generator gen(7);
  nn::LSSL layer(nn::LSSLOptions{.d_model = 3, .d_state = 4}, gen);
  layer.to(DType::f64);
  set_log_dt(layer, 0.1, 0.6, DType::f64);
  std::vector<Tensor> in{randn({2, 5, 3}, 0, 1, DType::f64, gen).set_requires_grad()};
  for (const Tensor& p : layer.parameters()) in.push_back(p);
  Fn f = [&](const std::vector<Tensor>& xs) { return layer.forward(xs[0]); };
  auto g = gradcheck(f, in);
  INFO(g.report);
  CHECK(g.ok);
  MESSAGE("LSSL layer gradcheck: max rel error " << g.max_rel_error);
}

TEST_CASE("layers/s4: gradcheck of the input and every parameter") {
  Generator gen(8);
  nn::S4 layer(nn::S4Options{.d_model = 3, .d_state = 4}, gen);
  layer.to(DType::f64);
  set_log_dt(layer, 0.1, 0.6, DType::f64);
  std::vector<Tensor> in{randn({2, 5, 3}, 0, 1, DType::f64, gen).set_requires_grad()};
  for (const Tensor& p : layer.parameters()) in.push_back(p);
  Fn f = [&](const std::vector<Tensor>& xs) { return layer.forward(xs[0]); };
  auto g = gradcheck(f, in);
  INFO(g.report);
  CHECK(g.ok);
  MESSAGE("S4 layer gradcheck: max rel error " << g.max_rel_error);
}

TEST_CASE("layers/s4: step mode equals the parallel forward (lssl and s4)") {
  for (DType dt : {DType::f64, DType::f32}) {
    const int64_t B = 2, T = 11, D = 3;
    Generator gen(12);
    nn::LSSL lssl(nn::LSSLOptions{.d_model = D, .d_state = 6}, gen);
    nn::S4 s4(nn::S4Options{.d_model = D, .d_state = 6}, gen);
    Tensor x = randn({B, T, D}, 0, 1, dt, gen);
    std::vector<nn::SequenceLayer*> layers{&lssl, &s4};
    for (nn::SequenceLayer* l : layers) {
      l->eval();
      l->to(dt);
    }
    set_log_dt(lssl, 0.05, 0.5, dt);
    set_log_dt(s4, 0.05, 0.5, dt);
    for (nn::SequenceLayer* l : layers) {
      Tensor y;
      {
        NoGradGuard ng;
        y = l->forward(x);
      }
      std::vector<double> s = stepped(*l, x, dt);
      INFO(std::string(l == &lssl ? "lssl " : "s4 ") << std::string(dtype_name(dt)));
      CHECK_CLOSE(s, y.to_vector(), dt == DType::f64 ? 1e-10 : 1e-4, dt == DType::f64 ? 1e-12 : 1e-5);
      MESSAGE(std::string(l == &lssl ? "LSSL" : "S4") << " step vs forward " << std::string(dtype_name(dt)) << ": max rel diff "
                                          << max_rel(Tensor::from_vector(s, y.shape(), DType::f64), y));
    }
  }
}

TEST_CASE("layers/s4: step mode keeps its discretisation and rebuilds it when a parameter changes") {
  const int64_t B = 2, T = 8, D = 3;
  Generator gen(14);
  nn::LSSL lssl(nn::LSSLOptions{.d_model = D, .d_state = 6}, gen);
  nn::S4 s4(nn::S4Options{.d_model = D, .d_state = 6}, gen);
  Tensor x = randn({B, T, D}, 0, 1, DType::f32, gen);
  // LSSL discretises from log_dt alone; S4 from five parameters, so change one that is not log_dt
  for (auto [l, changed] : {std::pair<nn::SequenceLayer*, std::string>{&lssl, "log_dt"}, {&s4, "P"}}) {
    l->eval();
    nn::StepState kept = l->init_state(B, DType::f32), fresh = l->init_state(B, DType::f32);
    for (int64_t t = 0; t < T; ++t) {
      if (t == T / 2) {  // as an optimizer step between two tokens would
        NoGradGuard ng;
        for (auto& np : l->named_parameters())
          if (np.name == changed) np.tensor.copy_from(mul_scalar(np.tensor, 1.1));
      }
      Tensor xt = reshape(slice(x, 1, t, t + 1), {B, D});
      fresh.tensors.resize(1);  // drop what the state kept: discretise again, as every step once did
      std::vector<double> a = l->step(xt, kept).to_vector(), b = l->step(xt, fresh).to_vector();
      INFO(changed << " t = " << t);
      CHECK(kept.tensors.size() > 1);
      CHECK(a == b);
      CHECK(kept.tensors[0].to_vector() == fresh.tensors[0].to_vector());
    }
  }
}

TEST_CASE("layers/s4: PyTorch reference values (lssl and s4, float64 and float32)") {
  for (std::string name : {"lssl", "s4"}) {
    auto fx = testing::load_fixture(name + ".txt");
    Tensor x = testing::fixture_tensor(fx, "x");
    int64_t D = x.size(2);
    for (DType dt : {DType::f64, DType::f32}) {
      std::shared_ptr<nn::SequenceLayer> layer;
      Generator gen(1);
      if (name == "lssl")
        layer = std::make_shared<nn::LSSL>(nn::LSSLOptions{.d_model = D, .d_state = testing::fixture_tensor(fx, "C").size(1)}, gen);
      else
        layer = std::make_shared<nn::S4>(nn::S4Options{.d_model = D, .d_state = 2 * testing::fixture_tensor(fx, "C").size(1)}, gen);
      layer->to(dt);
      std::map<std::string, Tensor> state;
      for (const auto& np : layer->named_parameters()) state[np.name] = testing::fixture_tensor(fx, np.name);
      layer->load_state_dict(state);
      Tensor xin = x.to(dt).set_requires_grad();
      Tensor out = layer->forward(xin);
      backward(out, testing::fixture_tensor(fx, "w").to(dt));
      double rtol = dt == DType::f64 ? 1e-9 : 1e-4, atol = dt == DType::f64 ? 1e-12 : 1e-5;
      INFO(name << " " << std::string(dtype_name(dt)));
      Tensor ref = testing::fixture_tensor(fx, "out");
      CHECK_CLOSE(out, ref, rtol, atol);
      double worst = max_rel(out, ref);
      CHECK_CLOSE(xin.grad(), testing::fixture_tensor(fx, "grad.x"), rtol, atol);
      worst = std::max(worst, max_rel(xin.grad(), testing::fixture_tensor(fx, "grad.x")));
      for (const auto& np : layer->named_parameters()) {
        INFO("grad of " << np.name);
        Tensor g = testing::fixture_tensor(fx, "grad." + np.name);
        CHECK_CLOSE(np.tensor.grad(), g, rtol, atol);
        worst = std::max(worst, max_rel(np.tensor.grad(), g));
      }
      MESSAGE(name << " vs PyTorch " << std::string(dtype_name(dt)) << ": max rel diff " << worst);
    }
  }
}

TEST_CASE("layers/s4: initialisation, parameter names, options and the registry") {
  Generator gen(3);
  nn::S4 s4(nn::S4Options{.d_model = 4, .d_state = 8, .lr_scale_ssm = 0.1}, gen);
  auto np = s4.named_parameters();
  std::vector<std::string> names;
  for (const auto& p : np) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"log_dt", "log_A_real", "A_imag", "P", "B", "C", "D", "out_proj.weight",
                                          "out_proj.bias"});
  for (int i = 0; i < 5; ++i) {
    CHECK(!np[i].options.weight_decay);
    CHECK(np[i].options.lr_scale == doctest::Approx(0.1));
  }
  CHECK(np[5].options.weight_decay);
  CHECK(np[1].tensor.to_vector()[0] == doctest::Approx(std::log(0.5)));
  nn::LSSL lssl(nn::LSSLOptions{.d_model = 4, .d_state = 5}, gen);
  names.clear();
  for (const auto& p : lssl.named_parameters()) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"log_dt", "C", "D", "out_proj.weight", "out_proj.bias"});
  for (double v : lssl.named_parameters()[0].tensor.to_vector()) {
    CHECK(v >= std::log(1e-3));
    CHECK(v < std::log(1e-1));
  }
  CHECK(contains(error_of([] { nn::S4({.d_model = 2, .d_state = 5}); }), "S4Options.d_state"));
  CHECK(contains(error_of([] { nn::LSSL({.d_model = 0}); }), "LSSLOptions.d_model"));
  CHECK(contains(error_of([] { nn::S4({.d_model = 2, .dt_min = 0.1, .dt_max = 0.01}); }), "dt_min"));
  CHECK(contains(error_of([] { nn::LSSL({.d_model = 2, .dropout = 1.0}); }), "LSSLOptions.dropout"));
  for (std::string type : {"lssl", "s4"}) {
    nn::LayerArgs args("layer '" + type + "'");
    args.set("d_state", int64_t{8}).set("dt_min", 1e-3).set("dt_max", 1e-2).set("dropout", 0.1).set("lr_scale_ssm", 0.5);
    auto l = nn::make_layer(type, 4, args);
    CHECK(l->d_model() == 4);
    CHECK(l->has_step());
    Tensor y = l->forward(Tensor::zeros({1, 6, 4}));
    CHECK(y.shape() == Shape{1, 6, 4});
    nn::LayerArgs bad("layer '" + type + "'");
    bad.set("d_sate", int64_t{8});
    CHECK(contains(error_of([&] { nn::make_layer(type, 4, bad); }), "d_sate"));
  }
}

