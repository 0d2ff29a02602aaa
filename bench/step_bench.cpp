// `seqlab bench`: one training step (forward, MSE, backward, AdamW) per model family at the standard
// sizes (B 32, C 7, D 64, 2 layers, last-step head to 96 x 7). The parent re-executes
// /proc/self/exe with the hidden `--single MODEL T` option once per (model, T) so that each case's
// peak RSS is its own (a caching allocator never gives memory back), and parses the child's one
// result line. FLOP formulas: step_gflop() below, the layer files (registry flops) and docs/BENCHMARKS.md.
#include "bench/step_bench.h"

#include "core/cuda/runtime.h"

#include <cblas.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "apps/checkpoint.h"
#include "apps/child.h"
#include "apps/graph_step.h"
#include "apps/run.h"
#include "autograd/ops.h"
#include "core/isa.h"
#include "core/kernels/isa_info.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/model.h"
#include "layers/registry.h"
#include "optim/adam.h"

namespace seqlab::bench {
namespace {

constexpr int64_t kChannels = 7, kDModel = 64, kLayers = 2, kHorizon = 96;
constexpr const char* kResultTag = "SEQLAB_BENCH_RESULT";


// The mixer options of the standard sizes: the registry row's bench_args.
nn::LayerArgs layer_args(const std::string& model) {
  const nn::LayerType& type = nn::layer_type(model, "bench --models");
  nn::LayerArgs a("bench model '" + model + "'");
  for (const auto& [k, v] : type.bench_args) a.set(k, v);
  return a;
}

// A "Key:   123 kB" line of /proc/self/status in MiB (VmHWM: peak resident, VmRSS: resident now).
double proc_status_mib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::string(key).size();
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(n)) / 1024.0;  // kB
  return 0;
}
double vm_hwm_mib() { return proc_status_mib("VmHWM:"); }

double cpu_seconds() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The child: build, warm up, time `steps` steps, print one tagged line.
void run_single(const std::string& model, int64_t T, const BenchOptions& o) {
  set_num_threads(o.threads);
  manual_seed(1234);
  nn::ModelOptions mo;
  mo.layer = model;
  mo.layer_args = layer_args(model);
  mo.in_channels = kChannels;
  mo.d_model = kDModel;
  mo.n_layers = kLayers;
  mo.seq_len = T;
  mo.pred_len = kHorizon;
  mo.head = "last";
  nn::SequenceModel net(mo);
  net.train();
  const bool gpu = o.device == "cuda";
  if (gpu) {
    cuda::require("seqlab bench --device cuda");
    cuda::set_matmul_precision(cuda::matmul_precision_of(o.matmul_precision));
    net.to(Device::cuda);  // initialised on the host, as in training
  }
  int64_t params = 0;
  for (const Tensor& p : net.parameters()) params += p.numel();
  optim::AdamW opt(net.named_parameters(), optim::AdamOptions{.lr = 1e-3, .weight_decay = 0.01});
  Tensor x = randn({o.batch, T, kChannels}, 0, 1);
  Tensor y = randn({o.batch, kHorizon, kChannels}, 0, 1);
  // The training step every seqlab command takes (apps/run.h): with the non-finite check and the
  // default gradient clipping, so the figure is what training pays per step.
  const data::Batch batch{x.to(net.device()), y.to(net.device()), o.batch};
  const double grad_clip = app::OptimConfig{}.grad_clip;
  app::GraphedStep graphed(net, opt, app::mse_objective(), {.grad_clip = grad_clip});
  auto step = [&] {
    const app::StepOutcome so = o.cuda_graph ? graphed(batch)
                                             : app::train_step(net, opt, batch, app::mse_objective(), {.grad_clip = grad_clip});
    SEQLAB_CHECK(so.applied && so.bad_parameter.empty(), "bench: ", model, " T=", T, ": non-finite step (loss ",
                 so.loss, ")");
  };
  const double base_rss = gpu ? cuda::device_allocator_stats().allocated / 1048576.0 : proc_status_mib("VmRSS:");
  if (gpu) cuda::reset_device_peak();
  for (int i = 0; i < o.warmup; ++i) step();
  std::vector<double> ms, cpu;
  for (int i = 0; i < o.steps; ++i) {
    double c0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    step();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    cpu.push_back((cpu_seconds() - c0) * 1e3);
  }
  if (o.cuda_graph && !graphed.captured())
    std::fprintf(stderr, "bench: %s T=%lld: eager steps, not a CUDA graph: %s\n", model.c_str(),
                 static_cast<long long>(T), graphed.why_eager().c_str());
  std::printf("%s %s %lld %lld %lld %.4f %.2f %.4f %.2f\n", kResultTag, model.c_str(), static_cast<long long>(T),
              static_cast<long long>(o.batch), static_cast<long long>(params), median(ms),
              gpu ? cuda::device_allocator_stats().peak / 1048576.0 : vm_hwm_mib(),
              median(cpu), base_rss);
  std::fflush(stdout);
}

bool run_child(const std::string& model, int64_t T, const BenchOptions& o, StepResult& r) {
  std::vector<std::string> args{"/proc/self/exe", "bench"};
  for (auto s : {std::string("--single"), model, std::to_string(T), std::string("--batch"), std::to_string(o.batch),
                 std::string("--steps"), std::to_string(o.steps), std::string("--warmup"),
                 std::to_string(o.warmup), std::string("--threads"),
                 std::to_string(o.threads), std::string("--device"), o.device, std::string("--matmul-precision"),
                 o.matmul_precision})
    args.push_back(s);
  if (o.cuda_graph) args.push_back("--cuda-graph");
  const app::ChildOutcome child = app::run_child(args, nullptr, true);  // the result line comes on stdout
  const std::string& out = child.out;
  const int status = child.status;
  const struct rusage& ru = child.usage;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(kResultTag, 0) != 0) continue;
    std::istringstream f(line.substr(std::string(kResultTag).size()));
    long long t = 0, b = 0, p = 0;
    f >> r.model >> t >> b >> p >> r.step_ms >> r.peak_rss_mib >> r.cpu_ms >> r.base_rss_mib;
    r.seq_len = t, r.batch = b, r.params = p;
    if (r.peak_rss_mib <= 0) r.peak_rss_mib = static_cast<double>(ru.ru_maxrss) / 1024.0;  // KiB
    r.gflop_per_step = step_gflop(model, T, o.batch);
    return child.exited_ok();
  }
  std::fprintf(stderr, "bench: %s T=%lld failed (status %d); output:\n%s\n", model.c_str(),
               static_cast<long long>(T), status, out.c_str());
  return false;
}

void run_all(const BenchOptions& o) {
  for (int64_t T : o.seq_lens) SEQLAB_CHECK(T > 0, "bench --seq-lens: expected lengths >= 1, got ", T);
  std::string csv = "model,seq_len,batch,params,step_ms,samples_per_s,peak_rss_mib,gflop_per_step,gflops,base_rss_mib\n";
  std::printf("seqlab bench: B=%lld, C=%lld, D=%lld, %lld layers, head last -> %lld x %lld, %d threads, "
              "median of %d steps after %d warm-up\n",
              static_cast<long long>(o.batch), static_cast<long long>(kChannels), static_cast<long long>(kDModel),
              static_cast<long long>(kLayers), static_cast<long long>(kHorizon), static_cast<long long>(kChannels),
              o.threads, o.steps, o.warmup);
  std::printf("seqlab bench: ISA path %s (CPU supports %s), OpenBLAS core %s, FMA peak of the path %.1f "
              "GFLOP/s per core\n",
              isa_name(active_isa()), isa_name(detected_isa()), openblas_get_corename(), kernels::fma_peak_gflops());
  if (o.device == "cuda")
    std::printf("seqlab bench: device cuda (%s); GEMMs %s%s; peak_MiB and net_MiB are the device pool's\n",
                cuda::describe_devices().c_str(),
                o.matmul_precision == "high"     ? "TF32 tensor cores (--matmul-precision high)"
                : o.matmul_precision == "medium" ? "bfloat16 tensor cores in cuBLAS (--matmul-precision medium)"
                                                 : "strict fp32",
                o.cuda_graph ? "; each step one CUDA graph replay (--cuda-graph)" : "");
  std::printf("%-12s %6s %9s %11s %11s %10s %9s %9s %9s %11s\n", "model", "T", "params", "step_ms", "samples/s",
              "peak_MiB", "net_MiB", "GFLOP", "GFLOP/s", "cpu_ms");
  std::fflush(stdout);
  std::vector<std::string> failed;
  for (const auto& m : o.models) {
    for (int64_t T : o.seq_lens) {
      StepResult r;
      if (!run_child(m, T, o, r)) {
        failed.push_back(str(m, " T=", T));
        continue;
      }
      double sps = r.batch / (r.step_ms / 1e3), gflops = r.gflop_per_step / (r.step_ms / 1e3);
      std::printf("%-12s %6lld %9lld %11.2f %11.1f %10.1f %9.1f %9.2f %9.2f %11.2f\n", r.model.c_str(),
                  static_cast<long long>(r.seq_len), static_cast<long long>(r.params), r.step_ms, sps,
                  r.peak_rss_mib, r.peak_rss_mib - r.base_rss_mib, r.gflop_per_step, gflops, r.cpu_ms);
      std::fflush(stdout);
      if (!o.csv.empty()) {
        csv += str(r.model, ",", r.seq_len, ",", r.batch, ",", r.params, ",", app::fmt("%.3f", r.step_ms), ",",
                   app::fmt("%.2f", sps), ",", app::fmt("%.1f", r.peak_rss_mib), ",",
                   app::fmt("%.4f", r.gflop_per_step), ",", app::fmt("%.3f", gflops), ",",
                   app::fmt("%.1f", r.base_rss_mib), "\n");
        app::write_text_atomic(o.csv, csv);  // FILE.tmp then a rename, after every case
      }
    }
  }
  if (!failed.empty()) {
    std::string list;
    for (const auto& f : failed) list += (list.empty() ? "" : ", ") + f;
    throw Error(str("bench: ", failed.size(), " case(s) failed (", list, "; their output is above)",
                    o.csv.empty() ? "" : "; --csv keeps the others"));
  }
}

}  // namespace

// Model FLOPs of one step: the input Linear, each layer (the registry row's flops) and the head
// forward; backward = 2x forward (dX and dW GEMMs; the
// recomputation in the fused backwards is not counted), the input Linear's backward = 1x (x needs
// no gradient). Elementwise ops, norms, losses and AdamW are not counted (memory-bound, < 2%).
double step_gflop(const std::string& model, int64_t T_, int64_t B_) {
  const double B = static_cast<double>(B_), T = static_cast<double>(T_), D = kDModel, C = kChannels,
               L = kLayers, PC = kHorizon * kChannels;
  const double input_fwd = 2 * B * T * C * D;
  const double head_fwd = 2 * B * D * PC;
  const nn::LayerType& type = nn::layer_type(model, "bench");
  if (!type.flops) return app::kNaN;
  nn::LayerArgs args = layer_args(model);
  const double layer_fwd = type.flops(B_, T_, kDModel, args);  // the registry's formula for the layer type
  return (2 * input_fwd + 3 * (head_fwd + L * layer_fwd)) / 1e9;
}

void run_bench(const BenchOptions& o) {
  SEQLAB_CHECK(o.device == "cuda" || !o.cuda_graph, "seqlab bench --cuda-graph: expected --device cuda, got --device ",
               o.device);
  SEQLAB_CHECK(o.device == "cuda" || o.matmul_precision == "highest", "seqlab bench --matmul-precision ",
               o.matmul_precision, ": expected --device cuda (TF32 and bfloat16 GEMMs are GPU tensor-core modes), got --device ", o.device);
  if (!o.single.empty()) {
    SEQLAB_CHECK(o.single.size() == 2, "bench --single: expected MODEL T");
    const int64_t T = std::stoll(o.single.at(1));
    SEQLAB_CHECK(T > 0, "bench --single: T must be positive");
    run_single(o.single.at(0), T, o);
    return;
  }
  for (const auto& m : o.models) (void)layer_args(m);  // unknown names fail before any child runs
  run_all(o);
}

}  // namespace seqlab::bench
