// The S4D, S4 (DPLR), LSSL kernels and the long convolution on the device (core/cuda/ssm.cu,
// core/cuda/long_conv.cu) against the CPU kernels on the same inputs: every public function of
// core/kernels/{long_conv,s4d,s4}.h, forward and backward, float32 and float64 (the float64 comparison
// of a device backward with the CPU backward is the device gradient check), lengths that are not
// powers of two, both kernel directions, and bit-identical repeats.
// Tolerances are relative to the largest reference entry (atol = rtol * max |cpu|): float64 1e-10
// (1e-9 for the S4 / LSSL backwards, whose long sums run in another order); float32 1e-5 where both
// sides round one double result or add in the same order, 1e-4 for the FFT convolutions.
#include <cmath>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/kernels/hippo.h"
#include "core/kernels/long_conv.h"
#include "core/kernels/s4.h"
#include "core/kernels/s4d.h"
#include "core/random.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

namespace {

Tensor dev(const Tensor& t) { return t.defined() ? t.to(Device::cuda) : t; }

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::abs(v));
  return m;
}

// |gpu - cpu| <= rtol |cpu| + rtol max |cpu| elementwise
void check_scaled(const Tensor& gpu, const Tensor& cpu, double rtol, const std::string& what) {
  if (!cpu.defined() || !gpu.defined()) {
    check_close(gpu, cpu, rtol, rtol, what);
    return;
  }
  CHECK_MESSAGE(gpu.device() == Device::cuda, what << ": result not on cuda");
  check_close(gpu, cpu, rtol, rtol * max_abs(cpu) + 1e-300, what);
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  return !a.defined() || (a.shape() == b.shape() && a.to_vector() == b.to_vector());
}

std::string tag(const char* what, DType d, int64_t S, int64_t T) {
  return std::string(what) + " " + dtype_name(d) + " S=" + std::to_string(S) + " T=" + std::to_string(T);
}

Shape kernel_shape(int64_t S, int64_t D, int64_t T) { return S == 1 ? Shape{D, T} : Shape{2, D, T}; }

// S4D parameters in their realistic ranges: dt in [1e-3, 1e-1], A = -1/2 + i pi n (S4D-Lin) perturbed.
struct S4DParams {
  Tensor log_dt, log_A_real, A_imag, C;
};
S4DParams s4d_params(int64_t S, int64_t D, int64_t M, uint64_t seed, DType d) {
  Generator gen(seed);
  S4DParams p;
  p.log_dt = rand_uniform({D}, std::log(1e-3), std::log(1e-1), d, gen);
  p.log_A_real = randn({D, M}, std::log(0.5), 0.2, d, gen);
  std::vector<double> ai(static_cast<size_t>(D * M));
  for (int64_t i = 0; i < D * M; ++i) ai[i] = M_PI * static_cast<double>(i % M) + 0.3 * gen.uniform();
  p.A_imag = Tensor::from_vector(ai, {D, M}, d);
  p.C = randn(S == 1 ? Shape{D, M, 2} : Shape{2, D, M, 2}, 0.0, std::sqrt(0.5), d, gen);
  return p;
}

// S4 parameters: either the HiPPO-LegS NPLR init (dt in [1e-3, 1e-1]) or away from it (dt in
// [0.1, 0.6], where the kernel varies within a few steps), as tests/test_s4.cpp.
struct S4Params {
  Tensor log_dt, log_A_real, A_imag, P, B, C;
};
S4Params s4_params(int64_t D, int64_t M, uint64_t seed, DType d, bool nplr) {
  Generator gen(seed);
  S4Params p;
  if (nplr) {
    kernels::NplrLegs r = kernels::nplr_legs(2 * M);
    std::vector<double> lar(static_cast<size_t>(D * M)), ai(lar.size()), pv(2 * lar.size()), bv(pv.size());
    for (int64_t dd = 0; dd < D; ++dd)
      for (int64_t m = 0; m < M; ++m) {
        const int64_t i = dd * M + m;
        lar[i] = std::log(-r.Lambda[m].real());
        ai[i] = r.Lambda[m].imag();
        pv[2 * i] = r.P[m].real();
        pv[2 * i + 1] = r.P[m].imag();
        bv[2 * i] = r.B[m].real();
        bv[2 * i + 1] = r.B[m].imag();
      }
    p.log_dt = rand_uniform({D}, std::log(1e-3), std::log(1e-1), d, gen);
    p.log_A_real = Tensor::from_vector(lar, {D, M}, d);
    p.A_imag = Tensor::from_vector(ai, {D, M}, d);
    p.P = Tensor::from_vector(pv, {D, M, 2}, d);
    p.B = Tensor::from_vector(bv, {D, M, 2}, d);
  } else {
    p.log_dt = rand_uniform({D}, std::log(0.1), std::log(0.6), d, gen);
    p.log_A_real = randn({D, M}, std::log(0.5), 0.3, d, gen);
    p.A_imag = randn({D, M}, 0.0, 2.0, d, gen);
    p.P = randn({D, M, 2}, 0, 0.5, d, gen);
    p.B = randn({D, M, 2}, 0, 0.7, d, gen);
  }
  p.C = randn({D, M, 2}, 0, 0.7, d, gen);
  return p;
}

}  // namespace

TEST_SUITE("cuda") {

// ---------------------------------------------------------------------------------------------
// Long convolution

TEST_CASE("cuda ssm: long convolution forward (auto - direct - FFT) against the CPU") {
  SEQLAB_REQUIRE_GPU();
  const int64_t B = 2, D = 5;
  for (DType d : {DType::f32, DType::f64})
    for (int64_t S : {1, 2})
      for (int64_t T : {1, 5, 37, 64, 65, 300, 1000}) {
        const uint64_t seed = 100 + 10 * T + S;
        Tensor u = rand_cpu({B, T, D}, seed, d), K = rand_cpu(kernel_shape(S, D, T), seed + 1, d);
        Tensor gu = dev(u), gK = dev(K);
        const bool f32 = d == DType::f32;
        // auto: float32 CPU is the FFT (1e-4), float64 CPU the direct loops
        check_scaled(kernels::causal_conv_forward(gu, gK), kernels::causal_conv_forward(u, K), f32 ? 1e-4 : 1e-10,
                     tag("causal_conv_forward", d, S, T));
        check_scaled(kernels::causal_conv_direct_forward(gu, gK), kernels::causal_conv_direct_forward(u, K),
                     f32 ? 1e-5 : 1e-10, tag("causal_conv_direct_forward", d, S, T));
        if (f32)
          check_scaled(kernels::causal_conv_fft_forward(gu, gK), kernels::causal_conv_fft_forward(u, K), 1e-4,
                       tag("causal_conv_fft_forward", d, S, T));
      }
  // a long float32 sequence (FFT on both sides)
  Tensor u = rand_cpu({2, 2500, 3}, 7), K = rand_cpu({2, 3, 2500}, 8);
  check_scaled(kernels::causal_conv_forward(dev(u), dev(K)), kernels::causal_conv_forward(u, K), 1e-4,
               "causal_conv_forward float32 T=2500");
}

TEST_CASE("cuda ssm: long convolution backward (auto - direct - FFT) against the CPU") {
  SEQLAB_REQUIRE_GPU();
  const int64_t B = 3, D = 4;
  struct Need {
    bool u, K;
  };
  for (DType d : {DType::f32, DType::f64})
    for (int64_t S : {1, 2})
      for (int64_t T : {1, 6, 50, 65, 301, 1000})
        for (Need nd : {Need{true, true}, Need{true, false}, Need{false, true}}) {
          const uint64_t seed = 200 + 10 * T + S;
          Tensor u = rand_cpu({B, T, D}, seed, d), K = rand_cpu(kernel_shape(S, D, T), seed + 1, d);
          Tensor dy = rand_cpu({B, T, D}, seed + 2, d);
          Tensor gu = dev(u), gK = dev(K), gdy = dev(dy);
          const bool f32 = d == DType::f32;
          const std::string sfx = std::string(nd.u ? " du" : "") + (nd.K ? " dK" : "");
          kernels::ConvGrads c = kernels::causal_conv_backward(dy, u, K, nd.u, nd.K);
          kernels::ConvGrads g = kernels::causal_conv_backward(gdy, gu, gK, nd.u, nd.K);
          check_scaled(g.du, c.du, f32 ? 1e-4 : 1e-10, tag("causal_conv_backward du", d, S, T) + sfx);
          check_scaled(g.dK, c.dK, f32 ? 1e-4 : 1e-10, tag("causal_conv_backward dK", d, S, T) + sfx);
          c = kernels::causal_conv_direct_backward(dy, u, K, nd.u, nd.K);
          g = kernels::causal_conv_direct_backward(gdy, gu, gK, nd.u, nd.K);
          check_scaled(g.du, c.du, f32 ? 1e-5 : 1e-10, tag("causal_conv_direct_backward du", d, S, T) + sfx);
          check_scaled(g.dK, c.dK, f32 ? 1e-5 : 1e-10, tag("causal_conv_direct_backward dK", d, S, T) + sfx);
          if (f32) {
            c = kernels::causal_conv_fft_backward(dy, u, K, nd.u, nd.K);
            g = kernels::causal_conv_fft_backward(gdy, gu, gK, nd.u, nd.K);
            check_scaled(g.du, c.du, 1e-4, tag("causal_conv_fft_backward du", d, S, T) + sfx);
            check_scaled(g.dK, c.dK, 1e-4, tag("causal_conv_fft_backward dK", d, S, T) + sfx);
          }
        }
}

TEST_CASE("cuda ssm: long convolution errors name the op (FFT dtype - shapes - devices)") {
  SEQLAB_REQUIRE_GPU();
  Tensor u = rand_cpu({2, 10, 3}, 1, DType::f64), K = rand_cpu({3, 10}, 2, DType::f64);
  CHECK_THROWS_WITH_AS(kernels::causal_conv_fft_forward(dev(u), dev(K)), doctest::Contains("float32 only"), Error);
  CHECK_THROWS_WITH_AS(kernels::causal_conv_forward(dev(u), dev(rand_cpu({3, 9}, 3, DType::f64))),
                       doctest::Contains("K must be (D, T)"), Error);
  CHECK_THROWS_WITH_AS(kernels::causal_conv_forward(dev(u), K), doctest::Contains("different devices"), Error);
}

// ---------------------------------------------------------------------------------------------
// S4D

TEST_CASE("cuda ssm: S4D Vandermonde kernel forward and backward against the CPU") {
  SEQLAB_REQUIRE_GPU();
  const int64_t D = 3, M = 8;
  for (DType d : {DType::f32, DType::f64})
    for (int64_t S : {1, 2})
      for (int64_t T : {1, 100, 1000}) {
        S4DParams p = s4d_params(S, D, M, 300 + T + S, d);
        S4DParams g{dev(p.log_dt), dev(p.log_A_real), dev(p.A_imag), dev(p.C)};
        const double tol = d == DType::f32 ? 1e-5 : 1e-10;
        Tensor Kc = kernels::s4d_kernel_forward(p.log_dt, p.log_A_real, p.A_imag, p.C, T);
        Tensor Kg = kernels::s4d_kernel_forward(g.log_dt, g.log_A_real, g.A_imag, g.C, T);
        check_scaled(Kg, Kc, tol, tag("s4d_kernel_forward", d, S, T));
        Tensor dK = rand_cpu(Kc.shape(), 400 + T, d);
        auto c = kernels::s4d_kernel_backward(dK, p.log_dt, p.log_A_real, p.A_imag, p.C);
        auto r = kernels::s4d_kernel_backward(dev(dK), g.log_dt, g.log_A_real, g.A_imag, g.C);
        check_scaled(r.dlog_dt, c.dlog_dt, tol, tag("s4d_kernel_backward dlog_dt", d, S, T));
        check_scaled(r.dlog_A_real, c.dlog_A_real, tol, tag("s4d_kernel_backward dlog_A_real", d, S, T));
        check_scaled(r.dA_imag, c.dA_imag, tol, tag("s4d_kernel_backward dA_imag", d, S, T));
        check_scaled(r.dC, c.dC, tol, tag("s4d_kernel_backward dC", d, S, T));
      }
}

TEST_CASE("cuda ssm: S4D skip + GELU - skip backward and GLU against the CPU") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64})
    for (Shape s : {Shape{3, 37, 10}, Shape{2, 1500, 6}}) {  // the second: more than one 1024-row chunk
      const double tol = d == DType::f32 ? 1e-5 : 1e-12;
      const std::string sh = std::string(" ") + dtype_name(d) + " " + to_string(s);
      Tensor y = rand_cpu(s, 1, d, -2, 2), u = rand_cpu(s, 2, d), Ds = rand_cpu({s[2]}, 3, d);
      kernels::SkipGelu c = kernels::s4d_skip_gelu_forward(y, u, Ds);
      kernels::SkipGelu g = kernels::s4d_skip_gelu_forward(dev(y), dev(u), dev(Ds));
      check_scaled(g.h, c.h, tol, "s4d_skip_gelu h" + sh);
      check_scaled(g.pre, c.pre, tol, "s4d_skip_gelu pre" + sh);

      Tensor dpre = rand_cpu(s, 4, d);
      for (int mode = 0; mode < 3; ++mode) {  // du created; du given (accumulated in place); no du
        const bool need_u = mode < 2;
        Tensor du_c = mode == 1 ? rand_cpu(s, 5, d) : Tensor(), du_g = dev(du_c);
        Tensor dD_c = kernels::s4d_skip_backward(du_c, dpre, u, Ds, need_u, true);
        Tensor dD_g = kernels::s4d_skip_backward(du_g, dev(dpre), dev(u), dev(Ds), need_u, true);
        check_scaled(dD_g, dD_c, tol, "s4d_skip_backward dD mode " + std::to_string(mode) + sh);
        check_scaled(du_g, du_c, tol, "s4d_skip_backward du mode " + std::to_string(mode) + sh);
      }
      Tensor du_n;
      CHECK_FALSE(kernels::s4d_skip_backward(du_n, dev(dpre), dev(u), dev(Ds), false, false).defined());

      Shape zs = s;
      zs.back() *= 2;
      Tensor z = rand_cpu(zs, 6, d, -4, 4);
      check_scaled(kernels::glu_forward(dev(z)), kernels::glu_forward(z), tol, "glu_forward" + sh);
      Tensor dout = rand_cpu(s, 7, d);
      check_scaled(kernels::glu_backward(dev(dout), dev(z)), kernels::glu_backward(dout, z), tol, "glu_backward" + sh);
    }
  CHECK_THROWS_WITH_AS(kernels::glu_forward(dev(rand_cpu({2, 3}, 1))), doctest::Contains("even last axis"), Error);
}

TEST_CASE("cuda ssm: S4D step against the CPU") {
  SEQLAB_REQUIRE_GPU();
  const int64_t B = 3, D = 4, M = 8;
  for (DType d : {DType::f32, DType::f64}) {
    S4DParams p = s4d_params(1, D, M, 500, d);
    Tensor Ds = rand_cpu({D}, 501, d);
    Tensor sc = rand_cpu({B, D, M, 2}, 502, d), sg = dev(sc);
    for (int step = 0; step < 3; ++step) {
      Tensor u = rand_cpu({B, D}, 503 + step, d);
      Tensor yc = kernels::s4d_step_forward(u, sc, p.log_dt, p.log_A_real, p.A_imag, p.C, Ds);
      Tensor yg = kernels::s4d_step_forward(dev(u), sg, dev(p.log_dt), dev(p.log_A_real), dev(p.A_imag), dev(p.C),
                                            dev(Ds));
      const double tol = d == DType::f32 ? 1e-5 : 1e-12;
      check_scaled(yg, yc, tol, std::string("s4d_step y ") + dtype_name(d));
      check_scaled(sg, sc, tol, std::string("s4d_step state ") + dtype_name(d));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// S4

TEST_CASE("cuda ssm: S4 (DPLR) kernel forward and backward against the CPU") {
  SEQLAB_REQUIRE_GPU();
  const int64_t D = 3, M = 8;
  for (DType d : {DType::f32, DType::f64})
    for (bool nplr : {true, false})
      for (int64_t T : {1, 2, 7, 64, 257}) {
        S4Params p = s4_params(D, M, 600 + T, d, nplr);
        S4Params g{dev(p.log_dt), dev(p.log_A_real), dev(p.A_imag), dev(p.P), dev(p.B), dev(p.C)};
        const bool f32 = d == DType::f32;
        const std::string what = tag(nplr ? "s4 (nplr init)" : "s4", d, 1, T);
        Tensor Kc = kernels::s4_kernel_forward(p.log_dt, p.log_A_real, p.A_imag, p.P, p.B, p.C, T);
        Tensor Kg = kernels::s4_kernel_forward(g.log_dt, g.log_A_real, g.A_imag, g.P, g.B, g.C, T);
        check_scaled(Kg, Kc, f32 ? 1e-5 : 1e-10, what + " K");
        Tensor dK = rand_cpu({D, T}, 700 + T, d);
        auto c = kernels::s4_kernel_backward(dK, p.log_dt, p.log_A_real, p.A_imag, p.P, p.B, p.C);
        auto r = kernels::s4_kernel_backward(dev(dK), g.log_dt, g.log_A_real, g.A_imag, g.P, g.B, g.C);
        const double tol = f32 ? 1e-5 : 1e-9;
        check_scaled(r.dlog_dt, c.dlog_dt, tol, what + " dlog_dt");
        check_scaled(r.dlog_A_real, c.dlog_A_real, tol, what + " dlog_A_real");
        check_scaled(r.dA_imag, c.dA_imag, tol, what + " dA_imag");
        check_scaled(r.dP, c.dP, tol, what + " dP");
        check_scaled(r.dB, c.dB, tol, what + " dB");
        check_scaled(r.dC, c.dC, tol, what + " dC");
      }
}

TEST_CASE("cuda ssm: S4 dense discretisation - dense kernel and step against the CPU") {
  SEQLAB_REQUIRE_GPU();
  const int64_t B = 2, D = 3, M = 4, N = 2 * M, T = 9;
  for (DType d : {DType::f32, DType::f64}) {
    const double tol = d == DType::f32 ? 1e-5 : 1e-10;
    S4Params p = s4_params(D, M, 800, d, false);
    kernels::Discretised c = kernels::s4_discretise(p.log_dt, p.log_A_real, p.A_imag, p.P, p.B);
    kernels::Discretised g =
        kernels::s4_discretise(dev(p.log_dt), dev(p.log_A_real), dev(p.A_imag), dev(p.P), dev(p.B));
    check_scaled(g.dA, c.dA, tol, std::string("s4_discretise dA ") + dtype_name(d));
    check_scaled(g.dB, c.dB, tol, std::string("s4_discretise dB ") + dtype_name(d));
    check_scaled(kernels::s4_kernel_dense(g, dev(p.C), T), kernels::s4_kernel_dense(c, p.C, T), tol,
                 std::string("s4_kernel_dense ") + dtype_name(d));
    Tensor Ds = rand_cpu({D}, 801, d);
    Tensor sc = rand_cpu({B, D, N, 2}, 802, d), sg = dev(sc);
    for (int step = 0; step < 3; ++step) {
      Tensor u = rand_cpu({B, D}, 803 + step, d);
      Tensor yc = kernels::s4_step_forward(u, sc, c, p.C, Ds);
      Tensor yg = kernels::s4_step_forward(dev(u), sg, g, dev(p.C), dev(Ds));
      check_scaled(yg, yc, tol, std::string("s4_step y ") + dtype_name(d));
      check_scaled(sg, sc, tol, std::string("s4_step state ") + dtype_name(d));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LSSL

TEST_CASE("cuda ssm: LSSL kernel forward and backward - discretisation and step against the CPU") {
  SEQLAB_REQUIRE_GPU();
  const int64_t D = 3, B = 2;
  for (int64_t N : {5, 16}) {
    const kernels::HippoLegs hp = kernels::hippo_legs(N);
    for (DType d : {DType::f32, DType::f64}) {
      const bool f32 = d == DType::f32;
      for (int64_t T : {1, 50, 300}) {
        Generator gen(900 + N + T);
        Tensor log_dt = rand_uniform({D}, std::log(1e-3), std::log(1e-1), d, gen);
        Tensor C = randn({D, N}, 0.0, 1.0, d, gen);
        const std::string what = tag("lssl", d, 1, T) + " N=" + std::to_string(N);
        Tensor Kc = kernels::lssl_kernel_forward(log_dt, C, hp, T);
        check_scaled(kernels::lssl_kernel_forward(dev(log_dt), dev(C), hp, T), Kc, f32 ? 1e-5 : 1e-10, what + " K");
        Tensor dK = rand_cpu({D, T}, 950 + T, d);
        auto c = kernels::lssl_kernel_backward(dK, log_dt, C, hp);
        auto g = kernels::lssl_kernel_backward(dev(dK), dev(log_dt), dev(C), hp);
        check_scaled(g.dlog_dt, c.dlog_dt, f32 ? 1e-5 : 1e-9, what + " dlog_dt");
        check_scaled(g.dC, c.dC, f32 ? 1e-5 : 1e-9, what + " dC");
      }
      Generator gen(990 + N);
      Tensor log_dt = rand_uniform({D}, std::log(1e-3), std::log(1e-1), d, gen);
      Tensor C = randn({D, N}, 0.0, 1.0, d, gen), Ds = randn({D}, 0.0, 1.0, d, gen);
      const double tol = f32 ? 1e-5 : 1e-10;
      kernels::Discretised dc = kernels::lssl_discretise(log_dt, hp);
      kernels::Discretised dg = kernels::lssl_discretise(dev(log_dt), hp);
      check_scaled(dg.dA, dc.dA, tol, std::string("lssl_discretise dA ") + dtype_name(d));
      check_scaled(dg.dB, dc.dB, tol, std::string("lssl_discretise dB ") + dtype_name(d));
      Tensor sc = rand_cpu({B, D, N}, 991, d), sg = dev(sc);
      for (int step = 0; step < 3; ++step) {
        Tensor u = rand_cpu({B, D}, 992 + step, d);
        Tensor yc = kernels::lssl_step_forward(u, sc, dc, C, Ds);
        Tensor yg = kernels::lssl_step_forward(dev(u), sg, dg, dev(C), dev(Ds));
        check_scaled(yg, yc, tol, std::string("lssl_step y ") + dtype_name(d));
        check_scaled(sg, sc, tol, std::string("lssl_step state ") + dtype_name(d));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("cuda ssm: a repeated device computation is bit-identical") {
  SEQLAB_REQUIRE_GPU();
  // long convolution, FFT and direct
  for (int64_t T : {40, 300}) {
    Tensor u = dev(rand_cpu({4, T, 6}, 1)), K = dev(rand_cpu({2, 6, T}, 2)), dy = dev(rand_cpu({4, T, 6}, 3));
    CHECK(bit_equal(kernels::causal_conv_forward(u, K), kernels::causal_conv_forward(u, K)));
    auto a = kernels::causal_conv_backward(dy, u, K, true, true), b = kernels::causal_conv_backward(dy, u, K, true, true);
    CHECK(bit_equal(a.du, b.du));
    CHECK(bit_equal(a.dK, b.dK));
  }
  // S4D kernel backward and the skip's dD
  {
    S4DParams p = s4d_params(2, 4, 8, 11, DType::f32);
    S4DParams g{dev(p.log_dt), dev(p.log_A_real), dev(p.A_imag), dev(p.C)};
    Tensor dK = dev(rand_cpu({2, 4, 200}, 12));
    auto a = kernels::s4d_kernel_backward(dK, g.log_dt, g.log_A_real, g.A_imag, g.C);
    auto b = kernels::s4d_kernel_backward(dK, g.log_dt, g.log_A_real, g.A_imag, g.C);
    CHECK(bit_equal(a.dlog_dt, b.dlog_dt));
    CHECK(bit_equal(a.dC, b.dC));
    Tensor u = dev(rand_cpu({2, 1500, 5}, 13)), dpre = dev(rand_cpu({2, 1500, 5}, 14)), Ds = dev(rand_cpu({5}, 15));
    Tensor du1, du2;
    CHECK(bit_equal(kernels::s4d_skip_backward(du1, dpre, u, Ds, true, true),
                    kernels::s4d_skip_backward(du2, dpre, u, Ds, true, true)));
  }
  // S4 and LSSL kernel backwards
  {
    S4Params p = s4_params(3, 8, 16, DType::f32, true);
    S4Params g{dev(p.log_dt), dev(p.log_A_real), dev(p.A_imag), dev(p.P), dev(p.B), dev(p.C)};
    Tensor dK = dev(rand_cpu({3, 129}, 17));
    auto a = kernels::s4_kernel_backward(dK, g.log_dt, g.log_A_real, g.A_imag, g.P, g.B, g.C);
    auto b = kernels::s4_kernel_backward(dK, g.log_dt, g.log_A_real, g.A_imag, g.P, g.B, g.C);
    CHECK(bit_equal(a.dlog_dt, b.dlog_dt));
    CHECK(bit_equal(a.dP, b.dP));
    CHECK(bit_equal(a.dC, b.dC));
    const kernels::HippoLegs hp = kernels::hippo_legs(8);
    Tensor log_dt = dev(rand_cpu({3}, 18, DType::f32, std::log(1e-3), std::log(1e-1))), C = dev(rand_cpu({3, 8}, 19));
    Tensor dKl = dev(rand_cpu({3, 100}, 20));
    auto la = kernels::lssl_kernel_backward(dKl, log_dt, C, hp), lb = kernels::lssl_kernel_backward(dKl, log_dt, C, hp);
    CHECK(bit_equal(la.dlog_dt, lb.dlog_dt));
    CHECK(bit_equal(la.dC, lb.dC));
  }
}

}  // TEST_SUITE
