// `seqlab eval RUN_DIR --seq-lens ...`: token-task accuracy at other lengths than the training one.
#include "apps/run.h"
#include "apps/trainer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <csignal>
#include <limits>
#include <map>
#include <memory>
#include <sstream>

#include "apps/checkpoint.h"
#include "autograd/ops.h"
#include "core/allocator.h"
#include "core/cuda/runtime.h"
#include "core/error.h"
#include "core/parallel.h"
#include "data/forecast.h"
#include "data/synthetic.h"
#include "layers/model.h"
#include "layers/registry.h"

namespace seqlab::app {
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Length extrapolation (token tasks): fresh sequences at other lengths than the training one. Step
// mode (SequenceModel::step) runs in memory constant in T for recurrent and SSM mixers; the
// transformer's KV cache grows with T and its time with T^2, so lengths whose projected time is over
// --max-seconds are skipped rather than run.

namespace {

// Peak RSS (VmHWM) since the last reset_rss_peak(); ru_maxrss where /proc is missing.
double vm_hwm_mib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  return peak_rss_mib();
}

// Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS (silently ignored elsewhere).
void reset_rss_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }

double mem_available_mib() {
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("MemAvailable:", 0) == 0) return std::stod(line.substr(13)) / 1024.0;  // kB
  return std::numeric_limits<double>::infinity();
}

int64_t min_token_len(const DataConfig& d) { return d.task == "selective-copying" ? 2 * data::SelectiveCopy::kCopy : 3; }

struct Tally {
  int64_t scored = 0, correct = 0;
  int64_t stopped_at = 0;    // > 0: stopped after this many positions (time limit or request_stop)
  bool interrupted = false;  // stopped by request_stop() (SIGINT)
};

// Step mode: every sequence advances one position per call; only scored positions' logits are read.
Tally eval_tokens_step(nn::SequenceModel& m, const data::Batch& b, double max_seconds, Clock::time_point t0) {
  NoGradGuard ng;
  m.eval();
  const int64_t B = b.x.size(0), T = b.x.size(1);
  const int32_t* x = b.x.data<int32_t>();
  const int32_t* y = b.y.data<int32_t>();
  std::vector<nn::StepState> state = m.init_state(B, DType::f32);
  Tally tl;
  for (int64_t t = 0; t < T; ++t) {
    Tensor ids = Tensor::empty({B}, DType::i32);
    int32_t* id = ids.data<int32_t>();
    bool scored = false;
    for (int64_t s = 0; s < B; ++s) {
      id[s] = x[s * T + t];
      scored = scored || y[s * T + t] != data::kIgnoreIndex;
    }
    Tensor logits = m.step(ids, state);  // (B, V)
    if (scored) {
      const TokenHits hits = count_token_hits(logits.data<float>(), B, logits.size(1), y + t, T);
      tl.scored += hits.scored;
      tl.correct += hits.correct;
    }
    if ((t & 63) == 63 && t + 1 < T && (stop_requested() || seconds_since(t0) > max_seconds)) {
      tl.stopped_at = t + 1;
      tl.interrupted = stop_requested();
      break;
    }
  }
  return tl;
}

// Seconds (or MiB) at length T from earlier lengths of the same mode: a T + b T^2 through the last
// two points for quadratic models (b = 0 otherwise), scaled up (never down) by the sequence count.
double project(const std::vector<std::array<double, 3>>& points, double T, double n, bool quadratic) {
  const auto& [T2, n2, s2] = points.back();
  double v;
  if (!quadratic) {
    v = s2 * T / T2;
  } else if (points.size() == 1) {
    v = s2 * (T / T2) * (T / T2);
  } else {
    const auto& [T1, n1, s1] = points[points.size() - 2];
    double b = (s2 / T2 - s1 / T1) / (T2 - T1), a = s2 / T2 - b * T2;
    if (b < 0) b = 0, a = s2 / T2;
    if (a < 0) a = 0, b = s2 / (T2 * T2);
    v = a * T + b * T * T;
  }
  return v * std::max(1.0, n / n2);
}

struct ExtrapolationRun {
  fs::path dir;
  Config config;
};

// Evaluates one length T into r (accuracy, time, memory, status): fresh sequences, in step mode or
// through the full forward. Returns why every longer length is to be skipped ("" to go on).
std::string measure(nn::SequenceModel& model, const Config& c, const std::string& task_name, int64_t T, bool step,
                    const ExtrapolateOptions& opt, ExtrapolationRow& r) {
  std::string stop;
  // Fresh sequences from a stream of their own per length: reproducible, and a smaller
  // n_sequences draws a prefix of a larger one.
  auto task = data::make_token_task(task_name, T, opt.key_distance);
  data::Batch b = task->batch(r.n_sequences, c.data.data_seed + 3, T);
  const bool gpu = opt.device == "cuda";
  release_cached_memory();
  reset_peak_memory();
  if (gpu) cuda::reset_device_peak();
  reset_rss_peak();
  const auto t0 = Clock::now();
  try {
    if (step) {
      Tally tl = eval_tokens_step(model, b, opt.max_seconds, t0);
      if (tl.interrupted) {
        r.status = stop = "skipped: interrupted";
      } else if (tl.stopped_at > 0) {
        r.status = stop = "skipped: time limit";
        spdlog::info("[{}] T={}: stopped at position {} after {:.0f} s (--max-seconds {:g}); skipping longer "
                     "lengths", r.model, T, tl.stopped_at, seconds_since(t0), opt.max_seconds);
      } else {
        r.accuracy = static_cast<double>(tl.correct) / static_cast<double>(std::max<int64_t>(tl.scored, 1));
      }
    } else {
      // The full forward, in chunks of at most 2^17 tokens (2^21 on the GPU) (the ordinary evaluation path).
      const int64_t tokens = int64_t{1} << (gpu ? 21 : 17);
      const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(r.n_sequences, tokens / T));
      std::vector<data::Batch> chunks;
      for (int64_t lo = 0; lo < r.n_sequences; lo += chunk)
        chunks.push_back(batch_rows(b, lo, std::min(r.n_sequences, lo + chunk)));
      r.accuracy = eval_tokens(model, chunks).acc;
    }
    if (r.status.empty()) r.status = "ok";
  } catch (const std::bad_alloc&) {
    r.status = "failed: out of memory";
  } catch (const Error& e) {
    r.status = str("failed: ", e.what());
  }
  if (r.status.rfind("failed", 0) == 0) stop = str("skipped: failed at ", T);
  r.seconds = seconds_since(t0);
  r.peak_rss_mib = vm_hwm_mib();
  r.alloc_peak_mib = static_cast<double>(gpu ? cuda::device_allocator_stats().peak : allocator_stats().peak_bytes) /
                     (1024.0 * 1024.0);
  return stop;
}

std::vector<ExtrapolationRow> extrapolate_one(const ExtrapolationRun& run, const std::vector<int64_t>& lens,
                                              const ExtrapolateOptions& opt) {
  const Config& c = run.config;
  const ModelConfig& mc = c.models[0];
  if (opt.threads >= 0 || c.train.threads > 0)
    set_num_threads(opt.threads >= 0 ? opt.threads : static_cast<int>(c.train.threads));
  LoadedRun loaded = load_run_model(run.dir.string(), opt.checkpoint);  // the same path as `seqlab eval`
  nn::SequenceModel* model = loaded.model.get();
  const bool gpu = opt.device == "cuda";
  if (gpu) model->to(Device::cuda);
  const bool can_step = model->has_step() && !gpu;  // step mode runs on the CPU only
  const nn::LayerType* type = nn::find_layer_type(mc.type);
  const bool quadratic = type && type->quadratic;  // attention: O(T^2) time in either mode
  const std::string task_name = c.data.task == "selective-copying" ? "selective_copy" : "induction_heads";
  std::map<std::string, std::vector<std::array<double, 3>>> seen_s, seen_mib;  // by mode: (T, n, value)
  std::string stop;  // once a length is skipped for time or memory, so is every longer one
  std::vector<ExtrapolationRow> rows;
  for (int64_t T : lens) {
    ExtrapolationRow r;
    r.model = mc.name;
    r.seq_len = T;
    r.n_sequences = opt.n_sequences > 0 ? opt.n_sequences : default_sequences(T);
    r.accuracy = r.peak_rss_mib = r.alloc_peak_mib = kNaN;
    const bool step = opt.step == "always" || (opt.step == "auto" && can_step && T > c.data.seq_len);
    r.mode = step ? "step" : "forward";
    r.key_distance = opt.key_distance;
    r.checkpoint = loaded.checkpoint;
    r.step = loaded.step;
    r.device = opt.device;
    const auto n = static_cast<double>(r.n_sequences), Td = static_cast<double>(T);
    if (stop_requested() && stop.empty()) stop = "skipped: interrupted";  // Ctrl-C: the file keeps what was done
    if (step && !can_step) {
      r.status = "skipped: no step mode";
    } else if (!stop.empty()) {
      r.status = stop;
    } else if (!seen_s[r.mode].empty() &&
               project(seen_s[r.mode], Td, n, quadratic) > opt.max_seconds) {
      r.status = stop = "skipped: time limit";
      spdlog::info("[{}] T={}: projected {:.0f} s > --max-seconds {:g}: skipping it and longer lengths", mc.name, T,
                   project(seen_s[r.mode], Td, n, quadratic), opt.max_seconds);
    } else if (!seen_mib[r.mode].empty() &&
               project(seen_mib[r.mode], Td, n, quadratic && !step) > 0.8 * mem_available_mib()) {
      r.status = stop = "skipped: memory limit";
      spdlog::info("[{}] T={}: projected {:.0f} MiB of tensors > 80% of the {:.0f} MiB available: skipping it and "
                   "longer lengths", mc.name, T, project(seen_mib[r.mode], Td, n, quadratic && !step),
                   mem_available_mib());
    } else {
      const std::string why = measure(*model, c, task_name, T, step, opt, r);
      if (!why.empty()) stop = why;
      if (r.status == "ok") {
        seen_s[r.mode].push_back({Td, n, r.seconds});
        seen_mib[r.mode].push_back({Td, n, r.alloc_peak_mib});
      }
      spdlog::info("[{}] T={} n={} {}: accuracy {:.4f}, {:.2f} s, peak RSS {:.0f} MiB, tensors {:.0f} MiB ({})",
                   mc.name, T, r.n_sequences, r.mode, r.accuracy, r.seconds, r.peak_rss_mib, r.alloc_peak_mib,
                   r.status);
    }
    rows.push_back(r);
    write_text_atomic(run.dir / extrapolation_file(opt), extrapolation_csv(rows));
  }
  model->train();
  release_cached_memory();
  if (gpu) cuda::release_device_cache();
  return rows;
}

}  // namespace

std::vector<ExtrapolationRow> run_extrapolation(const std::string& run_dir, const ExtrapolateOptions& opt) {
  SEQLAB_CHECK(!opt.seq_lens.empty(), "eval --seq-lens: expected at least one length");
  SEQLAB_CHECK(opt.n_sequences >= 0, "eval --n-sequences: expected an integer >= 1, got ", opt.n_sequences);
  SEQLAB_CHECK(opt.max_seconds > 0, "eval --max-seconds: expected a number > 0, got ", opt.max_seconds);
  SEQLAB_CHECK(opt.step == "auto" || opt.step == "always" || opt.step == "never",
               "eval --step: expected auto, always or never, got '", opt.step, "'");
  check_eval_device(opt.device, "eval --device");
  SEQLAB_CHECK(opt.device != "cuda" || opt.step != "always", "eval --step always: step mode runs on the CPU only; "
               "with --device cuda use --step auto or never (the full forward)");
  const fs::path dir(run_dir);
  const fs::path cfg = dir / "config.resolved.toml";
  SEQLAB_CHECK(fs::is_regular_file(cfg), run_dir, ": not a run directory (no config.resolved.toml)");
  Config c = load_config(cfg.string());
  SEQLAB_CHECK(c.data.is_token_task(), "eval --seq-lens: ", run_dir, " is a [data] task = \"", c.data.task,
               "\" run; length extrapolation needs a token task (selective-copying or induction-heads)");
  std::vector<int64_t> lens = opt.seq_lens;
  std::sort(lens.begin(), lens.end());
  lens.erase(std::unique(lens.begin(), lens.end()), lens.end());
  const int64_t min_len = min_token_len(c.data);
  SEQLAB_CHECK(lens.front() >= min_len, "eval --seq-lens: expected lengths >= ", min_len, " for ", c.data.task,
               c.data.task == "selective-copying" ? " (16 data tokens and 16 markers)" : " (trigger, key, trigger)",
               ", got ", lens.front());
  if (opt.key_distance != 0) {
    SEQLAB_CHECK(c.data.task == "induction-heads", "eval --key-distance: applies only to induction-heads runs; ", run_dir,
                 " is a ", c.data.task, " run");
    SEQLAB_CHECK(opt.key_distance >= 2 && opt.key_distance < lens.front(), "eval --key-distance ", opt.key_distance,
                 ": expected a distance in [2, T - 1] for every length; the shortest, ", lens.front(), ", allows up to ",
                 lens.front() - 1);
  }
  // Every model's directory, config and checkpoint are checked before anything is evaluated.
  std::vector<ExtrapolationRun> runs;
  if (c.multi) {
    for (const auto& m : c.models) {
      const fs::path sub = dir / m.name;
      SEQLAB_CHECK(fs::is_regular_file(sub / "config.resolved.toml"), sub.string(),
                   ": not a run directory (no config.resolved.toml): was model '", m.name, "' trained?");
      runs.push_back({sub, load_config((sub / "config.resolved.toml").string())});
    }
  } else {
    runs.push_back({dir, c});
  }
  check_checkpoint_choice(opt.checkpoint, "eval --checkpoint");
  const std::string ck_file = "checkpoint-" + opt.checkpoint + ".h5";
  for (const auto& r : runs)
    SEQLAB_CHECK(fs::is_regular_file(r.dir / ck_file), (r.dir / ck_file).string(), ": missing (no finished epoch yet?)");
  std::vector<ExtrapolationRow> rows;
  for (const auto& r : runs) {
    auto sub = extrapolate_one(r, lens, opt);
    rows.insert(rows.end(), sub.begin(), sub.end());
  }
  if (c.multi) write_text_atomic(dir / extrapolation_file(opt), extrapolation_csv(rows));
  return rows;
}

}  // namespace seqlab::app
