// Mamba (layers/mamba, autograd/ops/{conv1d,scan}, core/kernels/{conv1d,scan}): float64 gradchecks of
// the fused conv1d and selective-scan ops and of the whole block; fused ops against their composite
// references (primitive ops) and the plain-loop scan that stores every state; the PyTorch fixture
// (tests/fixtures/gen_mamba.py); step mode against the parallel forward; determinism and memory.
#include <chrono>
#include <cmath>
#include <utility>

#include "autograd/ops.h"
#include "autograd/ops/conv1d.h"
#include "autograd/ops/scan.h"
#include "core/kernels/conv1d.h"
#include "core/kernels/scan.h"
#include "core/parallel.h"
#include "layers/mamba.h"
#include "tests/fixtures.h"
#include "tests/testing.h"

using namespace seqlab;

namespace {

Tensor leaf(const Tensor& t) {
  Tensor c = t.clone();
  c.set_requires_grad(true);
  return c;
}

// Inputs of a scan in a realistic range: delta > 0 after softplus, A < 0.
struct ScanInputs {
  Tensor u, delta, A, Bm, Cm, D, z, bias;
  std::vector<Tensor> all() const { return {u, delta, A, Bm, Cm, D, z, bias}; }
};

ScanInputs make_scan_inputs(int64_t B, int64_t T, int64_t E, int64_t N, DType dt, uint64_t seed) {
  Generator g(seed);
  ScanInputs s;
  s.u = leaf(randn({B, T, E}, 0, 1, dt, g));
  s.delta = leaf(randn({B, T, E}, -1, 1, dt, g));
  s.A = leaf(rand_uniform({E, N}, -2.0, -0.1, dt, g));
  s.Bm = leaf(randn({B, T, N}, 0, 1, dt, g));
  s.Cm = leaf(randn({B, T, N}, 0, 1, dt, g));
  s.D = leaf(randn({E}, 1, 0.2, dt, g));
  s.z = leaf(randn({B, T, E}, 0, 1, dt, g));
  s.bias = leaf(randn({E}, 0, 0.5, dt, g));
  return s;
}

using ScanFn = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, const SelectiveScanOptions&);

// Output and every input gradient of sum(scan(...) * w), gated or not.
std::vector<Tensor> scan_outputs(ScanFn fn, const ScanInputs& s, bool full, int64_t chunk, const Tensor& w) {
  for (const Tensor& t : s.all()) const_cast<Tensor&>(t).zero_grad();
  SelectiveScanOptions o;
  if (full) o = {s.z, s.bias, true, chunk};
  o.chunk = chunk;
  Tensor y = fn(s.u, s.delta, s.A, s.Bm, s.Cm, s.D, o);
  backward(sum(y * w));
  std::vector<Tensor> out{y.detach()};
  for (const Tensor& t : s.all()) out.push_back(t.grad().defined() ? t.grad() : Tensor::zeros_like(t));
  if (!full) out.resize(out.size() - 2);
  return out;
}

std::vector<Tensor> mamba_params(nn::Mamba& m) { return m.parameters(); }

}  // namespace

TEST_CASE("ops/causal_conv1d: gradcheck") {
  for (bool silu : {false, true})
    for (int64_t T : {5, 2}) {  // T = 2 < K - 1: the left padding covers the whole sequence
      Generator g(7);
      std::vector<Tensor> in{leaf(randn({2, T, 3}, 0, 1, DType::f64, g)), leaf(randn({3, 4}, 0, 1, DType::f64, g)),
                             leaf(randn({3}, 0, 1, DType::f64, g))};
      auto f = [silu](const std::vector<Tensor>& v) { return causal_conv1d(v[0], v[1], v[2], silu); };
      auto r = gradcheck(f, in);
      CHECK_MESSAGE(r.ok, r.report);
      MESSAGE("causal_conv1d gradcheck silu=" << silu << " T=" << T << ": max rel error " << r.max_rel_error);
    }
}

TEST_CASE("ops/causal_conv1d: fused vs composite reference (float64 and float32)") {
  testing::for_each_isa([&] {
    for (DType dt : {DType::f64, DType::f32})
      for (bool silu : {false, true}) {
        Generator g(3);
        Tensor x = leaf(randn({3, 9, 37}, 0, 1, dt, g)), w = leaf(randn({37, 4}, 0, 1, dt, g)),
               b = leaf(randn({37}, 0, 1, dt, g)), wy = randn({3, 9, 37}, 0, 1, dt, g);
        auto run = [&](auto fn) {
          x.zero_grad(), w.zero_grad(), b.zero_grad();
          Tensor y = fn(x, w, b, silu);
          backward(sum(y * wy));
          return std::vector<Tensor>{y.detach(), x.grad(), w.grad(), b.grad()};
        };
        auto fu = run(causal_conv1d), re = run(causal_conv1d_reference);
        double tol = dt == DType::f64 ? 1e-12 : 1e-5;
        for (size_t i = 0; i < fu.size(); ++i) CHECK_CLOSE(fu[i], re[i], tol, tol);
      }
  });
}

TEST_CASE("ops/selective_scan: gradcheck (with and without gate, bias, softplus, chunked)") {
  for (int64_t N : {4, 8})          // runtime N and a compile-time N
    for (int64_t chunk : {2, 64})   // 2: three chunks over T = 5, states rebuilt from checkpoints
      for (bool full : {false, true}) {
        ScanInputs s = make_scan_inputs(2, 5, 3, N, DType::f64, 11);
        if (!full) s.delta = leaf(rand_uniform({2, 5, 3}, 0.05, 1.0, DType::f64));
        std::vector<Tensor> in = s.all();
        if (!full) in.resize(6);
        auto f = [full, chunk](const std::vector<Tensor>& v) {
          SelectiveScanOptions o;
          if (full) o = {v[6], v[7], true, chunk};
          o.chunk = chunk;
          return selective_scan(v[0], v[1], v[2], v[3], v[4], v[5], o);
        };
        auto r = gradcheck(f, in);
        CHECK_MESSAGE(r.ok, r.report);
        MESSAGE("selective_scan gradcheck N=" << N << " chunk=" << chunk << " full=" << full << ": max rel error "
                                             << r.max_rel_error);
      }
}

TEST_CASE("ops/selective_scan: fused vs composite reference and plain loop (float64 and float32)") {
  testing::for_each_isa([&] {
    // E = 20 with B = 3 splits channels into uneven blocks (partial dB, dC summed across blocks).
    for (DType dt : {DType::f64, DType::f32})
      for (int64_t N : {16, 5})
        for (bool full : {true, false}) {
          ScanInputs s = make_scan_inputs(3, 11, 20, N, dt, 5);
          if (!full) s.delta = leaf(rand_uniform({3, 11, 20}, 0.05, 1.0, dt));  // no softplus: keep delta > 0
          Tensor w = randn({3, 11, 20}, 0, 1, dt);
          auto ref = scan_outputs(selective_scan_reference, s, full, 64, w);
          auto loop = scan_outputs(selective_scan_loop, s, full, 64, w);
          double tol = dt == DType::f64 ? 1e-11 : 2e-4;
          double worst = 0;
          for (int64_t chunk : {1, 4, 64}) {
            auto fused = scan_outputs(selective_scan, s, full, chunk, w);
            for (size_t i = 0; i < fused.size(); ++i) {
              CAPTURE(i);
              CAPTURE(chunk);
              CHECK_CLOSE(fused[i], ref[i], tol, tol);
              CHECK_CLOSE(loop[i], ref[i], tol, tol);
              auto a = fused[i].to_vector(), b = ref[i].to_vector();
              for (size_t k = 0; k < a.size(); ++k) worst = std::max(worst, std::abs(a[k] - b[k]) / (1 + std::abs(b[k])));
            }
          }
          MESSAGE("selective_scan fused vs reference " << std::string(dtype_name(dt)) << " N=" << N << " full=" << full
                                                       << ": max |diff|/(1+|ref|) " << worst);
        }
  });
}

TEST_CASE("ops/selective_scan: a loss at the last step reaches inputs four chunks back (T = 300, slow decay)") {
  // The induction-heads gradient: one scored position, the inputs that matter ~250 steps before it,
  // across the fused scan's state checkpoints (chunk 64); against the composite reference.
  testing::for_each_isa([&] {
    for (DType dt : {DType::f64, DType::f32}) {
      const int64_t B = 2, T = 300, E = 24, N = 16;
      ScanInputs s = make_scan_inputs(B, T, E, N, dt, 9);
      {
        NoGradGuard ng;
        s.A.copy_from(rand_uniform({E, N}, -0.05, -0.01, DType::f64, default_generator()));
      }
      std::vector<double> wv(static_cast<size_t>(B * T * E), 0.0);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t e = 0; e < E; ++e) wv[static_cast<size_t>((b * T + T - 1) * E + e)] = 1.0;
      Tensor w = Tensor::from_vector(wv, {B, T, E}, dt);
      auto ref = scan_outputs(selective_scan_reference, s, true, 64, w);
      auto fused = scan_outputs(selective_scan, s, true, 64, w);
      const double tol = dt == DType::f64 ? 1e-10 : 2e-4;
      for (size_t i = 0; i < fused.size(); ++i) {
        CAPTURE(i);
        CHECK_CLOSE(fused[i], ref[i], tol, tol);
      }
      // du at t = 5 (the key's distance) is not vanishing: the signal is there to learn from.
      auto du = fused[1].to_vector();
      double early = 0;
      for (int64_t e = 0; e < E; ++e) early = std::max(early, std::abs(du[static_cast<size_t>(5 * E + e)]));
      CHECK(early > 1e-3);
    }
  });
}

TEST_CASE("ops/selective_scan: bit-identical at 1 and 2 threads") {
  testing::for_each_isa([&] {
    // (B, E) = (2, 24): one task per batch row, a full and a partial 16-channel block; (1, 64): four
    // channel groups per row, whose dB, dC partials are summed afterwards.
    for (auto [B, E] : {std::pair<int64_t, int64_t>{2, 24}, {2, 20}, {1, 64}}) {
      ScanInputs s = make_scan_inputs(B, 70, E, 16, DType::f32, 9);
      Tensor w = randn({B, 70, E}, 0, 1, DType::f32);
      int prev = num_threads();
      set_num_threads(1);
      auto one = scan_outputs(selective_scan, s, true, 16, w);
      set_num_threads(2);
      auto two = scan_outputs(selective_scan, s, true, 16, w);
      set_num_threads(prev);
      for (size_t i = 0; i < one.size(); ++i) CHECK(one[i].to_vector() == two[i].to_vector());
    }
  });
}

TEST_CASE("ops/selective_scan: memory has no (B, T, E, N) term") {
  // Forward + backward of the fused scan alone: the states tensor of the plain loop would be
  // B*T*E*N floats; the fused op must stay well under it.
  const int64_t B = 2, T = 512, E = 64, N = 64;
  ScanInputs s = make_scan_inputs(B, T, E, N, DType::f32, 1);
  Tensor w = randn({B, T, E}, 0, 1, DType::f32);
  auto peak_of = [&](ScanFn fn) {
    scan_outputs(fn, s, true, 64, w);  // warm the allocator cache
    reset_peak_memory();
    size_t base = allocator_stats().in_use_bytes;
    scan_outputs(fn, s, true, 64, w);
    return allocator_stats().peak_bytes - base;
  };
  size_t fused = peak_of(selective_scan), loop = peak_of(selective_scan_loop);
  size_t states = static_cast<size_t>(B * T * E * N) * 4;
  MESSAGE("scan fwd+bwd extra peak: fused " << fused / 1024 << " KiB, plain loop " << loop / 1024
                                            << " KiB, one (B,T,E,N) tensor " << states / 1024 << " KiB");
  CHECK(loop >= states);
  CHECK(fused < states / 4);
}

TEST_CASE("layers/mamba: parameters, names and options") {
  nn::MambaOptions o;
  o.d_model = 20;
  nn::Mamba m(o);
  std::vector<std::string> expect{"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                                  "dt_proj.bias", "A_log", "D", "out_proj.weight"};
  auto named = m.named_parameters();
  REQUIRE(named.size() == expect.size());
  for (size_t i = 0; i < named.size(); ++i) {
    CHECK(named[i].name == expect[i]);
    CHECK(named[i].options.weight_decay == (named[i].name != "A_log" && named[i].name != "D"));
  }
  auto sd = m.state_dict();
  CHECK(sd["in_proj.weight"].shape() == Shape{80, 20});
  CHECK(sd["conv1d.weight"].shape() == Shape{40, 4});
  CHECK(sd["x_proj.weight"].shape() == Shape{2 + 32, 40});  // dt_rank = ceil(20 / 16) = 2
  CHECK(sd["dt_proj.weight"].shape() == Shape{40, 2});
  CHECK(sd["A_log"].shape() == Shape{40, 16});
  auto alog = sd["A_log"].to_vector();
  CHECK(alog[17] == doctest::Approx(std::log(2.0)));
  // softplus(dt_proj.bias) lies in [dt_min, dt_max]
  for (double b : sd["dt_proj.bias"].to_vector()) {
    double dt = std::log1p(std::exp(b));
    CHECK(dt >= 1e-3 * (1 - 1e-5));
    CHECK(dt <= 1e-1 * (1 + 1e-5));
  }
  nn::LayerArgs args("test");
  args.set("d_state", int64_t{8}).set("dt_rank", std::string("auto")).set("expand", int64_t{1});
  auto layer = nn::make_mamba(16, args);
  CHECK(layer->d_model() == 16);
  nn::LayerArgs bad("test");
  bad.set("d_stat", int64_t{8});
  CHECK_THROWS_AS(nn::make_mamba(16, bad), Error);
  nn::LayerArgs bad2("test");
  bad2.set("dt_rank", std::string("big"));
  CHECK_THROWS_AS(nn::make_mamba(16, bad2), Error);
  o.d_conv = 0;
  CHECK_THROWS_AS(o.validate(), Error);
}

TEST_CASE("layers/mamba: mimetic init options (a_init_scale, tie_bc_init)") {
  nn::MambaOptions o;
  o.d_model = 20;
  o.a_init_scale = 0.01;
  o.tie_bc_init = true;
  nn::Mamba m(o);
  auto sd = m.state_dict();
  auto alog = sd["A_log"].to_vector();  // (40, 16): A = -exp(A_log) = -(n + 1) * 0.01
  for (int64_t c = 0; c < 40; c += 13)
    for (int64_t n = 0; n < 16; ++n) CHECK(-std::exp(alog[c * 16 + n]) == doctest::Approx(-(n + 1) * 0.01));
  auto w = sd["x_proj.weight"].to_vector();  // (2 + 32, 40): rows [2, 18) B, [18, 34) C
  int64_t equal = 0;
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t e = 0; e < 40; ++e) equal += w[(2 + r) * 40 + e] == w[(18 + r) * 40 + e];
  CHECK(equal == 16 * 40);
  CHECK(w[2 * 40] != w[3 * 40]);  // the B rows themselves stay random
  nn::MambaOptions d;
  d.d_model = 20;
  nn::Mamba plain(d);  // defaults: C's rows are drawn on their own
  auto wp = plain.state_dict()["x_proj.weight"].to_vector();
  CHECK(wp[2 * 40] != wp[18 * 40]);
  o.a_init_scale = 0;
  CHECK_THROWS_WITH_AS(o.validate(), doctest::Contains("a_init_scale"), Error);
  nn::LayerArgs args("test");
  args.set("a_init_scale", 0.05).set("tie_bc_init", true);
  CHECK(nn::mamba_options(16, args).tie_bc_init);
}

TEST_CASE("layers/mamba: gradcheck of the input and every parameter") {
  nn::MambaOptions o;
  o.d_model = 4;
  o.d_state = 4;
  o.scan_chunk = 2;  // T = 5: three chunks, so the checkpoints are exercised
  nn::Mamba m(o);
  m.to(DType::f64);
  Generator g(21);
  std::vector<Tensor> in{leaf(randn({2, 5, 4}, 0, 1, DType::f64, g))};
  for (const Tensor& p : mamba_params(m)) in.push_back(p);
  auto f = [&m](const std::vector<Tensor>& v) { return m.forward(v[0]); };
  auto r = gradcheck(f, in);
  CHECK_MESSAGE(r.ok, r.report);
  MESSAGE("Mamba layer gradcheck: max rel error " << r.max_rel_error);
}

TEST_CASE("layers/mamba: PyTorch reference (tests/fixtures/gen_mamba.py)") {
  auto fx = testing::load_fixture("mamba.txt");
  for (DType dt : {DType::f64, DType::f32}) {
    nn::MambaOptions o;
    o.d_model = 4;
    o.d_state = 4;
    o.scan_chunk = 4;  // T = 6: two chunks
    nn::Mamba m(o);
    m.to(dt);  // before loading, so float64 values are not rounded through float32
    std::map<std::string, Tensor> state;
    for (const auto& [name, t] : m.state_dict()) state[name] = testing::fixture_tensor(fx, name);
    m.load_state_dict(state);
    Tensor x = leaf(testing::fixture_tensor(fx, "x").to(dt));
    Tensor y = m.forward(x);
    backward(sum(y * testing::fixture_tensor(fx, "w").to(dt)));
    double tol = dt == DType::f64 ? 1e-10 : 1e-4;
    double worst = 0;
    auto track = [&](const Tensor& a, const Tensor& b) {
      auto va = a.to_vector(), vb = b.to_vector();
      for (size_t k = 0; k < va.size(); ++k) worst = std::max(worst, std::abs(va[k] - vb[k]) / (1e-3 + std::abs(vb[k])));
    };
    CHECK_CLOSE(y, testing::fixture_tensor(fx, "out"), tol, tol);
    track(y, testing::fixture_tensor(fx, "out"));
    CHECK_CLOSE(x.grad(), testing::fixture_tensor(fx, "grad.x"), tol, tol);
    track(x.grad(), testing::fixture_tensor(fx, "grad.x"));
    for (const auto& p : m.named_parameters()) {
      CAPTURE(p.name);
      CHECK_CLOSE(p.tensor.grad(), testing::fixture_tensor(fx, "grad." + p.name), tol, tol);
      track(p.tensor.grad(), testing::fixture_tensor(fx, "grad." + p.name));
    }
    MESSAGE("Mamba vs PyTorch " << std::string(dtype_name(dt)) << ": max |diff|/(1e-3+|ref|) " << worst);
  }
}

TEST_CASE("layers/mamba: step mode equals the parallel forward") {
  testing::for_each_isa([&] {
    // d_model 10: d_inner 20, one 16-channel block of the float d_state-16 step kernel and a tail.
    for (int64_t D : {8, 10})
      for (DType dt : {DType::f64, DType::f32}) {
        CAPTURE(D);
        nn::MambaOptions o;
        o.d_model = D;
        o.scan_chunk = 3;
        nn::Mamba m(o);
        m.to(dt);
        Generator g(4);
        const int64_t B = 3, T = 9;
        Tensor x = randn({B, T, D}, 0, 1, dt, g);
        Tensor y;
        {
          NoGradGuard ng;
          y = m.forward(x);
        }
        nn::StepState st = m.init_state(B, dt);
        std::vector<Tensor> ys;
        for (int64_t t = 0; t < T; ++t) {
          NoGradGuard ng;
          ys.push_back(reshape(m.step(reshape(slice(x, 1, t, t + 1), {B, D}), st), {B, 1, D}));
        }
        NoGradGuard ng;
        double tol = dt == DType::f64 ? 1e-12 : 1e-5;
        CHECK_CLOSE(concat(ys, 1), y, tol, tol);
      }
  });
}

