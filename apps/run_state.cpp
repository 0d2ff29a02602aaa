// Checkpoint state of a run (apps/run_state.h).
#include "apps/run_state.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "apps/run.h"
#include "core/error.h"
#include "core/random.h"

namespace seqlab::app {
namespace fs = std::filesystem;

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

namespace {

int64_t counter(const Checkpoint& c, const std::string& path, const char* key) {
  auto it = c.counters.find(key);
  SEQLAB_CHECK(it != c.counters.end(), path, ": checkpoint has no counter '", key, "'");
  return it->second;
}

}  // namespace

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

}  // namespace seqlab::app
