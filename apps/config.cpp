// Config loading: toml11 parses, a Reader per table takes each key with its default and range and
// remembers which keys it took, so a key nobody took is reported as unknown. [model] keys that the
// wrapper does not own go into LayerArgs, and the layer factory rejects the ones it does not know.
#include "apps/config.h"
#include "apps/config_toml.h"


#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/random.h"
#include "layers/registry.h"

namespace seqlab::app {
namespace fs = std::filesystem;

namespace {

using namespace cfg;

const std::vector<std::string> kTasks = {"forecast", "selective-copying", "induction-heads", "sine"};
const std::vector<std::string> kSplits = {"ett-hour", "ett-minute", "ratio"};

std::string resolve_path(const std::string& p) {
  if (p.empty()) return p;
  return fs::weakly_canonical(fs::absolute(p)).string();
}

void read_data(const std::string& file, Reader& r, DataConfig& d) {
  d.task = r.get_string("task", d.task, kTasks);
  d.path = r.get_string("path", d.path);
  d.dataset = r.get_string("dataset", d.dataset);
  d.split = r.get_string("split", d.split, kSplits);
  d.ratios = r.get_doubles("ratios", d.ratios, 3, "an array of 3 fractions [train, val, test] in (0, 1) summing to 1");
  {
    double sum = 0;
    bool ok = true;
    for (double x : d.ratios) {
      ok = ok && x > 0 && x < 1;
      sum += x;
    }
    if (!ok || std::abs(sum - 1) > 1e-9)
      throw Error(str(file, ": [data] ratios: expected 3 fractions [train, val, test] in (0, 1) summing to 1, got [",
                      format_double(d.ratios[0]), ", ", format_double(d.ratios[1]), ", ",
                      format_double(d.ratios[2]), "]"));
  }
  d.features = r.get_string("features", d.features, {"M", "S", "MS"});
  d.target = r.get_string("target", d.target);
  d.seq_len = r.get_int("seq_len", d.seq_len, 1);
  d.pred_len = r.get_int("pred_len", d.pred_len, 1);
  d.scale = r.get_bool("scale", d.scale);
  d.n_train_batches = r.get_int("n_train_batches", d.n_train_batches, 1);
  d.n_eval_batches = r.get_int("n_eval_batches", d.n_eval_batches, 1);
  d.key_distance = r.get_int("key_distance", d.key_distance, 0);
  d.rows = r.get_int("rows", d.rows, 2);
  d.channels = r.get_int("channels", d.channels, 1);
  d.noise = r.get_double("noise", d.noise, 0.0);
  d.ar = r.get_double("ar", d.ar, -0.999, 0.999);
  d.data_seed = static_cast<uint64_t>(r.get_int("data_seed", static_cast<int64_t>(d.data_seed), 0));
  r.finish();
  if (d.task == "forecast") {
    d.path = resolve_path(d.path);
    SEQLAB_CHECK(fs::is_regular_file(d.path), file, ": [data] path: file not found: ", d.path);
  }
  if (d.task == "selective-copying")
    SEQLAB_CHECK(d.seq_len >= 32, file, ": [data] seq_len: expected an integer >= 32 for selective-copying (16 data "
                 "tokens and 16 markers), got ", d.seq_len);
  if (d.task == "induction-heads")
    SEQLAB_CHECK(d.seq_len >= 4, file, ": [data] seq_len: expected an integer >= 4 for induction-heads, got ", d.seq_len);
  if (d.key_distance != 0) {
    SEQLAB_CHECK(d.task == "induction-heads", file, ": [data] key_distance: applies only to task = \"induction-heads\", ",
                 "this is \"", d.task, "\"");
    SEQLAB_CHECK(d.key_distance >= 2 && d.key_distance < d.seq_len, file, ": [data] key_distance: expected 0 (random) ",
                 "or an integer in [2, seq_len - 1] = [2, ", d.seq_len - 1, "], got ", d.key_distance);
  }
}

// The types whose declared options include `key`, for messages.
std::string types_with_option(const std::string& key, int64_t d_model) {
  std::string list;
  for (const auto& t : nn::layer_types()) {
    if (!t.options) continue;
    nn::LayerArgs none;
    try {
      for (const auto& o : t.options(d_model, none))
        if (o.key == key) list += (list.empty() ? "" : ", ") + t.name;
    } catch (const Error&) {
    }
  }
  return list;
}

// The layer's options read and checked through the type's declared table, so that an unknown or
// invalid option fails at load time, not mid-run; m.layer_options gets every option with the value
// used. No layer is built and no random number drawn. A type registered without declared options
// (a user's own, register_layer) is checked by building one layer, the generator restored after.
void resolve_options(const std::string& file, const std::string& label, ModelConfig& m) {
  const nn::LayerType& type = nn::layer_type(m.type, m.args.where());
  if (!type.options) {
    const auto saved = default_generator().state();
    nn::LayerArgs probe = m.layer_args();
    try {
      nn::make_layer(m.type, m.d_model, probe);
    } catch (const Error&) {
      default_generator().set_state(saved);
      throw;
    }
    default_generator().set_state(saved);
    return;
  }
  nn::LayerArgs own = m.args;
  m.layer_options = type.options(m.d_model, own);
  if (m.mixer_dropout < 0) return;
  const bool has_dropout = std::any_of(m.layer_options.begin(), m.layer_options.end(),
                                       [](const nn::OptionValue& o) { return o.key == "dropout"; });
  SEQLAB_CHECK(has_dropout, file, ": ", label, " mixer_dropout: the ", m.type, " layer has no dropout of its own (types "
               "with one: ", types_with_option("dropout", m.d_model), ")");
  nn::LayerArgs with_dropout = m.layer_args();
  m.layer_options = type.options(m.d_model, with_dropout);
}

ModelConfig read_model(const std::string& file, Reader& r, const std::string& where, const DataConfig& data) {
  ModelConfig m;
  std::vector<std::string> types;
  for (const auto& t : nn::layer_types()) types.push_back(t.name);
  m.type = r.get_string("type", m.type, types);
  m.name = r.get_string("name", m.type);
  SEQLAB_CHECK(!m.name.empty() && m.name.find_first_of("/\\ ") == std::string::npos, file, ": ", r.label(),
               " name: expected a non-empty name without '/', '\\' or spaces (it names a directory), got '", m.name, "'");
  m.d_model = r.get_int("d_model", m.d_model, 1);
  m.n_layers = r.get_int("n_layers", m.n_layers, 1);
  m.revin = r.get_bool("revin", m.revin);
  m.head = r.get_string("head", m.head, {"auto", "last", "flatten", "token"});
  m.norm = r.get_string("norm", m.norm, {"layernorm", "rmsnorm"});
  m.dropout = r.get_double("dropout", m.dropout, 0.0, 0.999);
  m.embed = r.get_string("embed", m.embed, {"time", "variate"});
  m.patch_len = r.get_int("patch_len", m.patch_len, 1);
  m.patch_stride = r.get_int("patch_stride", m.patch_stride, 0);
  m.channel_independent = r.get_bool("channel_independent", m.channel_independent);
  m.bidir = r.get_bool("bidir", m.bidir);
  m.embed_init_std = r.get_double("embed_init_std", m.embed_init_std, 0.0, HUGE_VAL, true);
  m.tie_embeddings = r.get_bool("tie_embeddings", m.tie_embeddings);
  m.mixer_dropout = r.get_double("mixer_dropout", m.mixer_dropout, 0.0, 0.999);
  if (m.head == "auto") m.head = data.is_token_task() || m.embed == "variate" ? "token" : "last";
  // Combinations that do not make sense: nn::ModelOptions::validate is their one home. The data's
  // channels are not known yet; what the rules need of them is whether the forecast covers every
  // input channel (features M or S: in = out) or one target of several (MS), and whether the task
  // is a token task.
  try {
    const bool ms = data.features == "MS" && !data.is_token_task();
    m.options(data, ms ? 2 : 1, 1, data.is_token_task() ? 2 : 0).validate();
  } catch (const nn::OptionError& e) {
    throw Error(str(file, ": ", r.label(), " ", e.key(), ": ", e.why()));
  }
  m.args = nn::LayerArgs(where);
  for (const auto& key : r.rest()) {
    const toml::value& v = r.table()->at(key);
    if (v.is_integer()) m.args.set(key, static_cast<int64_t>(v.as_integer()));
    else if (v.is_floating()) m.args.set(key, v.as_floating());
    else if (v.is_boolean()) m.args.set(key, v.as_boolean());
    else if (v.is_string()) m.args.set(key, v.as_string().str);
    else r.fail(key, "a number, a boolean or a string (a " + m.type + " option)", &v);
  }
  resolve_options(file, r.label(), m);
  return m;
}

void read_optim(Reader& r, OptimConfig& o) {
  o.name = r.get_string("name", o.name, {"sgd", "adam", "adamw"});
  o.lr = r.get_double("lr", o.lr, 0.0, HUGE_VAL, true);
  o.weight_decay = r.get_double("weight_decay", o.weight_decay, 0.0);
  o.momentum = r.get_double("momentum", o.momentum, 0.0, 1.0);
  o.nesterov = r.get_bool("nesterov", o.nesterov);
  o.betas = r.get_doubles("betas", o.betas, 2, "an array of 2 numbers [beta1, beta2] in [0, 1)");
  for (double b : o.betas)
    if (!(b >= 0 && b < 1)) r.fail("betas", "an array of 2 numbers [beta1, beta2] in [0, 1)", r.table() ? &r.table()->at("betas") : nullptr);
  o.eps = r.get_double("eps", o.eps, 0.0, HUGE_VAL, true);
  o.schedule = r.get_string("schedule", o.schedule, {"constant", "step", "cosine"});
  o.warmup_steps = r.get_int("warmup_steps", o.warmup_steps, 0);
  o.min_lr_ratio = r.get_double("min_lr_ratio", o.min_lr_ratio, 0.0, 1.0);
  o.step_size = r.get_int("step_size", o.step_size, 1);
  o.gamma = r.get_double("gamma", o.gamma, 0.0, HUGE_VAL, true);
  o.grad_clip = r.get_double("grad_clip", o.grad_clip, 0.0);
  r.finish();
}

void read_train(Reader& r, TrainConfig& t) {
  t.epochs = r.get_int("epochs", t.epochs, 1);
  t.batch_size = r.get_int("batch_size", t.batch_size, 1);
  t.eval_batch_size = r.get_int("eval_batch_size", t.eval_batch_size, 1);
  t.seed = static_cast<uint64_t>(r.get_int("seed", static_cast<int64_t>(t.seed), 0));
  t.patience = r.get_int("patience", t.patience, 0);
  t.threads = r.get_int("threads", t.threads, 0, 1024);
  t.device = r.get_string("device", t.device, {"cpu", "cuda"});
  t.matmul_precision = r.get_string("matmul_precision", t.matmul_precision, {"highest", "high", "medium"});
  if (t.device != "cuda" && t.matmul_precision != "highest")
    r.fail("matmul_precision", "\"highest\" with device = \"" + t.device +
               "\" (\"high\", TF32, and \"medium\", bfloat16, are GPU tensor-core modes)",
           r.find("matmul_precision"));
  t.cuda_graph = r.get_bool("cuda_graph", t.cuda_graph);
  if (t.device != "cuda" && t.cuda_graph)
    r.fail("cuda_graph", "false with device = \"" + t.device + "\" (a CUDA graph replays GPU work)",
           r.find("cuda_graph"));
  t.max_steps = r.get_int("max_steps", t.max_steps, 0);
  t.checkpoint_every = r.get_int("checkpoint_every", t.checkpoint_every, 0);
  t.steps = r.get_int("steps", t.steps, 0);
  t.time_budget = r.get_double("time_budget", t.time_budget, 0.0);
  t.prefetch = r.get_int("prefetch", t.prefetch, 0, 64);
  t.on_nonfinite = r.get_string("on_nonfinite", t.on_nonfinite, {"stop", "skip"});
  t.init_from = r.get_string("init_from", t.init_from);
  if (!t.init_from.empty()) t.init_from = resolve_path(t.init_from);
  t.init_checkpoint = r.get_string("init_checkpoint", t.init_checkpoint, {"best", "last"});
  r.finish();
}

// The value at "section.key" of a resolved config's TOML ([model] or the first [[models]] entry for
// model keys); nullptr when the key does not exist.
const toml::value* resolved_value(const toml::value& resolved, const std::string& section, const std::string& key) {
  const toml::table& top = resolved.as_table();
  const toml::table* t = nullptr;
  if (section == "model" && top.count("models")) t = &top.at("models").as_array().at(0).as_table();
  else if (top.count(section)) t = &top.at(section).as_table();
  if (!t || !t->count(key)) return nullptr;
  return &t->at(key);
}

// [sweep]: each key a config key with a non-empty array of values. What is checked here, before
// anything runs: the key exists (in the resolved config, which holds every key) and each value has
// its type (an integer also stands for a float). Whether a value makes sense with the rest (a
// patch longer than the sequence) is the cell's to find out: such a cell becomes a row with its
// reason and the sweep goes on.
// `match_params` is no axis: an integer >= 1 read into Config::match_params, and no axis may then
// be model.d_model.
std::vector<SweepAxis> read_sweep(const std::string& name, const toml::value& root, const toml::table& top,
                                  int64_t& match_params);

Config build(const std::string& name, toml::value root, const std::vector<std::string>& overrides) {
  Config c;
  c.file = name;
  SEQLAB_CHECK(root.is_table(), name, ": expected a TOML table at the top level");
  Overridden overridden;
  for (const auto& o : overrides) apply_override(name, root, o, overridden);
  const toml::table& top = root.as_table();
  for (const auto& [k, v] : top)
    SEQLAB_CHECK(std::find(kSections.begin(), kSections.end(), k) != kSections.end(), name, ": unknown section [", k,
                 "] (valid: [data], [model], [[models]], [optim], [train], [output], [sweep])");
  auto over = [&](const std::string& label) -> const std::set<std::string>* {
    auto it = overridden.find(label);
    return it == overridden.end() ? nullptr : &it->second;
  };

  Reader data(name, "[data]", table_of(name, top, "data"), over("[data]"));
  read_data(name, data, c.data);

  const toml::table* model = table_of(name, top, "model");
  auto ms = top.find("models");
  if (ms != top.end()) {
    SEQLAB_CHECK(ms->second.is_array() && !ms->second.as_array().empty(), name,
                 ": [[models]] must be a non-empty array of tables");
    c.multi = true;
    std::set<std::string> names;
    const auto& arr = ms->second.as_array();
    for (size_t i = 0; i < arr.size(); ++i) {
      std::string label = str("[[models]] #", i + 1);
      SEQLAB_CHECK(arr[i].is_table(), name, ": ", label, " must be a table");
      // An entry inherits every key of [model] and overrides some.
      toml::table merged = model ? *model : toml::table{};
      for (const auto& [k, v] : arr[i].as_table()) merged[k] = v;
      Reader r(name, label, &merged, over(label));
      c.models.push_back(read_model(name, r, str(name, " ", label), c.data));
      SEQLAB_CHECK(names.insert(c.models.back().name).second, name, ": ", label, " name: '", c.models.back().name,
                   "' is used by an earlier entry (names must be unique: each names a run subdirectory)");
    }
  } else {
    Reader r(name, "[model]", model, over("[model]"));
    c.models.push_back(read_model(name, r, name + " [model]", c.data));
  }

  Reader optim(name, "[optim]", table_of(name, top, "optim"), over("[optim]"));
  read_optim(optim, c.optim);
  Reader train(name, "[train]", table_of(name, top, "train"), over("[train]"));
  read_train(train, c.train);
  Reader output(name, "[output]", table_of(name, top, "output"), over("[output]"));
  c.output.dir = output.get_string("dir", "runs/" + fs::path(name).stem().string());
  output.finish();
  SEQLAB_CHECK(!c.output.dir.empty(), name, ": [output] dir: expected a non-empty path");
  c.output.dir = resolve_path(c.output.dir);
  c.sweep = read_sweep(name, root, top, c.match_params);
  return c;
}

std::vector<SweepAxis> read_sweep(const std::string& name, const toml::value& root, const toml::table& top,
                                  int64_t& match_params) {
  auto it = top.find("sweep");
  if (it == top.end()) return {};
  SEQLAB_CHECK(it->second.is_table(), name, ": [sweep] must be a table of keys such as \"data.seq_len\" = [96, 336]");
  toml::table keys = it->second.as_table();
  if (auto mp = keys.find("match_params"); mp != keys.end()) {
    SEQLAB_CHECK(mp->second.is_integer() && mp->second.as_integer() >= 1, name,
                 ": [sweep] match_params: expected an integer >= 1 (the parameter count every model is sized to), got ",
                 describe(mp->second));
    match_params = mp->second.as_integer();
    SEQLAB_CHECK(!keys.count("model.d_model"), name, ": [sweep] \"model.d_model\": match_params chooses each "
                 "model's d_model; sweep match_params or drop it");
    keys.erase(mp);
  }
  toml::value base = root;
  base.as_table().erase("sweep");
  const Config plain = build(name, base, {});
  std::istringstream resolved_text(to_toml(plain));
  const toml::value resolved = toml::parse(resolved_text, name);
  // The axes in key order (the parser keeps no file order): the last varies fastest.
  std::map<std::string, toml::value> sorted(keys.begin(), keys.end());
  std::vector<SweepAxis> axes;
  for (const auto& [key, v] : sorted) {
    const std::string where = str(name, ": [sweep] \"", key, "\"");
    const size_t dot = key.find('.');
    const std::string section = dot == std::string::npos ? "" : key.substr(0, dot), field = key.substr(dot + 1);
    SEQLAB_CHECK(dot != std::string::npos && (section == "data" || section == "model" || section == "optim" ||
                                             section == "train"),
                 where, ": expected a key of [data], [model], [optim] or [train] such as \"data.seq_len\"");
    const toml::value* current = resolved_value(resolved, section, field);
    SEQLAB_CHECK(current, where, ": [", section, "] has no key '", field, "' (docs/CONFIG.md)");
    SEQLAB_CHECK(v.is_array() && !v.as_array().empty(), where, ": expected a non-empty array of values, got ", describe(v));
    SweepAxis axis{key, {}};
    for (const auto& e : v.as_array()) {
      const bool same = e.type() == current->type() || (e.is_integer() && current->is_floating());
      SEQLAB_CHECK(same, where, ": ", describe(e), " is not of the key's type (its value now: ", describe(*current), ")");
      axis.values.push_back(e.is_integer() && current->is_floating() ? format_double(static_cast<double>(e.as_integer()))
                                                                      : describe(e));
    }
    axes.push_back(std::move(axis));
  }
  return axes;
}

}  // namespace

void ModelConfig::set_width(int64_t width) {
  d_model = width;
  resolve_options(args.where(), "[model]", *this);
}

nn::LayerArgs ModelConfig::layer_args() const {
  nn::LayerArgs a = args;
  if (mixer_dropout >= 0) a.set("dropout", mixer_dropout);
  return a;
}

nn::ModelOptions ModelConfig::options(const DataConfig& data, int64_t in_channels, int64_t out_channels,
                                      int64_t vocab) const {
  nn::ModelOptions o;
  o.layer = type;
  o.layer_args = layer_args();
  o.in_channels = in_channels;
  o.vocab_size = vocab;
  o.d_model = d_model;
  o.n_layers = n_layers;
  o.seq_len = data.seq_len;
  o.pred_len = data.pred_len;
  o.out_channels = out_channels;
  o.head = head;
  o.norm = norm;
  o.dropout = dropout;
  o.revin = revin;
  o.embed = embed;
  o.patch_len = patch_len;
  o.patch_stride = patch_stride;
  o.channel_independent = channel_independent;
  o.bidir = bidir;
  o.embed_init_std = embed_init_std;
  o.tie_embeddings = tie_embeddings;
  return o;
}

const std::vector<std::string>& task_names() { return kTasks; }

Config parse_config(const std::string& text, const std::string& name, const std::vector<std::string>& overrides) {
  reject_invalid_utf8(text, name);
  toml::value root;
  try {
    std::istringstream in(text);
    root = toml::parse(in, name);
  } catch (const toml::exception& e) {
    throw Error(syntax_error_message(name, e.what(), e.location().line(), e.location().column()));
  } catch (const std::exception& e) {  // toml11 reports a few problems (bad UTF-8, ...) as std errors
    throw Error(syntax_error_message(name, e.what(), 0, 0));
  }
  Config c = build(name, std::move(root), overrides);
  c.text = text;
  c.overrides = overrides;
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  SEQLAB_CHECK(in, path, ": cannot open the config file (", resolve_path(path), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
}

}  // namespace seqlab::app
