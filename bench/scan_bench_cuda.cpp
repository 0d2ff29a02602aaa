// bench_scan_cuda: seqlab's CUDA selective scan (Mamba-1, core/cuda/scan.cu) timed at the sizes of
// the mamba_ssm anchor (/work/shared/anchors/mamba_ssm_selective_scan: B=32, E=128, N=16), with the
// anchor's options on (z gate, D, delta bias, delta_softplus), and dumps of one small case for the
// cross-check against the official kernel (bench/scan_anchor_check.py).
//
//   bench_scan_cuda [--B 32] [--E 128] [--N 16] [--reps 20] [--warmup 3] [--csv FILE]
//                   [--dump DIR] [--dump-only] [--dump-cpu] [L ...]  (L defaults to 720 2880 8192 32768)
//
// Timing: CUDA events recorded on seqlab's stream around each call (output allocation included, as
// torch's empty_like is in the anchor's), `warmup` calls first; the median of `reps` is reported, and
// the mean of the same events and the host wall clock per call of the whole loop (the anchor's
// build_and_bench.py reports the mean of 20 back-to-back calls).
//
// Bytes the forward must move (float32): read u, delta, z (B L E each), B, C (B L N each), A (E N),
// D, delta bias (E each); write y (B L E) and the state checkpoints (B, ceil(L/64) - 1, N, E). The
// anchor's figure ("min", build_and_bench.py) counts u, delta, z, y, B, C only. The backward's minimum:
// read u, delta, z, dy (B L E), B, C (B L N), the checkpoints; write du, ddelta, dz (B L E), dB, dC.
//
// --dump DIR: for (B, E, N) = (2, 64, 16) at L = 1000 and 4096, DIR/L<L>/ gets every input (seqlab
// layout: u, delta, z, dy (B, L, E); A (E, N); Bm, Cm (B, L, N); D, delta_bias (E)), the outputs y
// and du, ddelta, dz, dA, dB, dC, dD, ddelta_bias as raw little-endian float32 (<name>.f32), and
// meta.json with the shapes. Then the benchmark runs, unless --dump-only. --dump-cpu writes the same
// from the CPU kernels (no device needed: a check of the format and of the script's NumPy reference).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda/runtime.h"
#include "core/kernels/scan.h"
#include "core/random.h"
#include "core/tensor.h"

namespace seqlab::cuda {
cudaStream_t stream();  // core/cuda/common.cuh (a .cu-only header): the stream every kernel runs on
}

namespace {

using namespace seqlab;
using Clock = std::chrono::steady_clock;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// ---- timing ----------------------------------------------------------------------------------------

struct Timing {
  double median_ms = 0, mean_ms = 0, wall_mean_ms = 0;
};

// Events around each of `reps` calls of f (after `warmup` calls), all queued back to back; one
// synchronisation at the end.
Timing time_gpu(int warmup, int reps, const std::function<void()>& f) {
  for (int i = 0; i < warmup; ++i) f();
  cuda::synchronize();
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(reps));
  for (auto& e : ev) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
  const cudaStream_t s = cuda::stream();
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) {
    check_cuda(cudaEventRecord(ev[2 * i], s), "cudaEventRecord");
    f();
    check_cuda(cudaEventRecord(ev[2 * i + 1], s), "cudaEventRecord");
  }
  cuda::synchronize();
  const double wall = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::vector<double> ms(reps);
  for (int i = 0; i < reps; ++i) {
    float m = 0;
    check_cuda(cudaEventElapsedTime(&m, ev[2 * i], ev[2 * i + 1]), "cudaEventElapsedTime");
    ms[i] = m;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  Timing t;
  for (double m : ms) t.mean_ms += m / reps;
  std::sort(ms.begin(), ms.end());
  t.median_ms = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
  t.wall_mean_ms = wall / reps;
  return t;
}

// ---- inputs ----------------------------------------------------------------------------------------

// Fast host fill for the large timing inputs (hundreds of millions of values; they only need the
// anchor's ranges, not seqlab's Generator): splitmix64, normal approximated by a sum of 4 uniforms.
enum class Dist { normal, neg_unit, small };  // N(0,1)-like, (-1,0], [0,0.1)

Tensor fast_random(const Shape& shape, Dist d, uint64_t seed) {
  Tensor h = Tensor::empty(shape, DType::f32, Device::cpu);
  float* p = h.data<float>();
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&x] {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
  };
  for (int64_t i = 0, n = h.numel(); i < n; ++i) {
    switch (d) {
      case Dist::normal: p[i] = (next() + next() + next() + next() - 2.0f) * 1.7320508f; break;
      case Dist::neg_unit: p[i] = -next(); break;
      case Dist::small: p[i] = 0.1f * next(); break;
    }
  }
  Tensor dev = h.to(Device::cuda);
  cuda::synchronize();  // the pinned staging copy has left `h`
  return dev;
}

struct Inputs {
  int64_t B = 0, L = 0, E = 0, N = 0;
  Tensor u, delta, A, Bm, Cm, D, z, bias, dy;
  kernels::ScanExtras ex() const { return kernels::ScanExtras{z, bias, true}; }
};

// The anchor's distributions (build_and_bench.py): u, B, C, D, z, delta bias, dout ~ N(0, 1);
// delta ~ U[0, 0.1); A ~ -U[0, 1).
Inputs make_bench_inputs(int64_t B, int64_t L, int64_t E, int64_t N) {
  Inputs in;
  in.B = B, in.L = L, in.E = E, in.N = N;
  in.u = fast_random({B, L, E}, Dist::normal, 1);
  in.delta = fast_random({B, L, E}, Dist::small, 2);
  in.A = fast_random({E, N}, Dist::neg_unit, 3);
  in.Bm = fast_random({B, L, N}, Dist::normal, 4);
  in.Cm = fast_random({B, L, N}, Dist::normal, 5);
  in.D = fast_random({E}, Dist::normal, 6);
  in.z = fast_random({B, L, E}, Dist::normal, 7);
  in.bias = fast_random({E}, Dist::normal, 8);
  in.dy = fast_random({B, L, E}, Dist::normal, 9);
  return in;
}

// The dump case, from seqlab's Generator (same distributions), on `dev`.
Inputs make_dump_inputs(int64_t B, int64_t L, int64_t E, int64_t N, uint64_t seed, Device dev) {
  Generator g(seed);
  Inputs in;
  in.B = B, in.L = L, in.E = E, in.N = N;
  in.u = randn({B, L, E}, 0, 1, DType::f32, g).to(dev);
  in.delta = rand_uniform({B, L, E}, 0, 0.1, DType::f32, g).to(dev);
  in.A = rand_uniform({E, N}, -1, 0, DType::f32, g).to(dev);
  in.Bm = randn({B, L, N}, 0, 1, DType::f32, g).to(dev);
  in.Cm = randn({B, L, N}, 0, 1, DType::f32, g).to(dev);
  in.D = randn({E}, 0, 1, DType::f32, g).to(dev);
  in.z = randn({B, L, E}, 0, 1, DType::f32, g).to(dev);
  in.bias = randn({E}, 0, 1, DType::f32, g).to(dev);
  in.dy = randn({B, L, E}, 0, 1, DType::f32, g).to(dev);
  if (dev == Device::cuda) cuda::synchronize();
  return in;
}

kernels::ScanForwardResult forward(const Inputs& in) {
  return kernels::selective_scan_forward(in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.ex(), kernels::kScanChunk,
                                         true);
}
kernels::ScanGrads backward(const Inputs& in, const Tensor& checkpoints) {
  return kernels::selective_scan_backward(in.dy, in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.ex(), checkpoints,
                                          kernels::kScanChunk);
}

// ---- dump ------------------------------------------------------------------------------------------

void write_f32(const std::filesystem::path& file, const Tensor& t) {
  const Tensor h = t.to(Device::cpu);  // waits for the stream
  std::ofstream os(file, std::ios::binary);
  if (!os) throw std::runtime_error("cannot write " + file.string());
  os.write(static_cast<const char*>(h.raw_data()), static_cast<std::streamsize>(h.nbytes()));
  if (!os) throw std::runtime_error("write failed: " + file.string());
}

std::string json_shape(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

void dump_case(const std::filesystem::path& root, int64_t B, int64_t L, int64_t E, int64_t N, Device dev) {
  const Inputs in = make_dump_inputs(B, L, E, N, 1234 + static_cast<uint64_t>(L), dev);
  const auto f = forward(in);
  const auto g = backward(in, f.checkpoints);
  std::string name = "L";
  name += std::to_string(L);
  const std::filesystem::path dir = root / name;
  std::filesystem::create_directories(dir);
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"u", in.u},       {"delta", in.delta},   {"A", in.A},   {"Bm", in.Bm},         {"Cm", in.Cm},
      {"D", in.D},       {"z", in.z},           {"delta_bias", in.bias},              {"dy", in.dy},
      {"y", f.y},        {"du", g.du},          {"ddelta", g.ddelta},                 {"dA", g.dA},
      {"dB", g.dB},      {"dC", g.dC},          {"dD", g.dD},  {"ddelta_bias", g.ddelta_bias},
      {"dz", g.dz}};
  std::string meta = "{\n  \"B\": " + std::to_string(B) + ", \"L\": " + std::to_string(L) +
                     ", \"E\": " + std::to_string(E) + ", \"N\": " + std::to_string(N) +
                     ",\n  \"chunk\": " + std::to_string(kernels::kScanChunk) +
                     ", \"delta_softplus\": true, \"dtype\": \"float32\", \"byte_order\": \"little\",\n"
                     "  \"layout\": \"seqlab: u, delta, z, dy, y, du, ddelta, dz (B, L, E); A, dA (E, N); "
                     "Bm, Cm, dB, dC (B, L, N); D, delta_bias, dD, ddelta_bias (E); y = (scan + D u) * silu(z); "
                     "dy is the gradient of y\",\n  \"tensors\": {";
  for (size_t i = 0; i < tensors.size(); ++i) {
    write_f32(dir / (tensors[i].first + ".f32"), tensors[i].second);
    meta += std::string(i ? ",\n" : "\n") + "    \"" + tensors[i].first + "\": ";
    meta += json_shape(tensors[i].second.shape());
  }
  meta += "\n  }\n}\n";
  std::ofstream(dir / "meta.json") << meta;
  std::printf("dumped B=%lld E=%lld N=%lld L=%lld to %s\n", static_cast<long long>(B), static_cast<long long>(E),
              static_cast<long long>(N), static_cast<long long>(L), dir.string().c_str());
}

// ---- bench -----------------------------------------------------------------------------------------

double copy_bandwidth_gbps(int warmup, int reps) {
  const int64_t n = int64_t{1} << 28;  // 1 GiB of float32, as the anchor's measurement
  Tensor a = Tensor::full({n}, 1.0, DType::f32, Device::cuda);
  Tensor b = Tensor::empty({n}, DType::f32, Device::cuda);
  const Timing t = time_gpu(warmup, reps, [&] { b.copy_from(a); });
  return 2.0 * static_cast<double>(a.nbytes()) / t.median_ms / 1e6;  // read + write
}

struct Row {
  int64_t L = 0;
  Timing fwd, bwd;
  double fwd_bytes = 0, fwd_min_bytes = 0, bwd_min_bytes = 0;
  size_t peak = 0, peak_extra = 0;
};

Row bench_one(int64_t B, int64_t L, int64_t E, int64_t N, int warmup, int reps) {
  Row r;
  r.L = L;
  const Inputs in = make_bench_inputs(B, L, E, N);
  const double ble = double(B) * L * E, bln = double(B) * L * N;
  const int64_t nc = (L + kernels::kScanChunk - 1) / kernels::kScanChunk;
  const double ck = double(B) * double(std::max<int64_t>(nc - 1, 0)) * N * E;
  r.fwd_bytes = 4.0 * (3 * ble + 2 * bln + double(E) * N + 2.0 * E + ble + ck);
  r.fwd_min_bytes = 4.0 * (4 * ble + 2 * bln);
  r.bwd_min_bytes = 4.0 * (4 * ble + 2 * bln + ck + 3 * ble + 2 * bln);

  r.fwd = time_gpu(warmup, reps, [&] { (void)forward(in); });
  {
    const auto f = forward(in);
    r.bwd = time_gpu(warmup, reps, [&] { (void)backward(in, f.checkpoints); });
  }
  cuda::synchronize();
  // Device memory of one forward + backward, the inputs (u, delta, z, dy, A, B, C, D, bias) held.
  const size_t before = cuda::device_allocator_stats().allocated;
  cuda::reset_device_peak();
  {
    const auto f = forward(in);
    const auto g = backward(in, f.checkpoints);
    cuda::synchronize();
  }
  r.peak = cuda::device_allocator_stats().peak;
  r.peak_extra = r.peak - before;
  return r;
}

void usage() {
  std::printf(
      "bench_scan_cuda [--B 32] [--E 128] [--N 16] [--reps 20] [--warmup 3] [--csv FILE]\n"
      "                [--dump DIR] [--dump-only] [--dump-cpu] [L ...]   (L defaults to 720 2880 8192 32768)\n"
      "  --dump DIR   inputs and outputs of B=2 E=64 N=16 at L=1000, 4096 into DIR/L<L>/ (then the benchmark)\n"
      "  --dump-only  stop after the dump;  --dump-cpu  dump from the CPU kernels (no device; a format check)\n");
}

int run(int argc, char** argv) {
  int64_t B = 32, E = 128, N = 16;
  int reps = 20, warmup = 3;
  std::string csv_path, dump_dir;
  bool dump_only = false, dump_cpu = false;
  std::vector<int64_t> Ls;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else if (a == "--B") {
      B = std::stoll(value());
    } else if (a == "--E") {
      E = std::stoll(value());
    } else if (a == "--N") {
      N = std::stoll(value());
    } else if (a == "--reps") {
      reps = std::stoi(value());
    } else if (a == "--warmup") {
      warmup = std::stoi(value());
    } else if (a == "--csv") {
      csv_path = value();
    } else if (a == "--dump") {
      dump_dir = value();
    } else if (a == "--dump-only") {
      dump_only = true;
    } else if (a == "--dump-cpu") {
      dump_cpu = true;
    } else if (!a.empty() && a[0] != '-') {
      Ls.push_back(std::stoll(a));
    } else {
      usage();
      throw std::runtime_error("unknown option " + a);
    }
  }
  if (Ls.empty()) Ls = {720, 2880, 8192, 32768};
  if (reps < 1) throw std::runtime_error("--reps must be >= 1");

  if (dump_cpu) {
    if (dump_dir.empty()) throw std::runtime_error("--dump-cpu needs --dump DIR");
    for (int64_t L : {int64_t{1000}, int64_t{4096}}) dump_case(dump_dir, 2, L, 64, 16, Device::cpu);
    return 0;
  }
  cuda::require("the scan benchmark");
  std::printf("device: %s\n", cuda::describe_devices().c_str());

  if (!dump_dir.empty()) {
    for (int64_t L : {int64_t{1000}, int64_t{4096}}) dump_case(dump_dir, 2, L, 64, 16, Device::cuda);
    if (dump_only) return 0;
  }

  const double copy_gbps = copy_bandwidth_gbps(warmup, reps);
  std::printf("device-to-device copy: %.1f GB/s (1 GiB, read + write counted)\n", copy_gbps);
  std::printf("selective scan, B=%lld E=%lld N=%lld, z gate, D, delta bias, softplus; chunk %lld; "
              "median of %d after %d\n",
              static_cast<long long>(B), static_cast<long long>(E), static_cast<long long>(N),
              static_cast<long long>(kernels::kScanChunk), reps, warmup);
  std::printf(
      "fwd bytes: read u, delta, z (BLE each), B, C (BLN each), A, D, bias; write y (BLE) + checkpoints "
      "(B, ceil(L/64)-1, N, E)\nmin = the anchor's count (u, delta, z, y, B, C); bwd: min bytes (see the source)\n");
  std::printf("%7s %9s %9s %9s %9s %9s %9s %9s %7s %9s %10s %10s\n", "L", "fwd_ms", "fwd_mean", "bwd_ms", "bwd_mean",
              "fwd_MB", "fwd_GB/s", "min_GB/s", "of_copy", "bwd_GB/s", "peak_MiB", "extra_MiB");

  std::vector<Row> rows;
  for (int64_t L : Ls) {
    const Row r = bench_one(B, L, E, N, warmup, reps);
    rows.push_back(r);
    const double gbps = r.fwd_bytes / r.fwd.median_ms / 1e6;
    std::printf("%7lld %9.4f %9.4f %9.4f %9.4f %9.1f %9.1f %9.1f %6.1f%% %9.1f %10.1f %10.1f\n",
                static_cast<long long>(r.L), r.fwd.median_ms, r.fwd.mean_ms, r.bwd.median_ms, r.bwd.mean_ms,
                r.fwd_bytes / 1e6, gbps, r.fwd_min_bytes / r.fwd.median_ms / 1e6, 100.0 * gbps / copy_gbps,
                r.bwd_min_bytes / r.bwd.median_ms / 1e6, r.peak / 1048576.0, r.peak_extra / 1048576.0);
    std::fflush(stdout);
  }

  std::string csv =
      "csv,impl,B,E,N,L,fwd_ms,fwd_mean_ms,fwd_wall_ms,bwd_ms,bwd_mean_ms,bwd_wall_ms,fwd_bytes,fwd_min_bytes,"
      "fwd_GBps,fwd_min_GBps,fwd_frac_copy,bwd_min_bytes,bwd_GBps,copy_GBps,peak_bytes,peak_extra_bytes\n";
  for (const Row& r : rows) {
    char line[512];
    const double gbps = r.fwd_bytes / r.fwd.median_ms / 1e6;
    std::snprintf(line, sizeof line,
                  "csv,seqlab,%lld,%lld,%lld,%lld,%.5f,%.5f,%.5f,%.5f,%.5f,%.5f,%.0f,%.0f,%.1f,%.1f,%.4f,%.0f,"
                  "%.1f,%.1f,%zu,%zu\n",
                  static_cast<long long>(B), static_cast<long long>(E), static_cast<long long>(N),
                  static_cast<long long>(r.L), r.fwd.median_ms, r.fwd.mean_ms, r.fwd.wall_mean_ms, r.bwd.median_ms,
                  r.bwd.mean_ms, r.bwd.wall_mean_ms, r.fwd_bytes, r.fwd_min_bytes, gbps,
                  r.fwd_min_bytes / r.fwd.median_ms / 1e6, gbps / copy_gbps, r.bwd_min_bytes,
                  r.bwd_min_bytes / r.bwd.median_ms / 1e6, copy_gbps, r.peak, r.peak_extra);
    csv += line;
  }
  std::fputs(csv.c_str(), stdout);
  if (!csv_path.empty()) {
    std::ofstream os(csv_path);
    if (!os) throw std::runtime_error("cannot write " + csv_path);
    os << csv;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_scan_cuda: %s\n", e.what());
    return 1;
  }
}
