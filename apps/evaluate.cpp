// `seqlab eval`: a run directory's checkpoint rebuilt with its data (load_run_model) and evaluated
// on a split; the token-accuracy counter both evaluation paths share.
#include "apps/run.h"
#include "apps/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "apps/checkpoint.h"
#include "autograd/ops.h"
#include "core/cuda/runtime.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/random.h"
#include "data/forecast.h"
#include "data/synthetic.h"
#include "layers/model.h"

namespace seqlab::app {
namespace fs = std::filesystem;

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

void check_checkpoint_choice(const std::string& which, const std::string& what) {
  SEQLAB_CHECK(which == "best" || which == "last", what, ": expected best or last, got '", which, "'");
}

void check_eval_device(const std::string& device, const std::string& what) {
  SEQLAB_CHECK(device == "cpu" || device == "cuda", what, ": expected cpu or cuda, got '", device, "'");
  if (device == "cuda") cuda::require(what + " cuda");
}

std::vector<EvalRow> run_eval(const std::string& run_dir, const std::string& split, int threads,
                              const std::string& checkpoint, const std::string& device) {
  check_checkpoint_choice(checkpoint, "eval --checkpoint");
  check_eval_device(device, "eval --device");
  SEQLAB_CHECK(split == "val" || split == "test", "eval: --split must be val or test, got '", split, "'");
  const fs::path dir(run_dir);
  const fs::path cfg = dir / "config.resolved.toml";
  SEQLAB_CHECK(fs::is_regular_file(cfg), run_dir, ": not a run directory (no config.resolved.toml)");
  Config c = load_config(cfg.string());
  std::vector<EvalRow> rows;
  if (c.multi) {
    for (const auto& m : c.models) {
      auto sub = run_eval((dir / m.name).string(), split, threads, checkpoint, device);
      rows.insert(rows.end(), sub.begin(), sub.end());
    }
    return rows;
  }
  if (threads >= 0 || c.train.threads > 0) set_num_threads(threads >= 0 ? threads : static_cast<int>(c.train.threads));
  LoadedRun r = load_run_model(run_dir, checkpoint);
  if (device == "cuda") r.model->to(Device::cuda);  // eval_tokens / eval_forecast move each batch to it
  EvalStats s = r.token ? eval_tokens(*r.model, split == "val" ? r.val_batches : r.test_batches)
                        : eval_forecast(*r.model, split == "val" ? r.fc.val : r.fc.test, c.train.eval_batch_size);
  rows.push_back({c.models[0].name, s.mse, s.mae, s.acc, r.checkpoint, r.step, r.epoch});
  return rows;
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

}  // namespace seqlab::app
