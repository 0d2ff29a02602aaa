// The selective scan (Mamba-1) and the causal depthwise conv1d on the device against the CPU kernels:
// fused forward / backward (every gradient), the plain-loop reference variants, the one-token steps,
// the argument checks, bit-identical reruns and the scan's memory (no (B, T, E, N) term).
// Tolerances: float64 rtol 1e-9 with atol 1e-10 times the largest |CPU value| (the device backward
// against the CPU backward in float64 is the device gradient check); float32 rtol 1e-4 with atol
// 1e-5 times the largest |CPU value| (the two sides sum in different orders and the CPU's exp is a
// polynomial).
#include <algorithm>
#include <cmath>
#include <string>

#include "core/cuda/runtime.h"
#include "core/device.h"
#include "core/kernels/conv1d.h"
#include "core/kernels/scan.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;
using kernels::ScanExtras;

namespace {

Tensor gpu(const Tensor& t) { return t.defined() ? t.to(Device::cuda) : Tensor(); }

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::abs(v));
  return m;
}

// check_close with atol relative to the CPU tensor's scale.
void expect_close(const Tensor& g, const Tensor& c, DType dt, const std::string& what) {
  const bool f64 = dt == DType::f64;
  const double rtol = f64 ? 1e-9 : 1e-4, arel = f64 ? 1e-10 : 1e-5;
  if (g.defined()) CHECK(g.device() == Device::cuda);
  check_close(g, c, rtol, arel * std::max(1.0, c.defined() ? max_abs(c) : 0.0), what);
}

struct ScanIn {
  Tensor u, delta, A, Bm, Cm, D;
  ScanExtras ex;
};

ScanIn make_scan(int64_t B, int64_t T, int64_t E, int64_t N, DType dt, uint64_t seed, bool z, bool bias, bool sp) {
  ScanIn s;
  s.u = rand_cpu({B, T, E}, seed, dt);
  s.delta = rand_cpu({B, T, E}, seed + 1, dt, sp ? -1.0 : 0.05, 1.0);  // without softplus: delta > 0
  s.A = rand_cpu({E, N}, seed + 2, dt, -2.0, -0.1);
  s.Bm = rand_cpu({B, T, N}, seed + 3, dt);
  s.Cm = rand_cpu({B, T, N}, seed + 4, dt);
  s.D = rand_cpu({E}, seed + 5, dt);
  if (z) s.ex.z = rand_cpu({B, T, E}, seed + 6, dt, -2.0, 2.0);
  if (bias) s.ex.delta_bias = rand_cpu({E}, seed + 7, dt, -0.5, 0.5);
  s.ex.delta_softplus = sp;
  return s;
}

ScanIn to_gpu(const ScanIn& s) {
  return {gpu(s.u), gpu(s.delta), gpu(s.A), gpu(s.Bm), gpu(s.Cm), gpu(s.D),
          ScanExtras{gpu(s.ex.z), gpu(s.ex.delta_bias), s.ex.delta_softplus}};
}

void close_grads(const kernels::ScanGrads& g, const kernels::ScanGrads& c, DType dt, const std::string& what) {
  expect_close(g.du, c.du, dt, what + " du");
  expect_close(g.ddelta, c.ddelta, dt, what + " ddelta");
  expect_close(g.dA, c.dA, dt, what + " dA");
  expect_close(g.dB, c.dB, dt, what + " dB");
  expect_close(g.dC, c.dC, dt, what + " dC");
  expect_close(g.dD, c.dD, dt, what + " dD");
  expect_close(g.dz, c.dz, dt, what + " dz");
  expect_close(g.ddelta_bias, c.ddelta_bias, dt, what + " ddelta_bias");
}

struct ScanCase {
  int64_t B, T, E, N, chunk;
  bool z, bias, sp;
};

std::string label(const ScanCase& k, DType dt) {
  return str(dtype_name(dt), " B=", k.B, " T=", k.T, " E=", k.E, " N=", k.N, " chunk=", k.chunk, " z=", k.z,
             " bias=", k.bias, " softplus=", k.sp);
}

// d_state 3 .. 130 (every lane layout: 4, 8, 16, 32 lanes per channel, 1 .. 8 states per lane),
// chunks that do and do not divide T, T = 1, channel counts that leave partial blocks, several
// channel groups per batch row (E = 64, 200), float64 shapes that need more than 48 KiB of shared
// memory (N = 16 with chunk 64, N = 130).
const ScanCase kScanCases[] = {
    {2, 70, 20, 16, 16, true, true, true},     {1, 33, 37, 5, 64, false, false, false},
    {2, 130, 9, 40, 64, true, false, true},    {2, 100, 64, 16, 32, true, true, false},
    {1, 20, 3, 130, 8, false, true, true},     {3, 1, 5, 3, 64, true, true, true},
    {2, 300, 200, 16, 64, true, true, true},   {1, 257, 70, 64, 100, true, false, false},
    {2, 65, 33, 8, 64, false, true, true},
    // The tiled forward: several time tiles (64 float32, 32 float64 steps) with a partial last one and
    // 4 channel tiles; E = 100 and E = 50: a partial channel tile with 16-byte and with 4-byte copies.
    {2, 1000, 128, 16, 64, true, true, true},  {2, 150, 100, 16, 48, true, true, true},
    {1, 97, 50, 2, 64, true, false, true},
};

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda scan: fused forward and backward match the CPU kernels in float32 and float64") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType dt : {DType::f32, DType::f64})
    for (const ScanCase& k : kScanCases) {
      const std::string what = label(k, dt);
      INFO(what);
      const ScanIn c = make_scan(k.B, k.T, k.E, k.N, dt, seed, k.z, k.bias, k.sp), g = to_gpu(c);
      seed += 10;
      auto fc = kernels::selective_scan_forward(c.u, c.delta, c.A, c.Bm, c.Cm, c.D, c.ex, k.chunk, true);
      auto fg = kernels::selective_scan_forward(g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, k.chunk, true);
      expect_close(fg.y, fc.y, dt, what + " y");
      expect_close(fg.checkpoints, fc.checkpoints, dt, what + " checkpoints");
      auto f0 = kernels::selective_scan_forward(g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, k.chunk, false);
      CHECK(!f0.checkpoints.defined());
      CHECK(f0.y.to_vector() == fg.y.to_vector());
      const Tensor dy = rand_cpu({k.B, k.T, k.E}, seed + 9, dt);
      auto gc = kernels::selective_scan_backward(dy, c.u, c.delta, c.A, c.Bm, c.Cm, c.D, c.ex, fc.checkpoints, k.chunk);
      auto gg = kernels::selective_scan_backward(gpu(dy), g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, fg.checkpoints,
                                                 k.chunk);
      close_grads(gg, gc, dt, what);
    }
}

TEST_CASE("cuda scan: the plain-loop reference forward (every state) and backward match the CPU") {
  SEQLAB_REQUIRE_GPU();
  const ScanCase cases[] = {{2, 70, 20, 16, 0, true, true, true}, {1, 150, 33, 40, 0, true, false, false}};
  uint64_t seed = 300;
  for (DType dt : {DType::f32, DType::f64})
    for (const ScanCase& k : cases) {
      const std::string what = label(k, dt) + " loop";
      INFO(what);
      const ScanIn c = make_scan(k.B, k.T, k.E, k.N, dt, seed, k.z, k.bias, k.sp), g = to_gpu(c);
      seed += 10;
      Tensor Hc, Hg;
      auto fc = kernels::selective_scan_loop_forward(c.u, c.delta, c.A, c.Bm, c.Cm, c.D, c.ex, &Hc);
      auto fg = kernels::selective_scan_loop_forward(g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, &Hg);
      expect_close(fg.y, fc.y, dt, what + " y");
      expect_close(Hg, Hc, dt, what + " states");
      CHECK(!fg.checkpoints.defined());
      const Tensor dy = rand_cpu({k.B, k.T, k.E}, seed + 9, dt);
      auto gc = kernels::selective_scan_loop_backward(dy, c.u, c.delta, c.A, c.Bm, c.Cm, c.D, c.ex, Hc);
      auto gg = kernels::selective_scan_loop_backward(gpu(dy), g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, Hg);
      close_grads(gg, gc, dt, what);
    }
}

TEST_CASE("cuda scan: steps update the state in place as the CPU does") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 500;
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t N : {16, 5, 40})
      for (bool extras : {true, false}) {
        const int64_t B = 3, E = 37;
        const std::string what = str(dtype_name(dt), " step N=", N, " extras=", extras);
        INFO(what);
        Tensor hc = rand_cpu({B, E, N}, seed, dt);
        Tensor hg = gpu(hc);
        const Tensor A = rand_cpu({E, N}, seed + 1, dt, -2.0, -0.1), D = rand_cpu({E}, seed + 2, dt);
        const Tensor bias = extras ? rand_cpu({E}, seed + 3, dt, -0.5, 0.5) : Tensor();
        for (int s = 0; s < 3; ++s) {
          seed += 10;
          const Tensor u = rand_cpu({B, E}, seed, dt), delta = rand_cpu({B, E}, seed + 1, dt, extras ? -1.0 : 0.05, 1.0);
          const Tensor Bm = rand_cpu({B, N}, seed + 2, dt), Cm = rand_cpu({B, N}, seed + 3, dt);
          const Tensor z = extras ? rand_cpu({B, E}, seed + 4, dt, -2.0, 2.0) : Tensor();
          const ScanExtras exc{z, bias, extras}, exg{gpu(z), gpu(bias), extras};
          Tensor yc = kernels::selective_scan_step(hc, u, delta, A, Bm, Cm, D, exc);
          Tensor yg = kernels::selective_scan_step(hg, gpu(u), gpu(delta), gpu(A), gpu(Bm), gpu(Cm), gpu(D), exg);
          expect_close(yg, yc, dt, what + str(" y at step ", s));
          expect_close(hg, hc, dt, what + str(" h at step ", s));
        }
      }
}

TEST_CASE("cuda scan: argument checks as on the CPU") {
  SEQLAB_REQUIRE_GPU();
  {
    const ScanIn g = to_gpu(make_scan(1, 4, 3, 300, DType::f32, 1, false, false, false));
    try {
      kernels::selective_scan_forward(g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, 64, true);
      FAIL("d_state 300 accepted");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("exceeds the supported 256") != std::string::npos);
    }
  }
  const ScanIn c = make_scan(1, 100, 3, 4, DType::f32, 2, false, false, false), g = to_gpu(c);
  try {
    kernels::selective_scan_backward(gpu(c.u), g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, Tensor(), 16);
    FAIL("no checkpoints accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("missing state checkpoints") != std::string::npos);
  }
  try {
    kernels::selective_scan_forward(c.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, 64, true);
    FAIL("mixed devices accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("different devices") != std::string::npos);
  }
}

TEST_CASE("cuda scan: two runs give bit-identical results (scan and conv1d)") {
  SEQLAB_REQUIRE_GPU();
  const ScanIn g = to_gpu(make_scan(2, 300, 200, 16, DType::f32, 7, true, true, true));
  const Tensor dy = gpu(rand_cpu({2, 300, 200}, 8));
  auto run = [&] {
    auto f = kernels::selective_scan_forward(g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, 64, true);
    auto b = kernels::selective_scan_backward(dy, g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, f.checkpoints, 64);
    return std::vector<Tensor>{f.y, f.checkpoints, b.du, b.ddelta, b.dA, b.dB, b.dC, b.dD, b.dz, b.ddelta_bias};
  };
  auto one = run(), two = run();
  for (size_t i = 0; i < one.size(); ++i) CHECK_MESSAGE(one[i].to_vector() == two[i].to_vector(), "scan output " << i);

  const Tensor x = gpu(rand_cpu({3, 700, 96}, 9)), w = gpu(rand_cpu({96, 4}, 10)), bias = gpu(rand_cpu({96}, 11));
  const Tensor cdy = gpu(rand_cpu({3, 700, 96}, 12));
  auto crun = [&] {
    auto y = kernels::causal_conv1d_forward(x, w, bias, true);
    auto d = kernels::causal_conv1d_backward(cdy, x, w, bias, true);
    return std::vector<Tensor>{y, d[0], d[1], d[2]};
  };
  auto c1 = crun(), c2 = crun();
  for (size_t i = 0; i < c1.size(); ++i) CHECK_MESSAGE(c1[i].to_vector() == c2[i].to_vector(), "conv1d output " << i);
}

TEST_CASE("cuda scan: fused forward and backward peak memory has no (B - T - E - N) term") {
  SEQLAB_REQUIRE_GPU();
  const int64_t B = 2, T = 512, E = 64, N = 64;
  const ScanIn g = to_gpu(make_scan(B, T, E, N, DType::f32, 13, true, true, true));
  const Tensor dy = gpu(rand_cpu({B, T, E}, 14));
  auto run = [&] {
    auto f = kernels::selective_scan_forward(g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, 64, true);
    auto b = kernels::selective_scan_backward(dy, g.u, g.delta, g.A, g.Bm, g.Cm, g.D, g.ex, f.checkpoints, 64);
  };
  run();  // warm the cache
  const size_t base = cuda::device_allocator_stats().allocated;
  cuda::reset_device_peak();
  run();
  const size_t extra = cuda::device_allocator_stats().peak - base;
  const size_t states = static_cast<size_t>(B * T * E * N) * 4;
  MESSAGE("device scan fwd+bwd extra peak " << extra / 1024 << " KiB, one (B,T,E,N) tensor " << states / 1024 << " KiB");
  CHECK(extra < states / 4);
}

TEST_CASE("cuda conv1d: forward and backward match the CPU kernels in float32 and float64") {
  SEQLAB_REQUIRE_GPU();
  struct Case {
    int64_t B, T, C, K;
  };
  // Tails of warps and blocks, T < K, K = 1, several row tiles of the dw sums (B T = 2400).
  const Case cases[] = {{2, 9, 37, 4}, {3, 130, 5, 4}, {1, 70, 300, 3}, {2, 5, 3, 1}, {1, 2, 3, 4}, {4, 600, 33, 4}};
  uint64_t seed = 700;
  for (DType dt : {DType::f32, DType::f64})
    for (const Case& k : cases)
      for (bool silu : {false, true})
        for (bool with_bias : {true, false}) {
          const std::string what = str(dtype_name(dt), " conv1d B=", k.B, " T=", k.T, " C=", k.C, " K=", k.K,
                                       " silu=", silu, " bias=", with_bias);
          INFO(what);
          seed += 10;
          const Tensor x = rand_cpu({k.B, k.T, k.C}, seed, dt), w = rand_cpu({k.C, k.K}, seed + 1, dt);
          const Tensor bias = with_bias ? rand_cpu({k.C}, seed + 2, dt) : Tensor();
          const Tensor dy = rand_cpu({k.B, k.T, k.C}, seed + 3, dt);
          expect_close(kernels::causal_conv1d_forward(gpu(x), gpu(w), gpu(bias), silu),
                kernels::causal_conv1d_forward(x, w, bias, silu), dt, what + " y");
          auto dc = kernels::causal_conv1d_backward(dy, x, w, bias, silu);
          auto dg = kernels::causal_conv1d_backward(gpu(dy), gpu(x), gpu(w), gpu(bias), silu);
          expect_close(dg[0], dc[0], dt, what + " dx");
          expect_close(dg[1], dc[1], dt, what + " dw");
          expect_close(dg[2], dc[2], dt, what + " dbias");
        }
}

TEST_CASE("cuda conv1d: steps shift the buffer in place as the CPU does") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 900;
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t K : {4, 2, 1})
      for (bool silu : {true, false}) {
        const int64_t B = 3, C = 300;
        const std::string what = str(dtype_name(dt), " conv1d step K=", K, " silu=", silu);
        INFO(what);
        Tensor bc = rand_cpu({B, C, K - 1}, seed, dt);
        Tensor bg = gpu(bc);
        const Tensor w = rand_cpu({C, K}, seed + 1, dt), bias = rand_cpu({C}, seed + 2, dt);
        for (int s = 0; s < 5; ++s) {
          seed += 10;
          const Tensor xt = rand_cpu({B, C}, seed, dt);
          const Tensor yc = kernels::causal_conv1d_step(bc, xt, w, silu ? bias : Tensor(), silu);
          const Tensor yg = kernels::causal_conv1d_step(bg, gpu(xt), gpu(w), silu ? gpu(bias) : Tensor(), silu);
          expect_close(yg, yc, dt, what + str(" y at step ", s));
          expect_close(bg, bc, dt, what + str(" buffer at step ", s));
        }
      }
}

}  // TEST_SUITE
