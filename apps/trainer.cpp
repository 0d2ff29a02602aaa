// The training loop: seeded model, optimizer and schedule from the config; each epoch trains on at
// most max_steps batches, evaluates on every validation and test example under NoGradGuard, keeps
// the best-validation checkpoint and stops after `patience` epochs without improvement. A resumed
// run restores parameters, optimizer moments, the default generator and the loader position, so it
// takes exactly the steps the uninterrupted run would have taken.
#include "apps/trainer.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <csignal>
#include <limits>
#include <map>
#include <memory>
#include <sstream>

#include "apps/checkpoint.h"
#include "apps/distributed.h"
#include "autograd/ops.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/random.h"
#include "data/forecast.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "layers/model.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "optim/sgd.h"

extern char** environ;

namespace seqlab::app {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// ---------------------------------------------------------------------------------------------
// Data: a forecasting split (ETT/CSV/HDF5 or the sine series) or a token task.

struct TaskData {
  bool token = false;
  data::ForecastData fc;                    // forecasting
  int64_t in_channels = 0, out_channels = 0;
  std::unique_ptr<data::TokenTask> task;    // token tasks
  std::vector<data::Batch> val_batches, test_batches;
  std::vector<std::string> columns, dates;  // forecasting: the series' column names and dates (may be empty)
};

TaskData make_data(const Config& c) {
  const DataConfig& d = c.data;
  TaskData td;
  try {
    if (d.is_token_task()) {
      td.token = true;
      td.task = data::make_token_task(d.task == "selective-copying" ? "selective_copy" : "induction_heads", d.seq_len,
                                      d.key_distance);
      // Validation and test are fixed sets drawn from streams of their own.
      for (int64_t i = 0; i < d.n_eval_batches; ++i) {
        td.val_batches.push_back(td.task->batch(c.train.eval_batch_size, d.data_seed + 1, i));
        td.test_batches.push_back(td.task->batch(c.train.eval_batch_size, d.data_seed + 2, i));
      }
      return td;
    }
    data::Series s = d.task == "sine"
                         ? data::sine_series({.rows = d.rows, .channels = d.channels, .noise = d.noise, .ar = d.ar,
                                              .seed = d.data_seed})
                         : data::read_series(d.path, d.dataset);
    data::ForecastOptions fo;
    fo.seq_len = d.seq_len;
    fo.pred_len = d.pred_len;
    fo.features = data::parse_features(d.features);
    fo.target = d.target;
    fo.scale = d.scale;
    std::string split = d.task == "sine" ? "ratio" : d.split;
    fo.split.kind = split == "ett-hour" ? data::SplitKind::ett_hour
                    : split == "ett-minute" ? data::SplitKind::ett_minute
                                            : data::SplitKind::ratio;
    fo.split.train = d.ratios[0];
    fo.split.val = d.ratios[1];
    fo.split.test = d.ratios[2];
    td.fc = data::make_forecast_data(s, fo);
    td.columns = s.columns;
    td.dates = s.dates;
    td.in_channels = td.fc.train->input_channels();
    td.out_channels = td.fc.train->output_channels();
  } catch (const Error& e) {
    throw Error(str(c.file, ": [data]: ", e.what()));
  }
  return td;
}

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& c, const nn::Module& m) {
  const OptimConfig& o = c.optim;
  try {
    if (o.name == "sgd")
      return std::make_unique<optim::SGD>(
          m.named_parameters(),
          optim::SGDOptions{.lr = o.lr, .momentum = o.momentum, .nesterov = o.nesterov, .weight_decay = o.weight_decay});
    optim::AdamOptions a{.lr = o.lr, .beta1 = o.betas[0], .beta2 = o.betas[1], .eps = o.eps, .weight_decay = o.weight_decay};
    if (o.name == "adam") return std::make_unique<optim::Adam>(m.named_parameters(), a);
    return std::make_unique<optim::AdamW>(m.named_parameters(), a);
  } catch (const Error& e) {
    throw Error(str(c.file, ": [optim]: ", e.what()));
  }
}

std::shared_ptr<nn::SequenceModel> make_model(const Config& c, const ModelConfig& mc, const TaskData& td) {
  try {
    nn::ModelOptions mo = td.token ? mc.options(c.data, 0, 0, td.task->vocab_size())
                                   : mc.options(c.data, td.in_channels, td.out_channels, 0);
    return std::make_shared<nn::SequenceModel>(std::move(mo));
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.rfind(mc.args.where(), 0) == 0) throw;
    throw Error(str(mc.args.where(), ": ", msg));
  }
}

// ---------------------------------------------------------------------------------------------
// Loss and evaluation.

Tensor token_loss(const Tensor& logits, const Tensor& y) {
  const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
  return cross_entropy(reshape(logits, {B * T, V}), y.view({B * T}), data::kIgnoreIndex);
}

// Data-parallel: the number of terms the batch's mean loss averages (forecast: every target value;
// tokens: the scored positions), the weight of this rank's loss and gradients in the global mean.
double loss_weight(bool token, const data::Batch& b) {
  if (!token) return static_cast<double>(b.y.numel());
  const int32_t* y = b.y.data<int32_t>();
  int64_t n = 0;
  for (int64_t i = 0; i < b.y.numel(); ++i) n += y[i] != data::kIgnoreIndex;
  return static_cast<double>(n);
}

// Rows [lo, hi) of a token batch.
data::Batch batch_rows(const data::Batch& b, int64_t lo, int64_t hi) {
  auto rows = [&](const Tensor& t) {
    Shape s = t.shape();
    const size_t row = t.nbytes() / static_cast<size_t>(s[0]);
    s[0] = hi - lo;
    Tensor out = Tensor::empty(s, t.dtype());
    std::memcpy(out.raw_data(), static_cast<const char*>(t.raw_data()) + static_cast<size_t>(lo) * row,
                static_cast<size_t>(hi - lo) * row);
    return out;
  };
  return {rows(b.x), rows(b.y), hi - lo};
}

// Data-parallel token tasks: every rank draws the global batch and keeps its contiguous rows.
data::Batch shard_rows(const data::Batch& b) {
  const auto [lo, hi] = data::Loader::shard_range(b.size, dist::rank(), dist::size());
  return batch_rows(b, lo, hi);
}

struct EvalStats {
  double loss = 0, mse = kNaN, mae = kNaN, acc = -1;
};

// Data-parallel (`sharded`): each rank evaluates its slice of every batch and the sums are reduced,
// so every rank gets the same metrics (and the same early-stopping decision).
EvalStats eval_forecast(nn::SequenceModel& m, const std::shared_ptr<data::ForecastDataset>& ds, int64_t bs,
                        bool sharded = false) {
  NoGradGuard ng;
  m.eval();
  data::LoaderOptions lo = data::LoaderOptions::eval(bs);
  if (sharded) lo.shard_rank = dist::rank(), lo.shard_count = dist::size();
  data::Loader loader(ds, lo);
  loader.reset(0);
  data::Batch b;
  double sse = 0, sae = 0;
  int64_t n = 0;
  while (loader.next(b)) {
    if (b.size == 0) continue;  // this rank's slice of a short last batch is empty
    Tensor pred = m.forward(b.x);
    const float* p = pred.data<float>();
    const float* y = b.y.data<float>();
    const int64_t k = b.y.numel();
    SEQLAB_CHECK(pred.numel() == k, "eval: prediction ", to_string(pred.shape()), " vs target ", to_string(b.y.shape()));
    for (int64_t i = 0; i < k; ++i) {
      double e = static_cast<double>(p[i]) - static_cast<double>(y[i]);
      sse += e * e;
      sae += std::abs(e);
    }
    n += k;
  }
  m.train();
  if (sharded) {
    double sums[3] = {sse, sae, static_cast<double>(n)};
    dist::allreduce_sum(sums, 3);
    sse = sums[0], sae = sums[1], n = static_cast<int64_t>(sums[2]);
  }
  EvalStats s;
  s.mse = sse / static_cast<double>(n);
  s.mae = sae / static_cast<double>(n);
  s.loss = s.mse;
  return s;
}

}  // namespace

TokenHits count_token_hits(const float* logits, int64_t rows, int64_t V, const int32_t* targets,
                           int64_t target_stride) {
  TokenHits h;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t target = targets[r * target_stride];
    if (target == data::kIgnoreIndex) continue;
    const float* row = logits + r * V;
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (row[v] > row[best]) best = v;
    h.correct += best == target;
    ++h.scored;
  }
  return h;
}

namespace {

// Sharded: rank r evaluates batches r, r + K, ... and the sums are reduced.
EvalStats eval_tokens(nn::SequenceModel& m, const std::vector<data::Batch>& batches, bool sharded = false) {
  NoGradGuard ng;
  m.eval();
  double loss_sum = 0;
  int64_t scored = 0, correct = 0;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    if (sharded && static_cast<int>(bi % static_cast<size_t>(dist::size())) != dist::rank()) continue;
    const data::Batch& b = batches[bi];
    Tensor logits = m.forward(b.x);  // (B, T, V)
    const int64_t V = logits.size(2);
    const TokenHits hits = count_token_hits(logits.data<float>(), b.y.numel(), V, b.y.data<int32_t>());
    const int64_t here = hits.scored;
    correct += hits.correct;
    if (here > 0) loss_sum += token_loss(logits, b.y).item() * static_cast<double>(here);
    scored += here;
  }
  m.train();
  if (sharded) {
    double sums[3] = {loss_sum, static_cast<double>(scored), static_cast<double>(correct)};
    dist::allreduce_sum(sums, 3);
    loss_sum = sums[0], scored = static_cast<int64_t>(sums[1]), correct = static_cast<int64_t>(sums[2]);
  }
  EvalStats s;
  s.loss = loss_sum / static_cast<double>(std::max<int64_t>(scored, 1));
  s.mse = s.loss;
  s.acc = static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(scored, 1));
  return s;
}

// ---------------------------------------------------------------------------------------------
// Progress: a bar redrawn in place on a terminal, nothing otherwise (the epoch lines are logged).

class Progress {
 public:
  Progress(bool enabled, std::string model, int64_t epochs, int64_t steps)
      : on_(enabled), model_(std::move(model)), epochs_(epochs), steps_(steps) {}
  void start_epoch(int64_t first_step) {
    t0_ = Clock::now();
    first_ = first_step;
    last_draw_ = {};
  }
  void update(int64_t epoch, int64_t step, double loss) {
    if (!on_) return;
    auto now = Clock::now();
    if (step < steps_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    double el = seconds_since(t0_);
    double rate = el > 0 ? static_cast<double>(step - first_) / el : 0;
    int64_t eta = rate > 0 ? static_cast<int64_t>(static_cast<double>(steps_ - step) / rate) : 0;
    const int width = 24;
    int fill = static_cast<int>(width * step / std::max<int64_t>(steps_, 1));
    std::string bar(static_cast<size_t>(fill), '#');
    bar.resize(width, '-');
    std::fprintf(stderr, "\r[%s] epoch %lld/%lld [%s] %lld/%lld loss %.5f %.1f steps/s ETA %lld:%02lld\x1b[K",
                 model_.c_str(), static_cast<long long>(epoch + 1), static_cast<long long>(epochs_), bar.c_str(),
                 static_cast<long long>(step), static_cast<long long>(steps_), loss, rate,
                 static_cast<long long>(eta / 60), static_cast<long long>(eta % 60));
    std::fflush(stderr);
  }
  void clear() {
    if (!on_) return;
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
  }

 private:
  bool on_;
  std::string model_;
  int64_t epochs_, steps_, first_ = 0;
  Clock::time_point t0_{}, last_draw_{};
};

// ---------------------------------------------------------------------------------------------
// Results.

const char* kMetricNames[] = {"train_loss", "val_loss", "val_mse", "val_mae", "test_mse", "test_mae", "seconds",
                              "eval_seconds", "lr"};

// First epoch with the lowest validation loss (-1 when none).
int64_t best_epoch(const Metrics& m) {
  auto it = m.find("val_loss");
  if (it == m.end() || it->second.empty()) return -1;
  int64_t best = 0;
  for (size_t i = 1; i < it->second.size(); ++i)
    if (it->second[i] < it->second[static_cast<size_t>(best)]) best = static_cast<int64_t>(i);
  return best;
}

double at(const Metrics& m, const char* key, int64_t i) {
  auto it = m.find(key);
  if (it == m.end() || i < 0 || i >= static_cast<int64_t>(it->second.size())) return kNaN;
  return it->second[static_cast<size_t>(i)];
}

RunResult result_from(const std::string& name, int64_t params, const Metrics& m, int64_t steps, bool token) {
  RunResult r;
  r.model = name;
  r.params = params;
  auto sec = m.find("seconds");
  r.epochs = sec == m.end() ? 0 : static_cast<int64_t>(sec->second.size());
  if (sec != m.end())
    for (double s : sec->second) r.train_seconds += s;
  r.step_ms = steps > 0 ? 1000.0 * r.train_seconds / static_cast<double>(steps) : 0;
  r.peak_rss_mib = peak_rss_mib();
  int64_t b = best_epoch(m);
  r.val_mse = at(m, "val_mse", b);
  r.test_mse = at(m, "test_mse", b);
  r.test_mae = token ? kNaN : at(m, "test_mae", b);
  r.test_acc = token ? at(m, "test_acc", b) : -1;
  return r;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string time_str(double s) {
  auto t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Checkpoint state of a run.

struct RunState {
  int64_t epoch = 0, batch = 0, global_step = 0, bad_epochs = 0;
  bool done = false;
  double best_val = std::numeric_limits<double>::infinity();
  double loss_sum = 0;       // running train loss of the current epoch
  int64_t loss_count = 0;
  double epoch_seconds = 0;  // training time of the current epoch so far
  double peak_rss = 0;       // MiB, the highest of the processes that worked on this run
  int64_t skipped = 0;       // steps skipped for a non-finite loss or gradient (on_nonfinite = "skip")
  Metrics metrics;
};

Checkpoint make_checkpoint(const nn::Module& model, const optim::Optimizer& opt, const TaskData& td, const RunState& s) {
  Checkpoint c;
  c.params = model.state_dict();
  c.optim = opt.state_dict();
  if (!td.token && td.fc.scaler.fitted()) c.scaler = td.fc.scaler.state();
  c.rng = default_generator().state();
  c.counters = {{"epoch", s.epoch},           {"batch", s.batch},
                {"global_step", s.global_step}, {"bad_epochs", s.bad_epochs},
                {"done", s.done ? 1 : 0},      {"loss_count", s.loss_count},
                {"skipped_steps", s.skipped}};
  c.values = {{"best_val_loss", s.best_val}, {"loss_sum", s.loss_sum}, {"epoch_seconds", s.epoch_seconds},
              {"peak_rss_mib", std::max(s.peak_rss, peak_rss_mib())}};
  c.metrics = s.metrics;
  return c;
}

int64_t counter(const Checkpoint& c, const std::string& path, const char* key) {
  auto it = c.counters.find(key);
  SEQLAB_CHECK(it != c.counters.end(), path, ": checkpoint has no counter '", key, "'");
  return it->second;
}

RunState restore(const Checkpoint& c, const std::string& path, nn::Module& model, optim::Optimizer& opt) {
  RunState s;
  s.epoch = counter(c, path, "epoch");
  s.batch = counter(c, path, "batch");
  s.global_step = counter(c, path, "global_step");
  s.bad_epochs = counter(c, path, "bad_epochs");
  s.done = counter(c, path, "done") != 0;
  s.loss_count = counter(c, path, "loss_count");
  if (c.counters.count("skipped_steps")) s.skipped = c.counters.at("skipped_steps");
  auto value = [&](const char* key) {
    auto it = c.values.find(key);
    SEQLAB_CHECK(it != c.values.end(), path, ": checkpoint has no value '", key, "'");
    return it->second;
  };
  s.best_val = value("best_val_loss");
  s.loss_sum = value("loss_sum");
  s.epoch_seconds = value("epoch_seconds");
  if (c.values.count("peak_rss_mib")) s.peak_rss = c.values.at("peak_rss_mib");
  s.metrics = c.metrics;
  try {
    model.load_state_dict(c.params);
    opt.load_state_dict(c.optim);
  } catch (const Error& e) {
    throw Error(str(path, ": does not match the config's model or optimizer: ", e.what()));
  }
  default_generator().set_state(c.rng);
  return s;
}

// [train] init_from: the parameters (only: the optimizer, counters and history start fresh) of a
// checkpoint file, of <dir>/<model name>/checkpoint-<which>.h5 (a compare run) or of
// <dir>/checkpoint-<which>.h5 (a single run), which = [train] init_checkpoint (best | last). Names
// and shapes must match the config's model; the sequence length may differ (curriculum: train
// short, continue long).
void warm_start(const Config& c, const std::string& name, nn::Module& model) {
  const fs::path from(c.train.init_from);
  fs::path file = from;
  if (fs::is_directory(from)) {
    const std::string ck_file = "checkpoint-" + c.train.init_checkpoint + ".h5";
    file = from / name / ck_file;
    if (!fs::exists(file)) file = from / ck_file;
    SEQLAB_CHECK(fs::exists(file), c.file, ": [train] init_from: ", from.string(), " holds neither ", name, "/",
                 ck_file, " nor ", ck_file);
  } else {
    SEQLAB_CHECK(fs::exists(from), c.file, ": [train] init_from: ", from.string(),
                 ": no such file (expected a checkpoint .h5 or a run directory)");
  }
  Checkpoint ck = load_checkpoint(file);
  try {
    model.load_state_dict(ck.params);
  } catch (const Error& e) {
    throw Error(str(c.file, ": [train] init_from: ", file.string(), " does not match the model of [", name, "]: ",
                    e.what()));
  }
  spdlog::info("[{}] parameters initialised from {} (step {}, epoch {})", name, file.string(),
               ck.counters.count("global_step") ? ck.counters.at("global_step") : 0,
               ck.counters.count("epoch") ? ck.counters.at("epoch") : 0);
}

// Numeric faults: the first parameter (registration order) whose gradient (or value) holds a NaN
// or an Inf; "" when every one is finite. O(parameters), negligible next to a training step.
std::string first_nonfinite(const nn::Module& m, bool gradients) {
  for (const auto& p : m.named_parameters()) {
    Tensor t = gradients ? p.tensor.grad() : p.tensor;
    if (!t.defined()) continue;
    const int64_t n = t.numel();
    bool ok = true;
    if (t.dtype() == DType::f32) {
      const float* d = t.data<float>();
      for (int64_t i = 0; i < n; ++i) ok = ok && std::isfinite(d[i]);
    } else if (t.dtype() == DType::f64) {
      const double* d = t.data<double>();
      for (int64_t i = 0; i < n; ++i) ok = ok && std::isfinite(d[i]);
    }
    if (!ok) return p.name;
  }
  return "";
}

// Tests (RunOptions::nonfinite_at_step): a NaN in the first parameter's gradient.
void poison_first_gradient(const nn::Module& m) {
  for (const auto& p : m.named_parameters()) {
    Tensor g = p.tensor.grad();
    if (!g.defined() || g.numel() == 0) continue;
    if (g.dtype() == DType::f32) g.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
    else if (g.dtype() == DType::f64) g.data<double>()[0] = kNaN;
    return;
  }
}

std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "request_stop() runs in a signal handler");

}  // namespace

void request_stop() noexcept { g_stop_requested.store(true); }
bool stop_requested() noexcept { return g_stop_requested.load(); }

// ---------------------------------------------------------------------------------------------

RunResult train_model(const Config& c, size_t index, const std::string& dir_str, const RunOptions& opt) {
  const ModelConfig& mc = c.models.at(index);
  const fs::path dir(dir_str);
  // Data-parallel under mpirun (docs/DISTRIBUTED.md): every rank trains on its slice of each global
  // batch; only rank 0 (the writer) writes the run directory.
  const bool dp = opt.data_parallel && dist::size() > 1;
  const bool writer = !dp || dist::rank() == 0;
  set_num_threads(opt.threads >= 0 ? opt.threads : static_cast<int>(c.train.threads));

  const std::string resolved = to_toml_single(c, index, dir.string());
  const fs::path last_path = dir / "checkpoint-last.h5", best_path = dir / "checkpoint-best.h5";
  const bool resuming = opt.resume && fs::exists(last_path);
  SEQLAB_CHECK(!dp || dist::all_equal(resuming), "[", mc.name, "] --resume: ", last_path.string(),
               " must be visible to every rank (a shared file system) or to none");
  if (resuming && fs::exists(dir / "config.resolved.toml")) {
    std::ifstream in(dir / "config.resolved.toml");
    std::stringstream old;
    old << in.rdbuf();
    if (old.str() != resolved)
      spdlog::warn("[{}] {}: the config differs from the one the run started with; the result may differ from an "
                   "uninterrupted run", mc.name, (dir / "config.resolved.toml").string());
  }
  if (opt.resume && !resuming) spdlog::info("[{}] no {} yet: starting from scratch", mc.name, last_path.string());
  if (!opt.resume && fs::exists(last_path))
    spdlog::warn("[{}] {} exists: starting over (use --resume to continue it)", mc.name, last_path.string());
  spdlog::info("[{}] config (resolved):\n{}", mc.name, resolved);

  TaskData td = make_data(c);
  manual_seed(c.train.seed);
  auto model = make_model(c, mc, td);
  const int64_t n_params = model->num_parameters();
  spdlog::info("[{}] {} parameters, {} threads", mc.name, n_params, num_threads());

  auto optimizer = make_optimizer(c, *model);
  const double base_lr = c.optim.lr;
  std::unique_ptr<dist::GradientReducer> reducer;
  if (dp) {
    SEQLAB_CHECK(c.train.batch_size >= dist::size(), c.file, ": [train] batch_size: expected at least one example "
                 "per rank (", dist::size(), " ranks), got ", c.train.batch_size);
    reducer = std::make_unique<dist::GradientReducer>(model->parameters());
    dist::check_identical(model->parameters(), str("[", mc.name, "] initial parameters"));
    spdlog::info("[{}] data-parallel: {} ranks, global batch {} (about {} per rank), {} threads per rank", mc.name,
                 dist::size(), c.train.batch_size, c.train.batch_size / dist::size(), num_threads());
  }

  // Steps per epoch: the whole training set (or n_train_batches), capped by max_steps.
  std::unique_ptr<data::Loader> loader;
  int64_t steps_per_epoch;
  if (td.token) {
    steps_per_epoch = c.data.n_train_batches;
  } else {
    data::LoaderOptions lo = data::LoaderOptions::train(c.train.batch_size, c.train.seed);
    lo.prefetch = c.train.prefetch > 0;
    if (dp) lo.shard_rank = dist::rank(), lo.shard_count = dist::size();
    SEQLAB_CHECK(c.train.batch_size <= td.fc.train->size(), c.file, ": [train] batch_size: expected at most the ",
                 td.fc.train->size(), " training windows, got ", c.train.batch_size);
    loader = std::make_unique<data::Loader>(td.fc.train, lo);
    steps_per_epoch = loader->num_batches();
    SEQLAB_CHECK(steps_per_epoch > 0, c.file, ": [train] batch_size: expected at most the ", td.fc.train->size(),
                 " training windows, got ", c.train.batch_size);
  }
  if (c.train.max_steps > 0) steps_per_epoch = std::min(steps_per_epoch, c.train.max_steps);
  const int64_t total_steps = steps_per_epoch * c.train.epochs;

  optim::ScheduleOptions so;
  so.name = c.optim.schedule;
  so.step_size = c.optim.step_size;
  so.gamma = c.optim.gamma;
  so.warmup_steps = c.optim.warmup_steps;
  so.total_steps = total_steps;
  so.min_lr_ratio = c.optim.min_lr_ratio;
  if (so.name == "cosine")
    SEQLAB_CHECK(so.warmup_steps < total_steps, c.file, ": [optim] warmup_steps: expected fewer than the ",
                 total_steps, " training steps (epochs x steps per epoch), got ", so.warmup_steps);
  std::unique_ptr<optim::Schedule> schedule;
  try {
    schedule = std::make_unique<optim::Schedule>(so);
  } catch (const Error& e) {
    throw Error(str(c.file, ": [optim]: ", e.what()));
  }

  RunState st;
  if (resuming) {
    st = restore(load_checkpoint(last_path), last_path.string(), *model, *optimizer);
    spdlog::info("[{}] resumed from {}: epoch {}, batch {}, step {}", mc.name, last_path.string(), st.epoch + 1,
                 st.batch, st.global_step);
    // A run that ended because it reached its epochs continues when the config now asks for more
    // (`--resume --set train.epochs=N`); an early stop stays a stop.
    const bool early_stopped = c.train.patience > 0 && st.bad_epochs >= c.train.patience;
    if (st.done && !early_stopped && st.epoch < c.train.epochs) {
      spdlog::info("[{}] extending the finished run from {} to {} epochs", mc.name, st.epoch, c.train.epochs);
      st.done = false;
    }
  } else {
    if (!c.train.init_from.empty()) warm_start(c, mc.name, *model);
    for (const char* k : kMetricNames) st.metrics[k];
    if (td.token) st.metrics["val_acc"], st.metrics["test_acc"];
    std::error_code ec;
    if (writer) fs::remove(best_path, ec);
  }
  // Only now, with the data, model and checkpoint checked, is the run directory touched: a bad
  // input leaves nothing behind (tests/bad_inputs).
  if (writer) {
    fs::create_directories(dir);
    write_text_atomic(dir / "config.resolved.toml", resolved);
  }
  int64_t saved_step = resuming ? st.global_step : -1;  // the step checkpoint-last.h5 holds (-1: none yet)

  Progress progress(!opt.quiet && isatty(fileno(stderr)), mc.name, c.train.epochs, steps_per_epoch);
  model->train();
  data::Batch batch;
  for (; !st.done && st.epoch < c.train.epochs; ++st.epoch) {
    if (loader) {
      if (st.batch > 0) loader->load_state({st.epoch, st.batch});
      else loader->reset(st.epoch);
    }
    progress.start_epoch(st.batch);
    auto t_epoch = Clock::now();
    const int64_t skipped_before_epoch = st.skipped;
    double lr = base_lr * schedule->lr_at(st.global_step);
    while (st.batch < steps_per_epoch) {
      if (td.token) batch = td.task->batch(c.train.batch_size, c.data.data_seed, st.global_step);
      else if (!loader->next(batch)) break;
      if (dp && td.token) batch = shard_rows(batch);
      // Data-parallel dropout: a stream per (seed, rank, step), so ranks draw different masks and a
      // resumed run draws the same ones without saving every rank's generator.
      if (dp) manual_seed(c.train.seed ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(st.global_step + 1)) ^
                          (0xBF58476D1CE4E5B9ULL * static_cast<uint64_t>(dist::rank() + 1)));
      lr = base_lr * schedule->lr_at(st.global_step);
      optimizer->set_lr(lr);
      optimizer->zero_grad();
      Tensor out = model->forward(batch.x);
      Tensor loss = td.token ? token_loss(out, batch.y) : mse_loss(out, batch.y);
      backward(loss);
      // Data-parallel: gradients and loss become the global batch's mean, identical on every rank.
      if (reducer) loss = Tensor::scalar(reducer->reduce(loss.item(), loss_weight(td.token, batch), stop_requested()));
      if (opt.nonfinite_at_step == st.global_step + 1) poison_first_gradient(*model);
      const double l = loss.item();
      // A NaN/Inf loss or gradient never reaches the parameters: stop (checkpoint-last.h5 keeps the
      // last good state) or skip the step ([train] on_nonfinite).
      if (std::string bad = first_nonfinite(*model, true); !std::isfinite(l) || !bad.empty()) {
        const std::string what = str("non-finite ", std::isfinite(l) ? "gradient" : "loss", " (loss ", l, ") at step ",
                                     st.global_step + 1, " (epoch ", st.epoch + 1, ", batch ", st.batch + 1, "); ",
                                     bad.empty() ? std::string("every gradient finite")
                                                 : str("first parameter with a non-finite gradient: '", bad, "'"));
        SEQLAB_CHECK(c.train.on_nonfinite == "skip", "[", mc.name, "] ", what, "; training stopped ([train] "
                     "on_nonfinite = \"stop\"); ", saved_step >= 0 ? str(last_path.string(), " holds step ",
                     saved_step, ", the last good state") : std::string("no checkpoint was written before it"),
                     " (lower [optim] lr, set [optim] grad_clip, or set [train] on_nonfinite = \"skip\")");
        ++st.skipped;
        if (st.skipped <= 10)
          spdlog::warn("[{}] {}: step skipped ({} skipped so far{})", mc.name, what, st.skipped,
                       st.skipped == 10 ? "; further skips are counted at each epoch end" : "");
      } else {
        if (c.optim.grad_clip > 0) optim::clip_grad_norm(model->parameters(), c.optim.grad_clip);
        optimizer->step();
        const std::string bad_param = first_nonfinite(*model, false);
        SEQLAB_CHECK(bad_param.empty(), "[", mc.name, "] parameter '", bad_param, "' became non-finite after the update "
                     "of step ", st.global_step + 1, " (epoch ", st.epoch + 1, ", finite loss and gradients: lower "
                     "[optim] lr); ", saved_step >= 0 ? str(last_path.string(), " holds step ", saved_step,
                     ", the last good state") : std::string("no checkpoint was written before it"));
        st.loss_sum += l;
        ++st.loss_count;
        if (opt.step_losses) opt.step_losses->push_back(l);
      }
      ++st.batch;
      ++st.global_step;
      progress.update(st.epoch, st.batch, st.loss_sum / static_cast<double>(st.loss_count));
      if (opt.stop_after_steps > 0 && st.global_step >= opt.stop_after_steps) {
        progress.clear();
        RunResult r;
        r.model = mc.name;
        r.params = n_params;
        return r;  // as if killed here: nothing after the last checkpoint is kept
      }
      // SIGINT (request_stop): write checkpoint-last.h5 at this step and return; --resume continues.
      const bool interrupt = (reducer ? reducer->any_stop() : stop_requested()) && st.batch < steps_per_epoch;
      if (writer && st.batch < steps_per_epoch &&
          (interrupt || (c.train.checkpoint_every > 0 && st.global_step % c.train.checkpoint_every == 0))) {
        RunState snap = st;
        snap.epoch_seconds += seconds_since(t_epoch);
        save_checkpoint(last_path, make_checkpoint(*model, *optimizer, td, snap));
        saved_step = st.global_step;
      }
      if (interrupt) {
        progress.clear();
        spdlog::warn("[{}] interrupted at step {} (epoch {}): {} written; --resume continues from it", mc.name,
                     st.global_step, st.epoch + 1, last_path.string());
        RunResult r;
        r.model = mc.name;
        r.params = n_params;
        r.interrupted = true;
        r.skipped_steps = st.skipped;
        return r;
      }
    }
    st.epoch_seconds += seconds_since(t_epoch);
    progress.clear();

    auto t_eval = Clock::now();
    EvalStats val = td.token ? eval_tokens(*model, td.val_batches, dp)
                             : eval_forecast(*model, td.fc.val, c.train.eval_batch_size, dp);
    EvalStats test = td.token ? eval_tokens(*model, td.test_batches, dp)
                              : eval_forecast(*model, td.fc.test, c.train.eval_batch_size, dp);
    Metrics& m = st.metrics;
    m["train_loss"].push_back(st.loss_sum / static_cast<double>(std::max<int64_t>(st.loss_count, 1)));
    m["val_loss"].push_back(val.loss);
    m["val_mse"].push_back(val.mse);
    m["val_mae"].push_back(val.mae);
    m["test_mse"].push_back(test.mse);
    m["test_mae"].push_back(test.mae);
    m["seconds"].push_back(st.epoch_seconds);
    m["eval_seconds"].push_back(seconds_since(t_eval));
    m["lr"].push_back(lr);
    if (td.token) {
      m["val_acc"].push_back(val.acc);
      m["test_acc"].push_back(test.acc);
    }
    const bool improved = val.loss < st.best_val;
    if (improved) {
      st.best_val = val.loss;
      st.bad_epochs = 0;
    } else {
      ++st.bad_epochs;
    }
    if (td.token)
      spdlog::info("[{}] epoch {}/{}: train_loss {:.5f} val_loss {:.5f} val_acc {:.4f} test_acc {:.4f} lr {:.3g} "
                   "{:.1f}s{}", mc.name, st.epoch + 1, c.train.epochs, m["train_loss"].back(), val.loss, val.acc,
                   test.acc, lr, st.epoch_seconds, improved ? " *" : "");
    else
      spdlog::info("[{}] epoch {}/{}: train_loss {:.5f} val_mse {:.5f} val_mae {:.5f} test_mse {:.5f} test_mae "
                   "{:.5f} lr {:.3g} {:.1f}s{}", mc.name, st.epoch + 1, c.train.epochs, m["train_loss"].back(),
                   val.mse, val.mae, test.mse, test.mae, lr, st.epoch_seconds, improved ? " *" : "");

    const bool stop = c.train.patience > 0 && st.bad_epochs >= c.train.patience;
    // The state as of the start of the next epoch.
    RunState next = st;
    next.epoch = st.epoch + 1;
    next.batch = 0;
    next.loss_sum = 0;
    next.loss_count = 0;
    next.epoch_seconds = 0;
    next.done = stop || next.epoch >= c.train.epochs;
    if (dp) dist::check_identical(model->parameters(), str("[", mc.name, "] parameters after epoch ", st.epoch + 1));
    if (writer) {
      Checkpoint ck = make_checkpoint(*model, *optimizer, td, next);
      if (improved) save_checkpoint(best_path, ck);  // before last: a crash in between redoes this epoch
      save_checkpoint(last_path, ck);
      saved_step = st.global_step;
      write_metrics(dir / "metrics.h5", m);
    }
    if (st.skipped > skipped_before_epoch)
      spdlog::warn("[{}] epoch {}: {} step(s) skipped for a non-finite loss or gradient ({} in the run)", mc.name,
                   st.epoch + 1, st.skipped - skipped_before_epoch, st.skipped);
    st.batch = 0;
    st.loss_sum = 0;
    st.loss_count = 0;
    st.epoch_seconds = 0;
    if (stop) {
      spdlog::info("[{}] early stop: no validation improvement in {} epochs", mc.name, c.train.patience);
      st.done = true;
      ++st.epoch;
      break;
    }
    if ((dp ? dist::any(stop_requested()) : stop_requested()) && !next.done) {
      spdlog::warn("[{}] interrupted after epoch {}: {} written; --resume continues from it", mc.name, st.epoch + 1,
                   last_path.string());
      RunResult r;
      r.model = mc.name;
      r.params = n_params;
      r.interrupted = true;
      r.skipped_steps = st.skipped;
      return r;
    }
  }
  // Always rewritten: a run killed between the last checkpoint and metrics.h5 resumes as done.
  if (writer) write_metrics(dir / "metrics.h5", st.metrics);
  if (opt.final_params) *opt.final_params = model->parameters();

  RunResult r = result_from(mc.name, n_params, st.metrics, st.global_step, td.token);
  r.finished = true;
  r.skipped_steps = st.skipped;
  if (st.skipped > 0)
    spdlog::warn("[{}] {} of {} steps skipped for a non-finite loss or gradient ([train] on_nonfinite = \"skip\")",
                 mc.name, st.skipped, st.global_step);
  r.peak_rss_mib = std::max(r.peak_rss_mib, st.peak_rss);  // a resumed run reports the whole run's peak
  if (reducer && reducer->calls() > 0 && r.step_ms > 0) {
    const double ms = 1e3 * reducer->seconds() / static_cast<double>(reducer->calls());
    spdlog::info("[{}] all-reduce: {} floats per step, {:.3f} ms/step ({:.3f} ms in MPI_Allreduce), {:.1f}% of a "
                 "{:.2f} ms step", mc.name, reducer->buffer_size(), ms,
                 1e3 * reducer->mpi_seconds() / static_cast<double>(reducer->calls()), 100.0 * ms / r.step_ms, r.step_ms);
  }
  if (writer) {
    write_text_atomic(dir / "results.csv", results_csv({r}));
    write_text_atomic(dir / "results.md", results_md({r}));
  }
  spdlog::info("[{}] done: {} epochs, {:.1f}s training, {:.2f} ms/step, best val {:.5f}, test_mse {:.5f}", mc.name,
               r.epochs, r.train_seconds, r.step_ms, r.val_mse, r.test_mse);
  return r;
}

RunResult run_train(const Config& c, const RunOptions& opt) {
  SEQLAB_CHECK(!c.multi, c.file, ": lists [[models]]: use `seqlab compare` (or a config with one [model])");
  return train_model(c, 0, c.output.dir, opt);
}

std::vector<RunResult> run_compare(const Config& c, const RunOptions& opt, const std::string& exe,
                                   const std::vector<std::string>& child_args) {
  const fs::path dir(c.output.dir);
  // Under mpirun the runs are dealt round-robin to the ranks, each trained single-process by the
  // rank that owns it; rank 0 writes the comparison's own files and gathers the rows.
  const int n_ranks = dist::size(), me = dist::rank();
  fs::create_directories(dir);
  if (me == 0) write_text_atomic(dir / "config.resolved.toml", to_toml(c));
  const std::vector<std::string> env_strings = dist::environment_without_launcher();
  std::vector<char*> child_env;  // children run single-process: no MPI launcher variables
  for (const auto& e : env_strings) child_env.push_back(const_cast<char*>(e.c_str()));
  child_env.push_back(nullptr);
  RunOptions run_opt = opt;
  run_opt.data_parallel = false;
  std::vector<RunResult> rows;
  std::vector<size_t> row_index;  // model index of each row
  auto t0 = Clock::now();
  for (size_t i = 0; i < c.models.size(); ++i) {
    if (static_cast<int>(i % static_cast<size_t>(n_ranks)) != me) continue;
    row_index.push_back(i);
    const ModelConfig& mc = c.models[i];
    const fs::path sub = dir / mc.name;
    spdlog::info("compare: model {}/{} '{}' ({}) -> {}", i + 1, c.models.size(), mc.name, mc.type, sub.string());
    if (exe.empty()) {
      rows.push_back(train_model(c, i, sub.string(), run_opt));
      if (!rows.back().finished) return rows;
      continue;
    }
    // A child process per model: its own peak RSS, and a crash in one model stops only that one.
    fs::create_directories(sub);
    const fs::path sub_config = sub / "config.resolved.toml";
    write_text_atomic(sub_config, to_toml_single(c, i, sub.string()));
    std::vector<std::string> args = {exe};
    args.insert(args.end(), child_args.begin(), child_args.end());
    args.push_back("train");
    args.push_back(sub_config.string());
    if (opt.resume) args.push_back("--resume");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    // The child's stdout (its one-row table) is dropped: the combined table is printed at the end.
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), child_env.data());
    posix_spawn_file_actions_destroy(&actions);
    SEQLAB_CHECK(rc == 0, "compare: cannot start ", exe, ": ", std::strerror(rc));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if ((WIFEXITED(status) && WEXITSTATUS(status) == 130) || (WIFSIGNALED(status) && WTERMSIG(status) == SIGINT)) {
      RunResult r;  // the child was interrupted (Ctrl-C) and wrote its checkpoint-last.h5
      r.model = mc.name;
      r.interrupted = true;
      rows.push_back(r);
      return rows;
    }
    SEQLAB_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "compare: model '", mc.name, "' failed (",
                 WIFEXITED(status) ? str("exit code ", WEXITSTATUS(status)) : str("signal ", WTERMSIG(status)),
                 "); its run directory is ", sub.string(), "; rerun with --resume to continue");
    auto r = read_results_csv((sub / "results.csv").string());
    SEQLAB_CHECK(r.size() == 1, (sub / "results.csv").string(), ": expected one row");
    if (c.data.is_token_task()) {
      Metrics m = read_metrics(sub / "metrics.h5");
      r[0].test_acc = at(m, "test_acc", best_epoch(m));
    }
    r[0].finished = true;
    rows.push_back(r[0]);
  }
  if (n_ranks > 1) {
    // One tab-separated line per row (index first), every number exact (%.17g).
    std::string mine;
    for (size_t k = 0; k < rows.size(); ++k) {
      const RunResult& r = rows[k];
      mine += str(row_index[k], "\t", r.model, "\t", r.params, "\t", r.epochs);
      for (double v : {r.train_seconds, r.step_ms, r.peak_rss_mib, r.val_mse, r.test_mse, r.test_mae, r.test_acc})
        mine += '\t', mine += fmt("%.17g", v);
      mine += "\n";
    }
    auto all = dist::gather(mine);
    if (me != 0) return {};
    std::vector<RunResult> merged(c.models.size());
    std::vector<bool> seen(c.models.size(), false);
    for (const std::string& part : all) {
      std::stringstream ss(part);
      for (std::string line; std::getline(ss, line);) {
        std::vector<std::string> f;
        std::stringstream ls(line);
        for (std::string x; std::getline(ls, x, '\t');) f.push_back(x);
        SEQLAB_CHECK(f.size() == 11, "compare: a malformed row from another rank: '", line, "'");
        const auto i = static_cast<size_t>(std::stoull(f[0]));
        SEQLAB_CHECK(i < merged.size() && !seen[i], "compare: row ", i, " from another rank is out of place");
        RunResult& r = merged[i];
        r.model = f[1];
        r.params = std::stoll(f[2]);
        r.epochs = std::stoll(f[3]);
        double* v[] = {&r.train_seconds, &r.step_ms, &r.peak_rss_mib, &r.val_mse, &r.test_mse, &r.test_mae, &r.test_acc};
        for (size_t k = 0; k < 7; ++k) *v[k] = std::stod(f[4 + k]);
        r.finished = true;
        seen[i] = true;
      }
    }
    for (size_t i = 0; i < seen.size(); ++i)
      SEQLAB_CHECK(seen[i], "compare: no result for model '", c.models[i].name, "' from rank ", i % n_ranks);
    rows = std::move(merged);
  }
  write_text_atomic(dir / "results.csv", results_csv(rows));
  write_text_atomic(dir / "results.md", results_md(rows));
  spdlog::info("compare: {} models in {} (results in {})", rows.size(), time_str(seconds_since(t0)),
               (dir / "results.md").string());
  return rows;
}

void check_checkpoint_choice(const std::string& which, const std::string& what) {
  SEQLAB_CHECK(which == "best" || which == "last", what, ": expected best or last, got '", which, "'");
}

std::vector<EvalRow> run_eval(const std::string& run_dir, const std::string& split, int threads,
                              const std::string& checkpoint) {
  check_checkpoint_choice(checkpoint, "eval --checkpoint");
  SEQLAB_CHECK(split == "val" || split == "test", "eval: --split must be val or test, got '", split, "'");
  const fs::path dir(run_dir);
  const fs::path cfg = dir / "config.resolved.toml";
  SEQLAB_CHECK(fs::is_regular_file(cfg), run_dir, ": not a run directory (no config.resolved.toml)");
  Config c = load_config(cfg.string());
  std::vector<EvalRow> rows;
  if (c.multi) {
    for (const auto& m : c.models) {
      auto sub = run_eval((dir / m.name).string(), split, threads, checkpoint);
      rows.insert(rows.end(), sub.begin(), sub.end());
    }
    return rows;
  }
  if (threads >= 0 || c.train.threads > 0) set_num_threads(threads >= 0 ? threads : static_cast<int>(c.train.threads));
  LoadedRun r = load_run_model(run_dir, checkpoint);
  EvalStats s = r.token ? eval_tokens(*r.model, split == "val" ? r.val_batches : r.test_batches)
                        : eval_forecast(*r.model, split == "val" ? r.fc.val : r.fc.test, c.train.eval_batch_size);
  rows.push_back({c.models[0].name, s.mse, s.mae, s.acc, r.checkpoint, r.step, r.epoch});
  return rows;
}

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

std::string csv_field(std::string s) {
  for (auto& ch : s)
    if (ch == ',' || ch == '\n' || ch == '\r') ch = ch == ',' ? ';' : ' ';
  return s;
}

struct ExtrapolationRun {
  fs::path dir;
  Config config;
};

std::vector<ExtrapolationRow> extrapolate_one(const ExtrapolationRun& run, const std::vector<int64_t>& lens,
                                              const ExtrapolateOptions& opt) {
  const Config& c = run.config;
  const ModelConfig& mc = c.models[0];
  if (opt.threads >= 0 || c.train.threads > 0)
    set_num_threads(opt.threads >= 0 ? opt.threads : static_cast<int>(c.train.threads));
  LoadedRun loaded = load_run_model(run.dir.string(), opt.checkpoint);  // the same path as `seqlab eval`
  nn::SequenceModel* model = loaded.model.get();
  const bool can_step = model->has_step();
  const bool quadratic = mc.type == "transformer";  // attention: O(T^2) time in either mode
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
      // Fresh sequences from a stream of their own per length: reproducible, and a smaller
      // n_sequences draws a prefix of a larger one.
      auto task = data::make_token_task(task_name, T, opt.key_distance);
      data::Batch b = task->batch(r.n_sequences, c.data.data_seed + 3, T);
      release_cached_memory();
      reset_peak_memory();
      reset_rss_peak();
      const auto t0 = Clock::now();
      try {
        if (step) {
          Tally tl = eval_tokens_step(*model, b, opt.max_seconds, t0);
          if (tl.interrupted) {
            r.status = stop = "skipped: interrupted";
          } else if (tl.stopped_at > 0) {
            r.status = stop = "skipped: time limit";
            spdlog::info("[{}] T={}: stopped at position {} after {:.0f} s (--max-seconds {:g}); skipping longer "
                         "lengths", mc.name, T, tl.stopped_at, seconds_since(t0), opt.max_seconds);
          } else {
            r.accuracy = static_cast<double>(tl.correct) / static_cast<double>(std::max<int64_t>(tl.scored, 1));
          }
        } else {
          // The full forward, in chunks of at most 2^17 tokens (the ordinary evaluation path).
          const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(r.n_sequences, (int64_t{1} << 17) / T));
          std::vector<data::Batch> chunks;
          for (int64_t lo = 0; lo < r.n_sequences; lo += chunk)
            chunks.push_back(batch_rows(b, lo, std::min(r.n_sequences, lo + chunk)));
          r.accuracy = eval_tokens(*model, chunks).acc;
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
      r.alloc_peak_mib = static_cast<double>(allocator_stats().peak_bytes) / (1024.0 * 1024.0);
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
  return rows;
}

int64_t parse_length_term(const std::string& t, const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Error(str("eval --seq-lens: ", why, "; expected a comma-separated list of lengths such as "
                     "256,512,...,65536 or 2^8,2^16, got '", text, "'"));
  };
  const auto caret = t.find('^');
  auto integer = [&](const std::string& s) -> int64_t {
    if (s.empty() || s.size() > 12 || !std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      throw bad(str("'", t, "' is not a positive integer"));
    return std::stoll(s);
  };
  int64_t v;
  if (caret == std::string::npos) {
    v = integer(t);
  } else {
    const int64_t base = integer(t.substr(0, caret)), e = integer(t.substr(caret + 1));
    if (base < 2 || e > 40 || static_cast<double>(e) * std::log2(static_cast<double>(base)) > 40)
      throw bad(str("'", t, "' is out of range (at most 2^40)"));
    v = 1;
    for (int64_t i = 0; i < e; ++i) v *= base;
  }
  if (v < 1 || v > (int64_t{1} << 40)) throw bad(str("'", t, "' is out of range (1 to 2^40)"));
  return v;
}

}  // namespace

int64_t default_sequences(int64_t seq_len) {
  return std::clamp<int64_t>((int64_t{1} << 22) / std::max<int64_t>(seq_len, 1), 16, 64);
}

std::vector<int64_t> parse_seq_lens(const std::string& text) {
  std::vector<std::string> terms;
  std::stringstream ss(text);
  for (std::string t; std::getline(ss, t, ',');) {
    t.erase(0, t.find_first_not_of(" \t"));
    t.erase(t.find_last_not_of(" \t") + 1);
    terms.push_back(t);
  }
  if (!text.empty() && text.back() == ',') terms.push_back("");
  SEQLAB_CHECK(!terms.empty(), "eval --seq-lens: expected a comma-separated list of lengths such as 256,512,...,65536, "
               "got an empty list");
  std::vector<int64_t> lens;
  for (size_t i = 0; i < terms.size(); ++i) {
    if (terms[i] != "...") {
      lens.push_back(parse_length_term(terms[i], text));
      continue;
    }
    SEQLAB_CHECK(i >= 2 && i + 2 == terms.size(), "eval --seq-lens: '...' needs two terms before it and exactly one "
                 "after it (256,512,...,65536), got '", text, "'");
    const int64_t a = lens[lens.size() - 2], b = lens.back(), last = parse_length_term(terms[i + 1], text);
    SEQLAB_CHECK(b > a && b % a == 0, "eval --seq-lens: '...' continues a geometric series: the two terms before it "
                 "must have an integer ratio >= 2 (256,512,...), got ", a, " and ", b, " in '", text, "'");
    const int64_t ratio = b / a;
    int64_t v = b;
    while (v < last && v <= (int64_t{1} << 40) / ratio) lens.push_back(v *= ratio);
    SEQLAB_CHECK(v == last, "eval --seq-lens: ", last, " is not a term of the series ", a, ", ", b, ", ... (ratio ",
                 ratio, ") in '", text, "'");
    break;
  }
  SEQLAB_CHECK(lens.size() <= 64, "eval --seq-lens: expected at most 64 lengths, got ", lens.size(), " from '", text,
               "'");
  return lens;
}

std::string extrapolation_file(const ExtrapolateOptions& opt) {
  return opt.key_distance > 0 ? str("extrapolation-d", opt.key_distance, ".csv") : std::string("extrapolation.csv");
}

namespace {
// An integer >= lo spelled out in the whole of text; throws naming the option otherwise.
int64_t parse_int_at_least(const std::string& text, int64_t lo, const char* option) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SEQLAB_CHECK(used > 0 && used == text.size() && v >= lo, "eval ", option, ": expected an integer >= ", lo, ", got '",
               text, "'");
  return v;
}
}  // namespace

ExtrapolateOptions parse_extrapolate_options(const std::string& seq_lens, const std::string& n_sequences,
                                             const std::string& max_seconds, const std::string& step,
                                             const std::string& key_distance) {
  ExtrapolateOptions o;
  o.seq_lens = parse_seq_lens(seq_lens);
  if (!n_sequences.empty()) o.n_sequences = parse_int_at_least(n_sequences, 1, "--n-sequences");
  if (!max_seconds.empty()) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(max_seconds, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SEQLAB_CHECK(used > 0 && used == max_seconds.size() && std::isfinite(v) && v > 0,
                 "eval --max-seconds: expected a number > 0, got '", max_seconds, "'");
    o.max_seconds = v;
  }
  if (!step.empty()) o.step = step;
  SEQLAB_CHECK(o.step == "auto" || o.step == "always" || o.step == "never",
               "eval --step: expected auto, always or never, got '", o.step, "'");
  if (!key_distance.empty()) o.key_distance = parse_int_at_least(key_distance, 2, "--key-distance");
  return o;
}

std::vector<ExtrapolationRow> run_extrapolation(const std::string& run_dir, const ExtrapolateOptions& opt) {
  SEQLAB_CHECK(!opt.seq_lens.empty(), "eval --seq-lens: expected at least one length");
  SEQLAB_CHECK(opt.n_sequences >= 0, "eval --n-sequences: expected an integer >= 1, got ", opt.n_sequences);
  SEQLAB_CHECK(opt.max_seconds > 0, "eval --max-seconds: expected a number > 0, got ", opt.max_seconds);
  SEQLAB_CHECK(opt.step == "auto" || opt.step == "always" || opt.step == "never",
               "eval --step: expected auto, always or never, got '", opt.step, "'");
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

std::string extrapolation_csv(const std::vector<ExtrapolationRow>& rows) {
  std::string s = "model,seq_len,n_sequences,accuracy,seconds,peak_rss_mib,mode,status,key_distance,checkpoint,step\n";
  for (const auto& r : rows)
    s += str(r.model, ",", r.seq_len, ",", r.n_sequences, ",", fmt("%.6f", r.accuracy), ",", fmt("%.3f", r.seconds),
             ",", fmt("%.1f", r.peak_rss_mib), ",", r.mode, ",", csv_field(r.status), ",", r.key_distance, ",", r.checkpoint,
             ",", r.step, "\n");
  return s;
}

std::string extrapolation_md(const std::vector<ExtrapolationRow>& rows) {
  std::string s = "| model | seq_len | n_sequences | accuracy | seconds | peak_rss_mib | tensors_mib | mode | status | "
                  "key_distance | checkpoint | step |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|\n";
  for (const auto& r : rows)
    s += str("| ", r.model, " | ", r.seq_len, " | ", r.n_sequences, " | ",
             std::isnan(r.accuracy) ? std::string("-") : fmt("%.4f", r.accuracy), " | ",
             r.status == "ok" ? fmt("%.2f", r.seconds) : std::string("-"), " | ",
             std::isnan(r.peak_rss_mib) ? std::string("-") : fmt("%.0f", r.peak_rss_mib), " | ",
             std::isnan(r.alloc_peak_mib) ? std::string("-") : fmt("%.0f", r.alloc_peak_mib), " | ", r.mode, " | ",
             r.status, " | ", r.key_distance > 0 ? std::to_string(r.key_distance) : std::string("random"), " | ",
             r.checkpoint, " | ", r.step, " |\n");
  return s;
}

LoadedRun load_run_model(const std::string& run_dir, const std::string& checkpoint) {
  check_checkpoint_choice(checkpoint, "checkpoint");
  const fs::path dir(run_dir);
  const fs::path cfg = dir / "config.resolved.toml";
  SEQLAB_CHECK(fs::is_regular_file(cfg), run_dir, ": not a run directory (no config.resolved.toml)");
  Config c = load_config(cfg.string());
  SEQLAB_CHECK(!c.multi, run_dir, ": a comparison's directory; expected one model's run directory (", run_dir, "/",
               c.models[0].name, ", ...)");
  const fs::path best = dir / ("checkpoint-" + checkpoint + ".h5");
  Checkpoint ck = load_checkpoint(best);
  TaskData td = make_data(c);
  manual_seed(c.train.seed);
  auto model = make_model(c, c.models[0], td);
  try {
    model->load_state_dict(ck.params);
  } catch (const Error& e) {
    throw Error(str(best.string(), ": does not match ", cfg.string(), ": ", e.what()));
  }
  if (!td.token && td.fc.scaler.fitted() && ck.scaler.count("mean")) {
    // The scaler is refitted from the data; it must be the one the model was trained with.
    auto a = td.fc.scaler.state().at("mean").to_vector(), b = ck.scaler.at("mean").to_vector();
    SEQLAB_CHECK(a == b, best.string(), ": the scaler differs from the one refitted on ", c.data.path,
                 " (did the data change?)");
  }
  model->eval();
  LoadedRun r;
  r.config = std::move(c);
  r.model = std::move(model);
  r.token = td.token;
  r.fc = std::move(td.fc);
  r.columns = std::move(td.columns);
  r.dates = std::move(td.dates);
  r.val_batches = std::move(td.val_batches);
  r.test_batches = std::move(td.test_batches);
  r.checkpoint = checkpoint;
  const auto counter = [&](const char* k) { return ck.counters.count(k) ? ck.counters.at(k) : int64_t{0}; };
  r.step = counter("global_step");
  r.epoch = counter("epoch");
  return r;
}

// ---------------------------------------------------------------------------------------------

std::string results_csv(const std::vector<RunResult>& rows) {
  std::string s = "model,params,epochs,train_seconds,step_ms,peak_rss_mib,val_mse,test_mse,test_mae\n";
  for (const auto& r : rows)
    s += str(r.model, ",", r.params, ",", r.epochs, ",", fmt("%.3f", r.train_seconds), ",", fmt("%.3f", r.step_ms), ",",
             fmt("%.1f", r.peak_rss_mib), ",", fmt("%.9g", r.val_mse), ",", fmt("%.9g", r.test_mse), ",",
             fmt("%.9g", r.test_mae), "\n");
  return s;
}

std::string results_md(const std::vector<RunResult>& rows) {
  bool token = false;
  for (const auto& r : rows) token = token || r.test_acc >= 0;
  std::string s = "| model | params | epochs | train_seconds | step_ms | peak_rss_mib | val_mse | test_mse | test_mae |";
  s += token ? " test_acc |\n" : "\n";
  s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|";
  s += token ? "---:|\n" : "\n";
  for (const auto& r : rows) {
    s += str("| ", r.model, " | ", r.params, " | ", r.epochs, " | ", fmt("%.1f", r.train_seconds), " | ",
             fmt("%.2f", r.step_ms), " | ", fmt("%.1f", r.peak_rss_mib), " | ", fmt("%.4f", r.val_mse), " | ",
             fmt("%.4f", r.test_mse), " | ", fmt("%.4f", r.test_mae), " |");
    if (token) s += " " + fmt("%.4f", r.test_acc) + " |";
    s += "\n";
  }
  if (token)
    s += "\nToken task: val_mse and test_mse hold the cross-entropy (nats per scored token), test_mae is not "
         "defined (nan), and test_acc is the fraction of scored tokens predicted exactly (argmax), all at the "
         "epoch with the best validation loss.\n";
  return s;
}

std::vector<RunResult> read_results_csv(const std::string& path) {
  std::ifstream in(path);
  SEQLAB_CHECK(in, path, ": cannot open");
  std::string line;
  std::getline(in, line);
  std::vector<RunResult> rows;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    SEQLAB_CHECK(f.size() == 9, path, ": expected 9 columns, got ", f.size(), " in '", line, "'");
    RunResult r;
    r.model = f[0];
    r.params = std::stoll(f[1]);
    r.epochs = std::stoll(f[2]);
    r.train_seconds = std::stod(f[3]);
    r.step_ms = std::stod(f[4]);
    r.peak_rss_mib = std::stod(f[5]);
    r.val_mse = std::stod(f[6]);
    r.test_mse = std::stod(f[7]);
    r.test_mae = std::stod(f[8]);
    rows.push_back(r);
  }
  return rows;
}

}  // namespace seqlab::app
