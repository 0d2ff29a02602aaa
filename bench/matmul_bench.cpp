// Square sgemm throughput: seqlab::matmul (the autograd op, no grad; OpenBLAS at one thread, rows
// split over TBB) next to raw cblas_sgemm with OpenBLAS at 2 threads, in one run. GFLOP/s are the
// median of --reps timed repetitions after --warmup untimed ones, taken in 3 alternating rounds. --study adds the measurements
// behind docs/BENCHMARKS.md "Threads": raw OpenBLAS at 1 and 2 threads, and a GEMM followed by a
// TBB elementwise loop (a training step's pattern) under both threading options.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops/linalg.h"
#include "core/kernels/matmul.h"
#include "core/parallel.h"
#include "core/random.h"

using namespace seqlab;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int reps = 15;
  int warmup = 3;
  std::vector<int64_t> sizes{256, 512, 1024, 2048};
  bool study = false;
  int64_t loop_elems = int64_t{1} << 21;  // elementwise loop size in --study
};

void usage() {
  std::puts(
      "usage: bench_matmul [--reps N (15)] [--warmup N (3)] [--sizes 256,512,...] [--study]\n"
      "                    [--loop-elems N (2097152)]\n"
      "  Prints GFLOP/s (median of reps) of seqlab::matmul and raw cblas_sgemm (OpenBLAS 2 threads).\n"
      "  --study also times raw OpenBLAS at 1 thread and the GEMM + TBB elementwise interference case.");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--reps") o.reps = std::max(1, std::atoi(next()));
    else if (a == "--warmup") o.warmup = std::max(0, std::atoi(next()));
    else if (a == "--study") o.study = true;
    else if (a == "--loop-elems") o.loop_elems = std::max<int64_t>(1, std::atoll(next()));
    else if (a == "--sizes") {
      o.sizes.clear();
      std::string s = next();
      for (size_t p = 0; p < s.size();) {
        size_t q = s.find(',', p);
        o.sizes.push_back(std::atoll(s.substr(p, q - p).c_str()));
        p = q == std::string::npos ? s.size() : q + 1;
      }
    } else {
      usage();
      std::exit(a == "--help" || a == "-h" ? 0 : 2);
    }
  }
  return o;
}

double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

// Appends the seconds of `reps` calls of f, after `warmup` untimed ones, to `out`.
template <typename F>
void time_reps(int warmup, int reps, std::vector<double>& out, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    f();
    out.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
}

// Median seconds of `reps` calls of f after `warmup` untimed ones.
template <typename F>
double median_seconds(int warmup, int reps, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  time_reps(0, reps, t, f);
  return median(t);
}

double gflops(int64_t n, double s) { return 2.0 * static_cast<double>(n) * n * n / s * 1e-9; }

// Lets the other pool's spinning threads go to sleep before the next measurement.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }

void raw_sgemm(int64_t n, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(n),
              static_cast<int>(n), 1.0f, a, static_cast<int>(n), b, static_cast<int>(n), 0.0f, c,
              static_cast<int>(n));
}

// A training step's elementwise op after a GEMM: memory- and exp-bound, over TBB.
void elementwise(std::vector<float>& x, std::vector<float>& y) {
  parallel_for(0, static_cast<int64_t>(x.size()), 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i]));  // SiLU
  });
}

void study(const Options& o) {
  std::printf("\n# Threads study (median of %d, warm-up %d); elementwise loop = SiLU over %lld floats (TBB)\n",
              o.reps, o.warmup, static_cast<long long>(o.loop_elems));
  std::printf("%6s %12s %12s %12s | %12s %14s %14s %14s\n", "N", "OB1 GF/s", "OB2 GF/s", "A:TBB GF/s",
              "loop ms", "A gemm+loop", "B gemm+loop", "B loop alone");
  std::vector<float> x(static_cast<size_t>(o.loop_elems)), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 1000) * 1e-3f - 0.5f;
  set_num_threads(2);
  settle();
  double loop = median_seconds(o.warmup, o.reps, [&] { elementwise(x, y); });
  for (int64_t n : o.sizes) {
    Tensor a = randn({n, n}), b = randn({n, n}), c = Tensor::empty({n, n});
    const float *pa = a.data<float>(), *pb = b.data<float>();
    float* pc = c.data<float>();
    openblas_set_num_threads(1);
    settle();
    double ob1 = median_seconds(o.warmup, o.reps, [&] { raw_sgemm(n, pa, pb, pc); });
    // Option A: OpenBLAS 1 thread, seqlab splits rows over TBB.
    set_num_threads(2);
    settle();
    double opt_a = median_seconds(o.warmup, o.reps, [&] { kernels::gemm<float>(false, false, n, n, n, pa, pb, 0.0f, pc); });
    settle();
    double a_step = median_seconds(o.warmup, o.reps, [&] {
      kernels::gemm<float>(false, false, n, n, n, pa, pb, 0.0f, pc);
      elementwise(x, y);
    });
    // Option B: OpenBLAS runs its own 2 threads; then the same TBB loop.
    openblas_set_num_threads(2);
    settle();
    double ob2 = median_seconds(o.warmup, o.reps, [&] { raw_sgemm(n, pa, pb, pc); });
    settle();
    double b_step = median_seconds(o.warmup, o.reps, [&] {
      raw_sgemm(n, pa, pb, pc);
      elementwise(x, y);
    });
    // The loop's own time in option B's step: timed alone, right after each GEMM.
    std::vector<double> lt;
    for (int i = 0; i < o.warmup + o.reps; ++i) {
      raw_sgemm(n, pa, pb, pc);
      auto t0 = Clock::now();
      elementwise(x, y);
      if (i >= o.warmup) lt.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::sort(lt.begin(), lt.end());
    std::printf("%6lld %12.1f %12.1f %12.1f | %12.2f %11.2f ms %11.2f ms %11.2f ms\n", static_cast<long long>(n),
                gflops(n, ob1), gflops(n, ob2), gflops(n, opt_a), loop * 1e3, a_step * 1e3, b_step * 1e3,
                lt[lt.size() / 2] * 1e3);
    set_num_threads(2);  // back to seqlab's setting (OpenBLAS 1 thread)
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  NoGradGuard no_grad;
  std::printf("# seqlab::matmul vs raw cblas_sgemm (OpenBLAS 2 threads), float32 square, median of %d after %d "
              "warm-up\n",
              o.reps, o.warmup);
  std::printf("%6s %16s %16s %8s\n", "N", "seqlab GFLOP/s", "cblas GFLOP/s", "ratio");
  for (int64_t n : o.sizes) {
    Tensor a = randn({n, n}), b = randn({n, n}), c = Tensor::empty({n, n});
    // Rounds alternate the two, so a disturbance from other processes hits both alike.
    std::vector<double> ts, tr;
    int rounds = std::min(o.reps, 3);
    for (int r = 0; r < rounds; ++r) {
      int k = o.reps / rounds + (r < o.reps % rounds);
      // seqlab: its own setting, TBB at 2 threads and OpenBLAS pinned to 1.
      set_num_threads(2);
      settle();
      time_reps(r == 0 ? o.warmup : 1, k, ts, [&] { Tensor y = matmul(a, b); });
      // Raw: OpenBLAS' own 2 threads on the same data, into a preallocated output.
      openblas_set_num_threads(2);
      settle();
      time_reps(r == 0 ? o.warmup : 1, k, tr, [&] { raw_sgemm(n, a.data<float>(), b.data<float>(), c.data<float>()); });
    }
    double t_seqlab = median(ts), t_raw = median(tr);
    std::printf("%6lld %16.1f %16.1f %8.3f\n", static_cast<long long>(n), gflops(n, t_seqlab), gflops(n, t_raw),
                t_raw / t_seqlab);
    std::fflush(stdout);
  }
  set_num_threads(2);
  if (o.study) study(o);
  return 0;
}
