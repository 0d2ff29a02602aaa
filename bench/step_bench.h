// `seqlab bench`: times one training step (forward, MSE loss, backward, AdamW update) of each model
// family at the standard sizes, one (model, T) per child process so each peak RSS is its own.
// Formulas behind the FLOP counts and the measured tables: docs/BENCHMARKS.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace seqlab::bench {

/// One measured (model, T) case, as printed by the child and written to the CSV.
struct StepResult {
  std::string model;
  int64_t seq_len = 0;
  int64_t batch = 0;
  int64_t params = 0;
  double step_ms = 0;        // median over the timed steps
  double peak_rss_mib = 0;   // the child's VmHWM (falls back to wait4's ru_maxrss)
  double gflop_per_step = 0; // analytic count, see step_gflop()
  double cpu_ms = 0;         // median process CPU time (user + sys) per step: steadier under load
  double base_rss_mib = 0;   // the child's VmRSS before its first step (binary, libraries, model, data):
                             // peak_rss_mib - base_rss_mib is what the training steps themselves add
};

/// Analytic floating-point work of one training step (GFLOP) of `model` at the standard sizes with
/// sequence length T and batch B (model FLOPs: backward = 2x forward, recomputation not counted).
double step_gflop(const std::string& model, int64_t T, int64_t B);

/// `seqlab bench`'s options (the command line is apps/main.cpp's).
struct BenchOptions {
  std::vector<std::string> models{"lstm", "transformer", "s4d", "mamba"};  // registry layer types
  std::vector<int64_t> seq_lens{96, 336, 720, 1440, 2880};
  int64_t batch = 32;
  int steps = 10;
  int warmup = 2;
  int threads = 2;
  std::string device = "cpu";       // cpu | cuda: where the model trains (peak memory: the device pool's then)
  std::string matmul_precision = "highest";  // cuda: highest (strict fp32) | high (TF32) | medium (bf16 cuBLAS GEMMs)
  bool cuda_graph = false;          // cuda: each step replayed as one CUDA graph (apps/graph_step.h)
  std::string csv;                  // write the results as CSV here ("": no file)
  std::vector<std::string> single;  // internal: MODEL T, one case in this process (the child)
};

/// Runs the benchmark: every (model, T) in a child process `/proc/self/exe bench --single MODEL T
/// ...`, a table on stdout and, with o.csv, the CSV; or, with o.single, the one case in this process.
/// Throws seqlab::Error for an unknown model or length, or when a case failed (after the others ran).
void run_bench(const BenchOptions& o);

}  // namespace seqlab::bench
