// `seqlab bench`: times one training step (forward, MSE loss, backward, AdamW update) of each model
// family at the standard sizes, one (model, T) per child process so each peak RSS is its own.
// Formulas behind the FLOP counts and the measured tables: docs/BENCHMARKS.md.
#pragma once
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

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

/// Registers the `bench` subcommand (and its callback) on `app`.
void add_bench_subcommand(CLI::App& app);

}  // namespace seqlab::bench
