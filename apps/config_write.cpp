// Writing a config back: config.resolved.toml (every key with the value used, the layer's options
// from its declared table) and docs/CONFIG.md's per-layer option tables.
#include <sstream>
#include <variant>

#include "apps/config.h"
#include "apps/config_toml.h"
#include "layers/registry.h"

namespace seqlab::app {

using cfg::format_double;
using cfg::quote;

namespace {

// A layer option's value as TOML.
std::string toml_value(const nn::ArgValue& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&v)) return format_double(*d);
  if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  return quote(std::get<std::string>(v));
}

void emit_model(std::ostringstream& os, const ModelConfig& m) {
  os << "name = " << quote(m.name) << "\n";
  os << "type = " << quote(m.type) << "\n";
  os << "d_model = " << m.d_model << "\n";
  os << "n_layers = " << m.n_layers << "\n";
  os << "revin = " << (m.revin ? "true" : "false") << "\n";
  os << "head = " << quote(m.head) << "\n";
  os << "norm = " << quote(m.norm) << "\n";
  os << "dropout = " << format_double(m.dropout) << "\n";
  os << "embed = " << quote(m.embed) << "\n";
  os << "patch_len = " << m.patch_len << "\n";
  os << "patch_stride = " << m.patch_stride << "\n";
  os << "channel_independent = " << (m.channel_independent ? "true" : "false") << "\n";
  os << "bidir = " << (m.bidir ? "true" : "false") << "\n";
  os << "embed_init_std = " << format_double(m.embed_init_std) << "\n";
  os << "tie_embeddings = " << (m.tie_embeddings ? "true" : "false") << "\n";
  // The layer's options with the values used (its own dropout is the key mixer_dropout here: dropout
  // is the block's); a type without declared options writes the keys as given.
  if (m.layer_options.empty()) {
    if (m.mixer_dropout >= 0) os << "mixer_dropout = " << format_double(m.mixer_dropout) << "\n";
    for (const auto& [k, v] : m.args.values()) os << k << " = " << toml_value(v) << "\n";
    return;
  }
  for (const auto& o : m.layer_options)
    os << (o.key == "dropout" ? "mixer_dropout" : o.key) << " = " << toml_value(o.value) << "\n";
}

std::string emit(const Config& c, const std::vector<size_t>& models, bool multi, const std::string& dir) {
  std::ostringstream os;
  const DataConfig& d = c.data;
  os << "# resolved from " << c.file << ": every key with the value used (docs/CONFIG.md)\n\n";
  os << "[data]\n";
  os << "task = " << quote(d.task) << "\n";
  os << "path = " << quote(d.path) << "\n";
  os << "dataset = " << quote(d.dataset) << "\n";
  os << "split = " << quote(d.split) << "\n";
  os << "ratios = [" << format_double(d.ratios[0]) << ", " << format_double(d.ratios[1]) << ", "
     << format_double(d.ratios[2]) << "]\n";
  os << "features = " << quote(d.features) << "\n";
  os << "target = " << quote(d.target) << "\n";
  os << "seq_len = " << d.seq_len << "\n";
  os << "pred_len = " << d.pred_len << "\n";
  os << "scale = " << (d.scale ? "true" : "false") << "\n";
  os << "n_train_batches = " << d.n_train_batches << "\n";
  os << "n_eval_batches = " << d.n_eval_batches << "\n";
  os << "key_distance = " << d.key_distance << "\n";
  os << "rows = " << d.rows << "\n";
  os << "channels = " << d.channels << "\n";
  os << "noise = " << format_double(d.noise) << "\n";
  os << "ar = " << format_double(d.ar) << "\n";
  os << "data_seed = " << d.data_seed << "\n";
  for (size_t i : models) {
    os << (multi ? "\n[[models]]\n" : "\n[model]\n");
    emit_model(os, c.models[i]);
  }
  const OptimConfig& o = c.optim;
  os << "\n[optim]\n";
  os << "name = " << quote(o.name) << "\n";
  os << "lr = " << format_double(o.lr) << "\n";
  os << "weight_decay = " << format_double(o.weight_decay) << "\n";
  os << "momentum = " << format_double(o.momentum) << "\n";
  os << "nesterov = " << (o.nesterov ? "true" : "false") << "\n";
  os << "betas = [" << format_double(o.betas[0]) << ", " << format_double(o.betas[1]) << "]\n";
  os << "eps = " << format_double(o.eps) << "\n";
  os << "schedule = " << quote(o.schedule) << "\n";
  os << "warmup_steps = " << o.warmup_steps << "\n";
  os << "min_lr_ratio = " << format_double(o.min_lr_ratio) << "\n";
  os << "step_size = " << o.step_size << "\n";
  os << "gamma = " << format_double(o.gamma) << "\n";
  os << "grad_clip = " << format_double(o.grad_clip) << "\n";
  const TrainConfig& t = c.train;
  os << "\n[train]\n";
  os << "epochs = " << t.epochs << "\n";
  os << "batch_size = " << t.batch_size << "\n";
  os << "eval_batch_size = " << t.eval_batch_size << "\n";
  os << "seed = " << t.seed << "\n";
  os << "patience = " << t.patience << "\n";
  os << "threads = " << t.threads << "\n";
  os << "device = " << quote(t.device) << "\n";
  os << "matmul_precision = " << quote(t.matmul_precision) << "\n";
  os << "cuda_graph = " << (t.cuda_graph ? "true" : "false") << "\n";
  os << "max_steps = " << t.max_steps << "\n";
  os << "checkpoint_every = " << t.checkpoint_every << "\n";
  os << "steps = " << t.steps << "\n";
  os << "time_budget = " << format_double(t.time_budget) << "\n";
  os << "prefetch = " << t.prefetch << "\n";
  os << "on_nonfinite = " << quote(t.on_nonfinite) << "\n";
  os << "init_from = " << quote(t.init_from) << "\n";
  os << "init_checkpoint = " << quote(t.init_checkpoint) << "\n";
  os << "\n[output]\n";
  os << "dir = " << quote(dir) << "\n";
  if (models.size() == c.models.size() && (!c.sweep.empty() || c.match_params > 0)) {  // a cell's has none
    os << "\n[sweep]\n";
    if (c.match_params > 0) os << "match_params = " << c.match_params << "\n";
    for (const auto& axis : c.sweep) {
      os << quote(axis.key) << " = [";
      for (size_t i = 0; i < axis.values.size(); ++i) os << (i ? ", " : "") << axis.values[i];
      os << "]\n";
    }
  }
  return os.str();
}

}  // namespace

std::string layer_option_tables() {
  std::ostringstream os;
  for (const auto& t : nn::layer_types()) {
    if (!t.options) continue;
    nn::LayerArgs defaults("layer_option_tables");
    os << "`" << t.name << "`: " << t.summary << "\n\n| option | default (d_model 64) | meaning |\n|---|---|---|\n";
    for (const auto& o : t.options(64, defaults)) {
      os << "| `" << (o.key == "dropout" ? "mixer_dropout" : o.key) << "` | `" << toml_value(o.value) << "` | " << o.doc
         << " |\n";
    }
    os << "\n";
  }
  return os.str();
}

std::string to_toml(const Config& config) {
  std::vector<size_t> all;
  for (size_t i = 0; i < config.models.size(); ++i) all.push_back(i);
  return emit(config, all, config.multi, config.output.dir);
}

std::string to_toml_single(const Config& config, size_t index, const std::string& dir) {
  return emit(config, {index}, false, dir);
}

}  // namespace seqlab::app
