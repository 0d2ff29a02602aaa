// bench_layers: forward + backward of one layer or one fused kernel, medians of repeated runs.
// What the profiles in docs/BENCHMARKS.md and docs/LAYERS.md were measured with (these used to be
// skipped doctest cases in the test binary; timings belong here, never in tests).
//
//   bench_layers [--threads N] [--reps N] [layers] [scan] [attention] [conv] [memory]
//     layers     every registry type: forward + backward of one layer at B=32, T=336, D=64
//     scan       Mamba's fused selective scan and causal conv1d kernels alone (B=32, T=336, E=128, N=16)
//     attention  the fused attention op alone at B=32, H=4, T=720, Dh=16 (GFLOP/s from 4 B H T^2 Dh)
//     conv       S4D's FFT convolution against the direct loops (float32 and float64), D=64, T=336
//     memory     peak tensor memory of a Mamba layer's training step (B=8, T=512/1024, N=16/64)
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "core/allocator.h"
#include "core/kernels/attention.h"
#include "core/kernels/conv1d.h"
#include "core/kernels/long_conv.h"
#include "core/kernels/scan.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/mamba.h"
#include "layers/registry.h"

namespace {

using namespace seqlab;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median wall and CPU milliseconds of `reps` calls of f (after one warm-up call).
struct Timing {
  double wall, cpu;
};
Timing time_of(int reps, const std::function<void()>& f) {
  f();
  std::vector<double> wall, cpu;
  for (int i = 0; i < reps; ++i) {
    const std::clock_t c0 = std::clock();
    const auto t0 = Clock::now();
    f();
    wall.push_back(ms_since(t0));
    cpu.push_back(1000.0 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
  }
  return {median(wall), median(cpu)};
}

void bench_layers(int reps) {
  const int64_t B = 32, T = 336, D = 64;
  Generator gen(1);
  Tensor x = randn({B, T, D}, 0, 1, DType::f32, gen).set_requires_grad(true);
  Tensor w = randn({B, T, D}, 0, 1, DType::f32, gen);
  std::printf("layer forward + backward, B=%lld T=%lld D=%lld, %d threads, median of %d\n", static_cast<long long>(B),
              static_cast<long long>(T), static_cast<long long>(D), num_threads(), reps);
  std::printf("%-12s %10s %10s %12s\n", "type", "fwd ms", "fwd+bwd ms", "fwd+bwd CPU");
  for (const auto& t : nn::layer_types()) {
    nn::LayerArgs args("bench_layers " + t.name);
    for (const auto& [k, v] : t.bench_args) args.set(k, v);  // the registry's standard-size options
    std::shared_ptr<nn::SequenceLayer> layer = nn::make_layer(t.name, D, args);
    layer->to(DType::f32);
    Timing fwd = time_of(reps, [&] {
      NoGradGuard ng;
      layer->forward(x);
    });
    Timing all = time_of(reps, [&] {
      backward(layer->forward(x), w);
      layer->zero_grad();
      x.zero_grad();
    });
    std::printf("%-12s %10.2f %10.2f %12.2f\n", t.name.c_str(), fwd.wall, all.wall, all.cpu);
  }
}

void bench_scan(int reps) {
  const int64_t B = 32, T = 336, E = 128, N = 16;
  Generator gen(1);
  Tensor u = randn({B, T, E}, 0, 1, DType::f32, gen), delta = randn({B, T, E}, 0, 0.5, DType::f32, gen);
  Tensor A = mul_scalar(rand_uniform({E, N}, 0.5, 4.0, DType::f32, gen), -1.0);
  Tensor Bm = randn({B, T, N}, 0, 1, DType::f32, gen), Cm = randn({B, T, N}, 0, 1, DType::f32, gen);
  Tensor Dskip = randn({E}, 0, 1, DType::f32, gen), z = randn({B, T, E}, 0, 1, DType::f32, gen);
  Tensor bias = randn({E}, 0, 0.5, DType::f32, gen);
  kernels::ScanExtras ex{z, bias, true};
  kernels::ScanForwardResult fw;
  Timing f = time_of(reps, [&] { fw = kernels::selective_scan_forward(u, delta, A, Bm, Cm, Dskip, ex); });
  Timing b = time_of(reps, [&] { kernels::selective_scan_backward(u, u, delta, A, Bm, Cm, Dskip, ex, fw.checkpoints); });
  Tensor cw = randn({E, 4}, 0, 1, DType::f32, gen), cb = randn({E}, 0, 1, DType::f32, gen);
  Timing cf = time_of(reps, [&] { kernels::causal_conv1d_forward(u, cw, cb, true); });
  Timing cbk = time_of(reps, [&] { kernels::causal_conv1d_backward(u, u, cw, cb, true); });
  std::printf("B=32 T=336 E=128 N=16, %d threads: scan fwd %.2f ms, bwd %.2f ms; conv1d fwd %.2f ms, bwd %.2f ms\n",
              num_threads(), f.wall, b.wall, cf.wall, cbk.wall);
}

void bench_attention(int reps) {
  const int before = num_threads();
  set_num_threads(1);
  const int64_t B = 32, H = 4, T = 720, Dh = 16;
  Generator gen(1);
  Tensor q = randn({B, H, T, Dh}, 0, 1, DType::f32, gen), k = randn({B, H, T, Dh}, 0, 1, DType::f32, gen);
  Tensor v = randn({B, H, T, Dh}, 0, 1, DType::f32, gen), dy = randn({B, H, T, Dh}, 0, 1, DType::f32, gen);
  kernels::AttentionForward fw;
  Timing f = time_of(reps, [&] { fw = kernels::attention_forward(q, k, v, false); });
  Timing b = time_of(reps, [&] { kernels::attention_backward(dy, q, k, v, fw.out, fw.lse, false); });
  set_num_threads(before);
  const double gf = 4.0 * B * H * T * T * Dh / 1e9;
  std::printf("attention B=32 H=4 T=720 Dh=16, 1 thread: forward %.2f ms (%.1f GFLOP/s), backward %.2f ms "
              "(%.1f GFLOP/s)\n", f.wall, gf / f.wall * 1e3, b.wall, 2 * gf / b.wall * 1e3);
}

void bench_conv(int reps) {
  const int64_t B = 32, T = 336, D = 64;
  Generator gen(1);
  Tensor u = randn({B, T, D}, 0, 1, DType::f32, gen), dy = randn({B, T, D}, 0, 1, DType::f32, gen);
  Tensor K = randn({D, T}, 0, 0.1, DType::f32, gen);
  Timing fft = time_of(reps, [&] {
    kernels::causal_conv_fft_forward(u, K);
    kernels::causal_conv_fft_backward(dy, u, K, true, true);
  });
  Timing d32 = time_of(std::max(1, reps / 3), [&] {
    kernels::causal_conv_direct_forward(u, K);
    kernels::causal_conv_direct_backward(dy, u, K, true, true);
  });
  Tensor u64 = u.to(DType::f64), dy64 = dy.to(DType::f64), K64 = K.to(DType::f64);
  Timing d64 = time_of(std::max(1, reps / 3), [&] {
    kernels::causal_conv_direct_forward(u64, K64);
    kernels::causal_conv_direct_backward(dy64, u64, K64, true, true);
  });
  std::printf("causal convolution B=32 T=336 D=64 forward + backward, %d threads: FFT %.2f ms, direct f32 %.2f ms, "
              "direct f64 %.2f ms\n", num_threads(), fft.wall, d32.wall, d64.wall);
}

void bench_memory() {
  for (int64_t N : {16, 64})
    for (int64_t T : {512, 1024}) {
      nn::MambaOptions o;
      o.d_model = 64;
      o.d_state = N;
      nn::Mamba m(o);
      Tensor x = randn({8, T, 64}, 0, 1, DType::f32);
      auto step = [&] {
        m.zero_grad();
        backward(sum(m.forward(x)));
      };
      step();
      release_cached_memory();
      reset_peak_memory();
      const size_t base = allocator_stats().in_use_bytes;
      step();
      const double peak = static_cast<double>(allocator_stats().peak_bytes - base) / (1024.0 * 1024.0);
      std::printf("Mamba B=8 T=%lld D=64 E=128 N=%lld: peak training-step tensor memory %.1f MiB\n",
                  static_cast<long long>(T), static_cast<long long>(N), peak);
    }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"seqlab layer and kernel timings (docs/BENCHMARKS.md)"};
  int threads = 0, reps = 7;
  std::vector<std::string> which;
  app.add_option("--threads", threads, "worker threads (0: every core)")->check(CLI::NonNegativeNumber);
  app.add_option("--reps", reps, "timed repetitions per figure (median)")->check(CLI::PositiveNumber);
  app.add_option("which", which, "layers, scan, attention, conv, memory (default: all)")
      ->check(CLI::IsMember({"layers", "scan", "attention", "conv", "memory"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    set_num_threads(threads);
    if (which.empty()) which = {"layers", "scan", "attention", "conv", "memory"};
    for (const std::string& w : which) {
      if (w == "layers") bench_layers(reps);
      if (w == "scan") bench_scan(reps);
      if (w == "attention") bench_attention(reps);
      if (w == "conv") bench_conv(reps);
      if (w == "memory") bench_memory();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_layers: %s\n", e.what());
    return 1;
  }
  return 0;
}
