// S4D (layers/s4d, autograd/ops/s4d, autograd/ops/long_conv, core/kernels/s4d, core/kernels/long_conv):
// float64 gradchecks of the four fused ops (kernel, long convolution, conv_skip_gelu, glu) and of the
// whole layer (input and every parameter), fused ops against their composite references (float64
// tight, float32), the FFT path against the direct loops, PyTorch reference values for the output-path
// ops (tests/fixtures/gen_s4d_ops.py) and the layer (gen_s4d.py), step mode against the parallel
// forward, options and the factory.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numbers>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/ops/long_conv.h"
#include "autograd/ops/s4d.h"
#include "core/kernels/fft.h"
#include "core/kernels/long_conv.h"
#include "core/kernels/s4d.h"
#include "core/parallel.h"
#include "core/random.h"
#include "fixtures.h"
#include "layers/s4d.h"
#include "testing.h"

using namespace seqlab;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

Tensor rnd(const Shape& s, uint64_t seed, double mean = 0, double std = 1, DType dt = DType::f64) {
  Generator gen(seed);
  return randn(s, mean, std, dt, gen);
}

// Kernel parameters away from the init (dt in a range where the kernel varies over a few steps).
struct KParams {
  Tensor log_dt, log_A_real, A_imag, C;
  std::vector<Tensor> all() const { return {log_dt, log_A_real, A_imag, C}; }
};
KParams kparams(int64_t S, int64_t D, int64_t M, uint64_t seed, DType dt = DType::f64) {
  Generator gen(seed);
  KParams p;
  p.log_dt = rand_uniform({D}, std::log(0.05), std::log(0.5), dt, gen);
  p.log_A_real = randn({D, M}, std::log(0.5), 0.3, dt, gen);
  std::vector<double> ai(static_cast<size_t>(D * M));
  for (int64_t d = 0; d < D; ++d)
    for (int64_t m = 0; m < M; ++m) ai[d * M + m] = 3.14159265358979 * m + 0.3 * gen.normal();
  p.A_imag = Tensor::from_vector(ai, {D, M}, dt);
  p.C = S == 1 ? randn({D, M, 2}, 0, 0.7, dt, gen) : randn({S, D, M, 2}, 0, 0.7, dt, gen);
  return p;
}

std::vector<Tensor> leaves(const std::vector<Tensor>& xs, DType dt) {
  std::vector<Tensor> out;
  for (const Tensor& x : xs) out.push_back(x.to(dt).set_requires_grad());
  return out;
}

// Output and gradients of sum(f(inputs) * w) w.r.t. every input (fresh leaves of dtype dt).
struct Run {
  Tensor y;
  std::vector<Tensor> g;
};
Run run(const Fn& f, const std::vector<Tensor>& inputs, const Tensor& w, DType dt) {
  std::vector<Tensor> in = leaves(inputs, dt);
  Run r;
  r.y = f(in);
  backward(r.y, w.to(dt));
  for (const Tensor& x : in) r.g.push_back(x.grad());
  return r;
}

void compare(const Run& a, const Run& b, double rtol, double atol) {
  CHECK_CLOSE(a.y, b.y, rtol, atol);
  REQUIRE(a.g.size() == b.g.size());
  for (size_t i = 0; i < a.g.size(); ++i) {
    INFO("gradient of input " << i);
    CHECK_CLOSE(a.g[i], b.g[i], rtol, atol);
  }
}

double max_rel(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  double md = 0, mb = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    md = std::max(md, std::abs(x[i] - y[i]));
    mb = std::max(mb, std::abs(y[i]));
  }
  return md / std::max(mb, 1e-12);
}

Fn kernel_fused(int64_t T) {
  return [T](const std::vector<Tensor>& in) { return s4d_kernel(in[0], in[1], in[2], in[3], T); };
}
Fn kernel_ref(int64_t T) {
  return [T](const std::vector<Tensor>& in) { return s4d_kernel_reference(in[0], in[1], in[2], in[3], T); };
}
Fn conv_fused() {
  return [](const std::vector<Tensor>& in) { return causal_conv_fft(in[0], in[1]); };
}
Fn conv_ref() {
  return [](const std::vector<Tensor>& in) { return causal_conv_reference(in[0], in[1]); };
}

Fn skip_gelu_fused() {
  return [](const std::vector<Tensor>& in) { return conv_skip_gelu(in[0], in[1], in[2]); };
}
Fn skip_gelu_ref() {
  return [](const std::vector<Tensor>& in) { return conv_skip_gelu_reference(in[0], in[1], in[2]); };
}
Fn glu_fused() {
  return [](const std::vector<Tensor>& in) { return glu(in[0]); };
}
Fn glu_ref() {
  return [](const std::vector<Tensor>& in) { return glu_reference(in[0]); };
}

nn::S4D make_layer(int64_t D, int64_t N, bool bidirectional, uint64_t seed, const std::string& init = "lin") {
  Generator gen(seed);
  return nn::S4D(nn::S4DOptions{.d_model = D, .d_state = N, .init = init, .bidirectional = bidirectional}, gen);
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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Fused ops

TEST_CASE("layers/s4d: kernel op gradcheck (one and two directions)") {
  for (int64_t S : {1, 2}) {
    KParams p = kparams(S, 3, 2, 11 + S);
    std::vector<Tensor> in = leaves(p.all(), DType::f64);
    auto g = gradcheck(kernel_fused(6), in);
    INFO("S = " << S << "\n" << g.report);
    CHECK(g.ok);
    MESSAGE("s4d_kernel gradcheck S=" << S << ": max rel error " << g.max_rel_error);
  }
}

TEST_CASE("layers/s4d: conv op gradcheck (causal and two-sided)") {
  for (int64_t S : {1, 2}) {
    Tensor u = rnd({2, 5, 3}, 21);
    Tensor K = S == 1 ? rnd({3, 5}, 22) : rnd({2, 3, 5}, 23);
    std::vector<Tensor> in = leaves({u, K}, DType::f64);
    auto g = gradcheck(conv_fused(), in);
    INFO("S = " << S << "\n" << g.report);
    CHECK(g.ok);
    MESSAGE("causal_conv_fft gradcheck S=" << S << ": max rel error " << g.max_rel_error);
  }
}

TEST_CASE("layers/s4d: kernel fused vs composite reference, float64 and float32") {
  for (int64_t S : {1, 2}) {
    int64_t D = 3, M = 4, T = 9;
    KParams p = kparams(S, D, M, 31 + S);
    Tensor w = rnd(S == 1 ? Shape{D, T} : Shape{S, D, T}, 33);
    Run a = run(kernel_fused(T), p.all(), w, DType::f64), b = run(kernel_ref(T), p.all(), w, DType::f64);
    compare(a, b, 1e-10, 1e-12);
    double worst = max_rel(a.y, b.y);
    for (size_t i = 0; i < a.g.size(); ++i) worst = std::max(worst, max_rel(a.g[i], b.g[i]));
    MESSAGE("s4d_kernel fused vs reference f64 S=" << S << ": max rel diff " << worst);
    Run a32 = run(kernel_fused(T), p.all(), w, DType::f32);
    compare(a32, b, 1e-4, 1e-5);
  }
}

TEST_CASE("layers/s4d: conv fused vs composite reference, float64 and float32") {
  testing::for_each_isa([&] {
    for (int64_t S : {1, 2}) {
      int64_t B = 2, T = 7, D = 3;
      Tensor u = rnd({B, T, D}, 41), K = rnd(S == 1 ? Shape{D, T} : Shape{S, D, T}, 42), w = rnd({B, T, D}, 43);
      Run a = run(conv_fused(), {u, K}, w, DType::f64), b = run(conv_ref(), {u, K}, w, DType::f64);
      compare(a, b, 1e-12, 1e-12);
      Run a32 = run(conv_fused(), {u, K}, w, DType::f32);  // the FFT path
      compare(a32, b, 1e-4, 1e-5);
      double worst = max_rel(a32.y, b.y);
      for (size_t i = 0; i < a32.g.size(); ++i) worst = std::max(worst, max_rel(a32.g[i], b.g[i]));
      MESSAGE("causal_conv_fft (FFT, f32) vs reference S=" << S << ": max rel diff " << worst);
    }
  });
}

TEST_CASE("ops/conv_skip_gelu: gradcheck (causal and two-sided)") {
  for (int64_t S : {1, 2}) {
    Tensor u = rnd({2, 5, 3}, 121), K = S == 1 ? rnd({3, 5}, 122) : rnd({2, 3, 5}, 123), Dskip = rnd({3}, 124);
    std::vector<Tensor> in = leaves({u, K, Dskip}, DType::f64);
    auto g = gradcheck(skip_gelu_fused(), in);
    INFO("S = " << S << "\n" << g.report);
    CHECK(g.ok);
    MESSAGE("conv_skip_gelu gradcheck S=" << S << ": max rel error " << g.max_rel_error);
  }
}

TEST_CASE("ops/glu: gradcheck") {
  std::vector<Tensor> in = leaves({rnd({2, 3, 10}, 131)}, DType::f64);
  auto g = gradcheck(glu_fused(), in);
  INFO(g.report);
  CHECK(g.ok);
  MESSAGE("glu gradcheck: max rel error " << g.max_rel_error);
}

TEST_CASE("ops/conv_skip_gelu: fused vs composite reference, float64 and float32") {
  testing::for_each_isa([&] {
    // D = 19: one full 16-channel transform group and a partial one, and a GELU tail shorter than a vector
    for (int64_t S : {1, 2}) {
      const int64_t B = 3, T = 11, D = 19;
      Tensor u = rnd({B, T, D}, 141), K = rnd(S == 1 ? Shape{D, T} : Shape{S, D, T}, 142, 0, 0.3),
             Dskip = rnd({D}, 143), w = rnd({B, T, D}, 144);
      Run a = run(skip_gelu_fused(), {u, K, Dskip}, w, DType::f64);
      Run b = run(skip_gelu_ref(), {u, K, Dskip}, w, DType::f64);
      compare(a, b, 1e-12, 1e-12);
      Run a32 = run(skip_gelu_fused(), {u, K, Dskip}, w, DType::f32);
      Run b32 = run(skip_gelu_ref(), {u, K, Dskip}, w, DType::f32);
      compare(a32, b32, 1e-5, 1e-5);
      double worst = max_rel(a32.y, b32.y);
      for (size_t i = 0; i < a32.g.size(); ++i) worst = std::max(worst, max_rel(a32.g[i], b32.g[i]));
      MESSAGE("conv_skip_gelu fused vs reference f32 S=" << S << ": max rel diff " << worst);
    }
  });
}

TEST_CASE("ops/glu: fused vs composite reference, float64 and float32") {
  testing::for_each_isa([&] {
    for (int64_t D : {1, 19, 64}) {  // tails shorter than a vector, and whole vectors
      Tensor z = rnd({3, 7, 2 * D}, 150 + D, 0, 2), w = rnd({3, 7, D}, 151 + D);
      Run a = run(glu_fused(), {z}, w, DType::f64), b = run(glu_ref(), {z}, w, DType::f64);
      INFO("D = " << D);
      compare(a, b, 1e-14, 1e-15);
      Run a32 = run(glu_fused(), {z}, w, DType::f32), b32 = run(glu_ref(), {z}, w, DType::f32);
      compare(a32, b32, 1e-6, 1e-7);
    }
  });
}

TEST_CASE("ops/conv_skip_gelu and ops/glu: PyTorch reference values (float64 and float32)") {
  testing::for_each_isa([&] {
    auto fx = testing::load_fixture("s4d_ops.txt");
    auto t = [&](const std::string& name) { return testing::fixture_tensor(fx, name); };
    for (DType dt : {DType::f64, DType::f32}) {
      const double rtol = dt == DType::f64 ? 1e-10 : 1e-4, atol = dt == DType::f64 ? 1e-12 : 1e-5;
      INFO("dtype " << std::string(dtype_name(dt)));
      for (std::string p : {"conv.", "conv_bi."}) {
        INFO(p);
        Run r = run(skip_gelu_fused(), {t(p + "x"), t(p + "K"), t(p + "D")}, t(p + "w"), dt);
        CHECK_CLOSE(r.y, t(p + "out"), rtol, atol);
        CHECK_CLOSE(r.g[0], t(p + "grad.x"), rtol, atol);
        CHECK_CLOSE(r.g[1], t(p + "grad.K"), rtol, atol);
        CHECK_CLOSE(r.g[2], t(p + "grad.D"), rtol, atol);
      }
      Run r = run(glu_fused(), {t("glu.z")}, t("glu.w"), dt);
      CHECK_CLOSE(r.y, t("glu.out"), rtol, atol);
      CHECK_CLOSE(r.g[0], t("glu.grad.z"), rtol, atol);
    }
  });
}

TEST_CASE("layers/s4d: FFT convolution equals the direct loops at awkward lengths") {
  for (int64_t T : {1, 2, 13, 97, 336}) {
    for (int64_t S : {1, 2}) {
      int64_t B = 2, D = 5;
      Tensor u = rnd({B, T, D}, 50 + T, 0, 1, DType::f32);
      Tensor K = rnd(S == 1 ? Shape{D, T} : Shape{S, D, T}, 60 + T, 0, 1.0 / std::sqrt(double(T)), DType::f32);
      Tensor dy = rnd({B, T, D}, 70 + T, 0, 1, DType::f32);
      Tensor y_fft = kernels::causal_conv_fft_forward(u, K);
      Tensor y_dir = kernels::causal_conv_direct_forward(u.to(DType::f64), K.to(DType::f64));
      auto g_fft = kernels::causal_conv_fft_backward(dy, u, K, true, true);
      auto g_dir = kernels::causal_conv_direct_backward(dy.to(DType::f64), u.to(DType::f64), K.to(DType::f64), true,
                                                        true);
      INFO("T = " << T << ", S = " << S);
      CHECK_CLOSE(y_fft, y_dir, 1e-4, 1e-5);
      CHECK_CLOSE(g_fft.du, g_dir.du, 1e-4, 1e-5);
      CHECK_CLOSE(g_fft.dK, g_dir.dK, 1e-4, 1e-4);
    }
  }
}

TEST_CASE("layers/s4d: FFT convolution with full and partial channel groups and several batch chunks") {
  testing::for_each_isa([&] {
    // D = 37: two full groups of 16 channels (one transform each) and a partial one of 5; B = 10: two
    // backward batch chunks (8 + 2) whose dK spectra are summed in order.
    for (int64_t S : {1, 2}) {
      const int64_t B = 10, T = 50, D = 37;
      Tensor u = rnd({B, T, D}, 81, 0, 1, DType::f32);
      Tensor K = rnd(S == 1 ? Shape{D, T} : Shape{S, D, T}, 82, 0, 1.0 / std::sqrt(double(T)), DType::f32);
      Tensor dy = rnd({B, T, D}, 83, 0, 1, DType::f32);
      Tensor y_fft = kernels::causal_conv_fft_forward(u, K);
      Tensor y_dir = kernels::causal_conv_direct_forward(u.to(DType::f64), K.to(DType::f64));
      auto g_fft = kernels::causal_conv_fft_backward(dy, u, K, true, true);
      auto g_dir =
          kernels::causal_conv_direct_backward(dy.to(DType::f64), u.to(DType::f64), K.to(DType::f64), true, true);
      INFO("S = " << S);
      CHECK_CLOSE(y_fft, y_dir, 1e-4, 1e-5);
      CHECK_CLOSE(g_fft.du, g_dir.du, 1e-4, 1e-5);
      CHECK_CLOSE(g_fft.dK, g_dir.dK, 1e-4, 1e-4);
      // only one of the two gradients asked for
      auto g_u = kernels::causal_conv_fft_backward(dy, u, K, true, false);
      auto g_k = kernels::causal_conv_fft_backward(dy, u, K, false, true);
      CHECK(!g_u.dK.defined());
      CHECK(!g_k.du.defined());
      CHECK_CLOSE(g_u.du, g_fft.du, 0, 0);
      CHECK_CLOSE(g_k.dK, g_fft.dK, 0, 0);
    }
  });
}

TEST_CASE("layers/s4d: LaneFFT equals the DFT at 2,3,5-smooth lengths, inverse(forward) = n x") {
  testing::for_each_isa([&] {
    for (int64_t n : {1, 2, 3, 4, 5, 6, 8, 12, 30, 60, 192, 720}) {
      kernels::LaneFFT fft(n);
      std::vector<kernels::LanePoint> x(static_cast<size_t>(n)), x0, work(static_cast<size_t>(n));
      Generator gen(90 + static_cast<uint64_t>(n));
      std::vector<double> v = randn({n * 2 * kernels::kLanes}, 0, 1, DType::f64, gen).to_vector();
      for (int64_t t = 0; t < n; ++t)
        for (int l = 0; l < kernels::kLanes; ++l) {
          x[t].re[l] = static_cast<float>(v[(t * 2) * kernels::kLanes + l]);
          x[t].im[l] = static_cast<float>(v[(t * 2 + 1) * kernels::kLanes + l]);
        }
      x0 = x;
      fft.forward(x.data(), work.data());
      double err = 0, scale = 0;
      for (int64_t k = 0; k < n; ++k)
        for (int l = 0; l < kernels::kLanes; ++l) {
          double sr = 0, si = 0;
          for (int64_t t = 0; t < n; ++t) {
            const double a = -2.0 * M_PI * static_cast<double>((k * t) % n) / static_cast<double>(n);
            sr += x0[t].re[l] * std::cos(a) - x0[t].im[l] * std::sin(a);
            si += x0[t].re[l] * std::sin(a) + x0[t].im[l] * std::cos(a);
          }
          err = std::max(err, std::hypot(sr - x[k].re[l], si - x[k].im[l]));
          scale = std::max(scale, std::hypot(sr, si));
        }
      fft.inverse(x.data(), work.data());
      double back = 0;
      for (int64_t t = 0; t < n; ++t)
        for (int l = 0; l < kernels::kLanes; ++l)
          back = std::max({back, std::abs(double(x[t].re[l]) / n - x0[t].re[l]),
                           std::abs(double(x[t].im[l]) / n - x0[t].im[l])});
      INFO("n = " << n);
      CHECK(err <= 1e-6 * scale);
      CHECK(back <= 1e-5);
    }
    CHECK_THROWS_AS(kernels::LaneFFT(14), Error);  // a factor 7
  });
}

TEST_CASE("layers/s4d: the whole float32 layer (forward, backward) is bit-identical at 1, 2 and 3 threads") {
  testing::for_each_isa([&] {
    const int64_t B = 11, T = 37, D = 40;
    nn::S4D layer = make_layer(D, 64, false, 3);
    layer.to(DType::f32);
    Tensor u = rnd({B, T, D}, 96, 0, 1, DType::f32), dy = rnd({B, T, D}, 97, 0, 1, DType::f32);
    auto run_at = [&](int threads) {
      set_num_threads(threads);
      return testing::forward_backward_values(layer, u, dy);
    };
    const int prev = num_threads();
    auto one = run_at(1), two = run_at(2), three = run_at(3);
    set_num_threads(prev);
    REQUIRE(one.size() == two.size());
    for (size_t i = 0; i < one.size(); ++i) {
      CAPTURE(i);
      CHECK(one[i] == two[i]);
      CHECK(one[i] == three[i]);
    }
  });
}

TEST_CASE("layers/s4d: float32 fused kernels are bit-identical at 1 and 2 threads") {
  testing::for_each_isa([&] {
    // D = 40: two full 16-channel transform groups and a partial one; B = 11: two backward batch chunks.
    // (The whole layer, out_proj's GEMM included, is checked at 1, 2 and 3 threads above.)
    const int64_t B = 11, T = 37, D = 40, M = 4;
    for (int64_t S : {1, 2}) {
      KParams p = kparams(S, D, M, 91 + S);
      std::vector<Tensor> kp;
      for (const Tensor& t : p.all()) kp.push_back(t.to(DType::f32));
      Tensor u = rnd({B, T, D}, 92, 0, 1, DType::f32), dy = rnd({B, T, D}, 93, 0, 1, DType::f32);
      Tensor Dskip = rnd({D}, 94, 0, 1, DType::f32), z = rnd({B, T, 2 * D}, 95, 0, 1, DType::f32);
      auto run_at = [&](int threads) {
        set_num_threads(threads);
        Tensor K = kernels::s4d_kernel_forward(kp[0], kp[1], kp[2], kp[3], T);
        kernels::S4DKernelGrads kg = kernels::s4d_kernel_backward(K, kp[0], kp[1], kp[2], kp[3]);
        Tensor y = kernels::causal_conv_fft_forward(u, K);
        kernels::ConvGrads cg = kernels::causal_conv_fft_backward(dy, u, K, true, true);
        kernels::SkipGelu sg = kernels::s4d_skip_gelu_forward(y, u, Dskip);
        Tensor du = cg.du.clone();
        Tensor dD = kernels::s4d_skip_backward(du, dy, u, Dskip, true, true);
        Tensor g = kernels::glu_forward(z), dz = kernels::glu_backward(dy, z);
        std::vector<std::vector<double>> out;
        for (const Tensor& t : {K, kg.dlog_dt, kg.dlog_A_real, kg.dA_imag, kg.dC, y, cg.du, cg.dK, sg.h, sg.pre, du, dD,
                                g, dz})
          out.push_back(t.to_vector());
        return out;
      };
      const int prev = num_threads();
      auto one = run_at(1), two = run_at(2);
      set_num_threads(prev);
      REQUIRE(one.size() == two.size());
      for (size_t i = 0; i < one.size(); ++i) {
        CAPTURE(S);
        CAPTURE(i);
        CHECK(one[i] == two[i]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Layer

TEST_CASE("layers/s4d: gradcheck of the input and every parameter") {
  for (bool bi : {false, true}) {
    nn::S4D layer = make_layer(4, 4, bi, 7);
    layer.to(DType::f64);
    // move dt to where the kernel varies within T = 5 steps
    {
      NoGradGuard ng;
      layer.named_parameters()[0].tensor.copy_from(rand_uniform({4}, std::log(0.1), std::log(0.6), DType::f64));
    }
    std::vector<Tensor> in{rnd({2, 5, 4}, 8).set_requires_grad()};
    for (const Tensor& p : layer.parameters()) in.push_back(p);
    Fn f = [&](const std::vector<Tensor>& xs) { return layer.forward(xs[0]); };
    auto g = gradcheck(f, in);
    INFO("bidirectional = " << bi << "\n" << g.report);
    CHECK(g.ok);
    MESSAGE("S4D layer gradcheck bidirectional=" << bi << ": max rel error " << g.max_rel_error);
  }
}

TEST_CASE("layers/s4d: PyTorch reference values (float64 and float32)") {
  testing::for_each_isa([&] {
    auto fx = testing::load_fixture("s4d.txt");
    for (std::string prefix : {"", "bi."}) {
      Tensor x = testing::fixture_tensor(fx, prefix + "x");
      bool bi = !prefix.empty();
      int64_t D = x.size(2), N = 2 * testing::fixture_tensor(fx, prefix + "log_A_real").size(1);
      for (DType dt : {DType::f64, DType::f32}) {
        nn::S4D layer = make_layer(D, N, bi, 1);
        layer.to(dt);  // before loading, so float64 values are not rounded through float32
        std::map<std::string, Tensor> state;
        for (const auto& np : layer.named_parameters()) state[np.name] = testing::fixture_tensor(fx, prefix + np.name);
        layer.load_state_dict(state);
        Tensor xin = x.to(dt).set_requires_grad();
        Tensor out = layer.forward(xin);
        backward(out, testing::fixture_tensor(fx, prefix + "w").to(dt));
        double rtol = dt == DType::f64 ? 1e-10 : 1e-4, atol = dt == DType::f64 ? 1e-12 : 1e-5;
        INFO(prefix << " dtype " << std::string(dtype_name(dt)));
        CHECK_CLOSE(out, testing::fixture_tensor(fx, prefix + "out"), rtol, atol);
        double worst = max_rel(out, testing::fixture_tensor(fx, prefix + "out"));
        CHECK_CLOSE(xin.grad(), testing::fixture_tensor(fx, prefix + "grad.x"), rtol, atol);
        worst = std::max(worst, max_rel(xin.grad(), testing::fixture_tensor(fx, prefix + "grad.x")));
        for (const auto& np : layer.named_parameters()) {
          INFO("grad of " << np.name);
          Tensor ref = testing::fixture_tensor(fx, prefix + "grad." + np.name);
          CHECK_CLOSE(np.tensor.grad(), ref, rtol, atol);
          worst = std::max(worst, max_rel(np.tensor.grad(), ref));
        }
        MESSAGE("S4D vs PyTorch " << std::string(bi ? "bidirectional " : "unidirectional ")
                                  << std::string(dtype_name(dt)) << ": max rel diff " << worst);
      }
    }
  });
}

TEST_CASE("layers/s4d: step mode equals the parallel forward") {
  testing::for_each_isa([&] {
    for (std::string init : {"lin", "inv", "real"}) {
      for (DType dt : {DType::f64, DType::f32}) {
        int64_t B = 2, T = 9, D = 3;
        nn::S4D layer = make_layer(D, 8, false, 5, init);
        layer.eval();
        layer.to(dt);
        {
          NoGradGuard ng;  // a dt range where the state carries information over the 9 steps
          layer.named_parameters()[0].tensor.copy_from(rand_uniform({D}, std::log(0.05), std::log(0.5), dt));
        }
        Tensor x = rnd({B, T, D}, 9, 0, 1, dt);
        Tensor y;
        {
          NoGradGuard ng;
          y = layer.forward(x);
        }
        nn::StepState st = layer.init_state(B, dt);
        std::vector<double> xv = x.to_vector(), yv = y.to_vector(), stepped(yv.size());
        for (int64_t t = 0; t < T; ++t) {
          std::vector<double> xt(static_cast<size_t>(B * D));
          for (int64_t b = 0; b < B; ++b)
            for (int64_t d = 0; d < D; ++d) xt[b * D + d] = xv[(b * T + t) * D + d];
          Tensor yt = layer.step(Tensor::from_vector(xt, {B, D}, dt), st);
          CHECK(!yt.requires_grad());
          std::vector<double> yts = yt.to_vector();
          for (int64_t b = 0; b < B; ++b)
            for (int64_t d = 0; d < D; ++d) stepped[(b * T + t) * D + d] = yts[b * D + d];
        }
        INFO("init " << init << " dtype " << std::string(dtype_name(dt)));
        CHECK_CLOSE(stepped, yv, dt == DType::f64 ? 1e-10 : 1e-4, dt == DType::f64 ? 1e-12 : 1e-5);
      }
    }
    nn::S4D bi = make_layer(3, 4, true, 5);
    CHECK(!bi.has_step());
    CHECK(contains(error_of([&] { bi.init_state(1, DType::f32); }), "bidirectional"));
  });
}

TEST_CASE("layers/s4d: initialisation, parameter names and optimizer options") {
  Generator gen(3);
  nn::S4D layer(nn::S4DOptions{.d_model = 4, .d_state = 8, .init = "inv", .lr_scale_ssm = 0.1}, gen);
  auto np = layer.named_parameters();
  std::vector<std::string> names;
  for (const auto& p : np) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"log_dt", "log_A_real", "A_imag", "C", "D", "out_proj.weight",
                                          "out_proj.bias"});
  for (int i = 0; i < 3; ++i) {
    CHECK(!np[i].options.weight_decay);
    CHECK(np[i].options.lr_scale == doctest::Approx(0.1));
  }
  for (size_t i = 3; i < np.size(); ++i) {
    CHECK(np[i].options.weight_decay);
    CHECK(np[i].options.lr_scale == 1.0);
  }
  CHECK(np[3].tensor.shape() == Shape{4, 4, 2});
  for (double v : np[0].tensor.to_vector()) {  // dt in [1e-3, 1e-1)
    CHECK(v >= std::log(1e-3));
    CHECK(v < std::log(1e-1));
  }
  std::vector<double> ai = np[2].tensor.to_vector(), lar = np[1].tensor.to_vector();
  CHECK(ai[1] == doctest::Approx(8 / std::numbers::pi * (8.0 / 3 - 1)));  // S4D-Inv, n = 1
  CHECK(lar[0] == doctest::Approx(std::log(0.5)));
  nn::S4D lin = make_layer(2, 6, false, 1, "lin");
  CHECK(lin.named_parameters()[2].tensor.to_vector()[2] == doctest::Approx(2 * std::numbers::pi));
  nn::S4D real = make_layer(2, 6, true, 1, "real");
  CHECK(real.named_parameters()[1].tensor.to_vector()[2] == doctest::Approx(std::log(3.0)));
  CHECK(real.named_parameters()[2].tensor.to_vector()[2] == 0.0);
  CHECK(real.named_parameters()[3].tensor.shape() == Shape{2, 2, 3, 2});
  CHECK(real.kernel(10).shape() == Shape{2, 2, 10});
}

TEST_CASE("layers/s4d: options validation and the factory") {
  CHECK(contains(error_of([] { nn::S4D({.d_model = 0}); }), "S4DOptions.d_model"));
  CHECK(contains(error_of([] { nn::S4D({.d_model = 2, .d_state = 5}); }), "S4DOptions.d_state"));
  CHECK(contains(error_of([] { nn::S4D({.d_model = 2, .init = "legs"}); }), "'legs'"));
  CHECK(contains(error_of([] { nn::S4D({.d_model = 2, .dt_min = 0.1, .dt_max = 0.01}); }), "dt_min"));
  CHECK(contains(error_of([] { nn::S4D({.d_model = 2, .dropout = 1.0}); }), "S4DOptions.dropout"));
  CHECK(contains(error_of([] { nn::S4D({.d_model = 2, .lr_scale_ssm = 0}); }), "S4DOptions.lr_scale_ssm"));
  nn::LayerArgs args("layer 's4d'");
  args.set("d_state", int64_t{16}).set("init", std::string("real")).set("bidirectional", true).set("dropout", 0.1);
  auto l = nn::make_s4d(8, args);
  CHECK(l->d_model() == 8);
  CHECK(!l->has_step());
  auto* s = dynamic_cast<nn::S4D*>(l.get());
  REQUIRE(s);
  CHECK(s->options().d_state == 16);
  CHECK(s->options().init == "real");
  nn::LayerArgs bad("layer 's4d'");
  bad.set("d_sate", int64_t{16});
  CHECK(contains(error_of([&] { nn::make_s4d(8, bad); }), "d_sate"));
  Tensor x = Tensor::zeros({2, 3, 5});
  CHECK(contains(error_of([&] { l->forward(x); }), "(B, T, 8)"));
}

