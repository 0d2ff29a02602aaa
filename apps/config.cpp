// Config loading: toml11 parses, a Reader per table takes each key with its default and range and
// remembers which keys it took, so a key nobody took is reported as unknown. [model] keys that the
// wrapper does not own go into LayerArgs, and the layer factory rejects the ones it does not know.
#include "apps/config.h"

#include <toml.hpp>

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

const std::vector<std::string> kTasks = {"forecast", "selective-copying", "induction-heads", "sine"};
const std::vector<std::string> kSplits = {"ett-hour", "ett-minute", "ratio"};
const std::vector<std::string> kSections = {"data", "model", "models", "optim", "train", "output"};

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

// Shortest decimal that reads back to the same double, always with a '.' or an exponent (TOML).
std::string format_double(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') { out += "\\n"; continue; }
    out += c;
  }
  return out + "\"";
}

// How a value reads in an error message.
std::string describe(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::integer: return std::to_string(v.as_integer());
    case toml::value_t::floating: return format_double(v.as_floating());
    case toml::value_t::boolean: return v.as_boolean() ? "true" : "false";
    case toml::value_t::string: return quote(v.as_string().str);
    case toml::value_t::array: {
      std::string s = "[";
      for (const auto& e : v.as_array()) s += (s.size() > 1 ? ", " : "") + describe(e);
      return s.size() > 200 ? std::string("an array") : s + "]";
    }
    case toml::value_t::table: return "a table";
    default: return "a date/time";
  }
}

// Reads the keys of one table with defaults and checks; `label` is "[train]" or "[[models]] #2".
class Reader {
 public:
  Reader(std::string file, std::string label, const toml::table* table, const std::set<std::string>* overridden)
      : file_(std::move(file)), label_(std::move(label)), table_(table), overridden_(overridden) {}

  [[noreturn]] void fail(const std::string& key, const std::string& expected, const toml::value* got) const {
    std::string msg = str(file_, ": ", label_, " ", key, ": expected ", expected);
    if (got) {
      msg += ", got " + describe(*got);
      if (overridden_ && overridden_->count(key)) msg += " (from --set)";
      else if (got->location().line() > 0) msg += str(" (line ", got->location().line(), ")");
    }
    throw Error(msg);
  }

  const toml::value* find(const std::string& key) {
    taken_.insert(key);
    if (!table_) return nullptr;
    auto it = table_->find(key);
    return it == table_->end() ? nullptr : &it->second;
  }

  int64_t get_int(const std::string& key, int64_t def, int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max()) {
    std::string expected = "an integer";
    if (lo != std::numeric_limits<int64_t>::min() && hi != std::numeric_limits<int64_t>::max())
      expected += str(" in [", lo, ", ", hi, "]");
    else if (lo != std::numeric_limits<int64_t>::min())
      expected += str(" >= ", lo);
    const toml::value* v = find(key);
    if (!v) return def;
    if (!v->is_integer()) fail(key, expected, v);
    int64_t x = v->as_integer();
    if (x < lo || x > hi) fail(key, expected, v);
    return x;
  }

  // A real in [lo, hi] (or (lo, hi] when lo_open); integers are accepted.
  double get_double(const std::string& key, double def, double lo = -HUGE_VAL, double hi = HUGE_VAL,
                    bool lo_open = false) {
    std::string expected = "a number";
    if (lo > -HUGE_VAL && hi < HUGE_VAL)
      expected += str(" in ", lo_open ? "(" : "[", format_double(lo), ", ", format_double(hi), "]");
    else if (lo > -HUGE_VAL)
      expected += str(lo_open ? " > " : " >= ", format_double(lo));
    const toml::value* v = find(key);
    if (!v) return def;
    double x;
    if (v->is_floating()) x = v->as_floating();
    else if (v->is_integer()) x = static_cast<double>(v->as_integer());
    else fail(key, expected, v);
    if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo)) fail(key, expected, v);
    return x;
  }

  bool get_bool(const std::string& key, bool def) {
    const toml::value* v = find(key);
    if (!v) return def;
    if (!v->is_boolean()) fail(key, "true or false", v);
    return v->as_boolean();
  }

  std::string get_string(const std::string& key, const std::string& def, const std::vector<std::string>& choices = {}) {
    std::string expected = choices.empty() ? "a string" : "one of " + join(choices);
    const toml::value* v = find(key);
    if (!v) return def;
    if (!v->is_string()) fail(key, expected, v);
    std::string s = v->as_string().str;
    if (!choices.empty() && std::find(choices.begin(), choices.end(), s) == choices.end()) fail(key, expected, v);
    return s;
  }

  std::vector<double> get_doubles(const std::string& key, const std::vector<double>& def, size_t n,
                                  const std::string& expected) {
    const toml::value* v = find(key);
    if (!v) return def;
    if (!v->is_array() || v->as_array().size() != n) fail(key, expected, v);
    std::vector<double> out;
    for (const auto& e : v->as_array()) {
      if (e.is_floating()) out.push_back(e.as_floating());
      else if (e.is_integer()) out.push_back(static_cast<double>(e.as_integer()));
      else fail(key, expected, v);
    }
    return out;
  }

  /// Keys of the table nobody asked for.
  std::vector<std::string> rest() const {
    std::vector<std::string> out;
    if (table_)
      for (const auto& [k, v] : *table_)
        if (!taken_.count(k)) out.push_back(k);
    std::sort(out.begin(), out.end());
    return out;
  }

  /// Throws naming the first unknown key and listing the valid ones.
  void finish() const {
    auto unknown = rest();
    if (unknown.empty()) return;
    std::vector<std::string> valid(taken_.begin(), taken_.end());
    std::string msg = str(file_, ": ", label_, " ", unknown.front(), ": unknown key (valid: ", join(valid), ")");
    if (overridden_ && overridden_->count(unknown.front())) msg += " (from --set)";
    throw Error(msg);
  }

  const toml::table* table() const { return table_; }
  const std::string& label() const { return label_; }

 private:
  std::string file_, label_;
  const toml::table* table_;
  const std::set<std::string>* overridden_;
  std::set<std::string> taken_;
};

// Keys set by --set, per table label, so errors can say where a value came from.
using Overridden = std::map<std::string, std::set<std::string>>;

const toml::table* table_of(const std::string& file, const toml::table& root, const std::string& section) {
  auto it = root.find(section);
  if (it == root.end()) return nullptr;
  SEQLAB_CHECK(it->second.is_table(), file, ": [", section, "] must be a table, got ", describe(it->second));
  return &it->second.as_table();
}

// Parses an override's value as TOML; a value that is not TOML (a bare word such as lstm, the
// shell having eaten the quotes) is taken as a string.
toml::value parse_value(const std::string& text) {
  if (invalid_utf8_offset(text) != std::string_view::npos) return toml::value(text);  // toml11 would overrun
  try {
    std::istringstream in("v = " + text);
    toml::value t = toml::parse(in, "--set");
    return t.as_table().at("v");
  } catch (const std::exception&) {
    return toml::value(text);
  }
}

void apply_override(const std::string& file, toml::value& root, const std::string& spec, Overridden& overridden) {
  auto eq = spec.find('=');
  SEQLAB_CHECK(eq != std::string::npos && eq > 0, "--set ", spec, ": expected section.key=value");
  std::string path = spec.substr(0, eq), text = spec.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t b = 0;;) {
    size_t d = path.find('.', b);
    parts.push_back(path.substr(b, d == std::string::npos ? std::string::npos : d - b));
    if (d == std::string::npos) break;
    b = d + 1;
  }
  toml::value v = parse_value(text);
  auto& top = root.as_table();
  auto section_table = [&](const std::string& s) -> toml::table& {
    SEQLAB_CHECK(std::find(kSections.begin(), kSections.end(), s) != kSections.end() && s != "models",
                 "--set ", spec, ": unknown section '", s, "' (valid: data, model, optim, train, output, models.<n>)");
    if (!top.count(s)) top[s] = toml::table{};
    SEQLAB_CHECK(top[s].is_table(), file, ": [", s, "] must be a table");
    return top[s].as_table();
  };
  if (parts.size() == 2) {
    section_table(parts[0])[parts[1]] = v;
    overridden["[" + parts[0] + "]"].insert(parts[1]);
    if (parts[0] == "model" && top.count("models") && top["models"].is_array()) {
      // model.key sets the key for every entry of a comparison.
      auto& arr = top["models"].as_array();
      for (size_t i = 0; i < arr.size(); ++i)
        if (arr[i].is_table()) {
          arr[i].as_table()[parts[1]] = v;
          overridden[str("[[models]] #", i + 1)].insert(parts[1]);
        }
    }
    return;
  }
  SEQLAB_CHECK(parts.size() == 3 && parts[0] == "models", "--set ", spec,
               ": expected section.key=value or models.<n or name>.key=value");
  SEQLAB_CHECK(top.count("models") && top["models"].is_array(), "--set ", spec, ": ", file, " has no [[models]]");
  auto& arr = top["models"].as_array();
  for (size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_table()) continue;
    auto& t = arr[i].as_table();
    auto nm = t.find("name");
    bool by_name = nm != t.end() && nm->second.is_string() && nm->second.as_string().str == parts[1];
    if (by_name || parts[1] == std::to_string(i + 1)) {
      t[parts[2]] = v;
      overridden[str("[[models]] #", i + 1)].insert(parts[2]);
      return;
    }
  }
  throw Error(str("--set ", spec, ": no [[models]] entry named or numbered '", parts[1], "' (entries count from 1)"));
}

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
void resolve_layer_options(const std::string& file, const std::string& label, ModelConfig& m) {
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
  resolve_layer_options(file, r.label(), m);
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
  t.max_steps = r.get_int("max_steps", t.max_steps, 0);
  t.checkpoint_every = r.get_int("checkpoint_every", t.checkpoint_every, 0);
  t.prefetch = r.get_int("prefetch", t.prefetch, 0, 64);
  t.on_nonfinite = r.get_string("on_nonfinite", t.on_nonfinite, {"stop", "skip"});
  t.init_from = r.get_string("init_from", t.init_from);
  if (!t.init_from.empty()) t.init_from = resolve_path(t.init_from);
  t.init_checkpoint = r.get_string("init_checkpoint", t.init_checkpoint, {"best", "last"});
  r.finish();
}

Config build(const std::string& name, toml::value root, const std::vector<std::string>& overrides) {
  Config c;
  c.file = name;
  SEQLAB_CHECK(root.is_table(), name, ": expected a TOML table at the top level");
  Overridden overridden;
  for (const auto& o : overrides) apply_override(name, root, o, overridden);
  const toml::table& top = root.as_table();
  for (const auto& [k, v] : top)
    SEQLAB_CHECK(std::find(kSections.begin(), kSections.end(), k) != kSections.end(), name, ": unknown section [", k,
                 "] (valid: [data], [model], [[models]], [optim], [train], [output])");
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
  return c;
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
  // The layer's options with the values used (its own dropout is the key mixer_dropout here: dropout
  // is the block's); a type without declared options writes the keys as given.
  auto value = [&](const nn::ArgValue& v) {
    if (auto* i = std::get_if<int64_t>(&v)) os << *i;
    else if (auto* d = std::get_if<double>(&v)) os << format_double(*d);
    else if (auto* b = std::get_if<bool>(&v)) os << (*b ? "true" : "false");
    else os << quote(std::get<std::string>(v));
    os << "\n";
  };
  if (m.layer_options.empty()) {
    if (m.mixer_dropout >= 0) os << "mixer_dropout = " << format_double(m.mixer_dropout) << "\n";
    for (const auto& [k, v] : m.args.values()) os << k << " = ", value(v);
    return;
  }
  for (const auto& o : m.layer_options) os << (o.key == "dropout" ? "mixer_dropout" : o.key) << " = ", value(o.value);
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
  os << "max_steps = " << t.max_steps << "\n";
  os << "checkpoint_every = " << t.checkpoint_every << "\n";
  os << "prefetch = " << t.prefetch << "\n";
  os << "on_nonfinite = " << quote(t.on_nonfinite) << "\n";
  os << "init_from = " << quote(t.init_from) << "\n";
  os << "init_checkpoint = " << quote(t.init_checkpoint) << "\n";
  os << "\n[output]\n";
  os << "dir = " << quote(dir) << "\n";
  return os.str();
}

// toml11's message spans several lines ("[error] toml::parse_xxx: what\n --> file\n 2 | text\n
//   |   ^ hint"); one line keeps the error a single log line:
//   configs/x.toml: TOML syntax error at line 2, column 7: missing key-value separator `=` (hint)
std::string syntax_error_message(const std::string& name, const std::string& what, size_t line, size_t column) {
  std::vector<std::string> lines;
  std::stringstream ss(what);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  std::string head = lines.empty() ? what : lines[0];
  if (head.starts_with("[error] ")) head.erase(0, 8);
  if (head.starts_with("toml::")) {  // drop the parser function's name
    auto colon = head.find(": ");
    if (colon != std::string::npos) head.erase(0, colon + 2);
  }
  std::string hint, source;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    auto bar = l.find('|');
    if (line == 0 && l.find(" --> ") == std::string::npos && bar != std::string::npos) {
      // " 2 | text": the first numbered source line gives the line when the location does not.
      size_t n = 0;
      bool num = false;
      for (size_t j = 0; j < bar; ++j)
        if (std::isdigit(static_cast<unsigned char>(l[j]))) n = n * 10 + static_cast<size_t>(l[j] - '0'), num = true;
      if (num) line = n;
    }
    if (source.empty() && bar != std::string::npos && l.find(" --> ") == std::string::npos &&
        std::any_of(l.begin(), l.begin() + static_cast<std::ptrdiff_t>(bar),
                    [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); }))
      source = l.substr(std::min(l.size(), bar + 2), 80);
    if (bar != std::string::npos && l.find('^') != std::string::npos) {
      auto caret = l.find_last_of('^');
      std::string h = l.substr(caret + 1);
      while (!h.empty() && (h.front() == ' ' || h.front() == '-' || h.front() == '~')) h.erase(0, 1);
      if (!h.empty() && hint.empty()) hint = h;
    }
  }
  std::string where = line > 0 ? str(" at line ", line, column > 0 ? str(", column ", column) : std::string()) : "";
  std::string msg = str(name, ": TOML syntax error", where, ": ", head);
  if (!hint.empty() && head.find(hint) == std::string::npos) msg += " (" + hint + ")";
  if (!source.empty()) msg += " in: " + source;
  for (auto& ch : msg)
    if (ch == '\n' || ch == '\r') ch = ' ';
  return msg;
}

}  // namespace

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
  return o;
}

const std::vector<std::string>& task_names() { return kTasks; }

std::string layer_option_tables() {
  std::ostringstream os;
  for (const auto& t : nn::layer_types()) {
    if (!t.options) continue;
    nn::LayerArgs defaults("layer_option_tables");
    os << "`" << t.name << "`: " << t.summary << "\n\n| option | default (d_model 64) | meaning |\n|---|---|---|\n";
    for (const auto& o : t.options(64, defaults)) {
      os << "| `" << (o.key == "dropout" ? "mixer_dropout" : o.key) << "` | `";
      if (auto* i = std::get_if<int64_t>(&o.value)) os << *i;
      else if (auto* d = std::get_if<double>(&o.value)) os << format_double(*d);
      else if (auto* b = std::get_if<bool>(&o.value)) os << (*b ? "true" : "false");
      else os << quote(std::get<std::string>(o.value));
      os << "` | " << o.doc << " |\n";
    }
    os << "\n";
  }
  return os.str();
}

size_t invalid_utf8_offset(std::string_view t) {
  const auto* b = reinterpret_cast<const unsigned char*>(t.data());
  const size_t n = t.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = b[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > n) return i;
    for (size_t k = 1; k < len; ++k)
      if ((b[i + k] & 0xC0) != 0x80) return i;
    if (len == 2 && c < 0xC2) return i;                                         // overlong
    if (len == 3) {
      const unsigned cp = (c & 0x0Fu) << 12 | (b[i + 1] & 0x3Fu) << 6 | (b[i + 2] & 0x3Fu);
      if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return i;               // overlong, surrogate
    }
    if (len == 4) {
      const unsigned cp = (c & 0x07u) << 18 | (b[i + 1] & 0x3Fu) << 12 | (b[i + 2] & 0x3Fu) << 6 | (b[i + 3] & 0x3Fu);
      if (cp < 0x10000 || cp > 0x10FFFF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

Config parse_config(const std::string& text, const std::string& name, const std::vector<std::string>& overrides) {
  // TOML is UTF-8, and toml11 3.7 reads out of bounds reporting bad UTF-8 inside a string
  // (found by fuzz/fuzz_config.cpp): reject it before the parser sees it.
  if (size_t bad = invalid_utf8_offset(text); bad != std::string_view::npos) {
    const size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n'));
    const size_t line_start = text.rfind('\n', bad == 0 ? 0 : bad - 1);
    const size_t column = line_start == std::string::npos || bad == 0 ? bad + 1 : bad - line_start;
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(text[bad]));
    throw Error(str(name, ": TOML syntax error at line ", line, ", column ", column, ": invalid UTF-8 (byte ", hex,
                    "); a TOML file is UTF-8 text"));
  }
  toml::value root;
  try {
    std::istringstream in(text);
    root = toml::parse(in, name);
  } catch (const toml::exception& e) {
    throw Error(syntax_error_message(name, e.what(), e.location().line(), e.location().column()));
  } catch (const std::exception& e) {  // toml11 reports a few problems (bad UTF-8, ...) as std errors
    throw Error(syntax_error_message(name, e.what(), 0, 0));
  }
  return build(name, std::move(root), overrides);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  SEQLAB_CHECK(in, path, ": cannot open the config file (", resolve_path(path), ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
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
