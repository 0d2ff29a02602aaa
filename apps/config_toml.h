// What the config reader and writer share (internal to seqlab_app): TOML values as they read in
// messages and files, a Reader that takes the keys of one table with defaults and checks and
// reports any key nobody took, the --set overrides, and toml11's syntax errors as one line.
#pragma once
#include <toml.hpp>

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace seqlab::app::cfg {

inline const std::vector<std::string> kSections = {"data", "model", "models", "optim", "train", "output", "sweep"};

std::string join(const std::vector<std::string>& v, const char* sep = ", ");
/// Shortest decimal that reads back to the same double, always with a '.' or an exponent (TOML).
std::string format_double(double d);
/// A TOML basic string.
std::string quote(const std::string& s);
/// How a value reads in an error message.
std::string describe(const toml::value& v);

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

/// Keys set by --set, per table label, so errors can say where a value came from.
using Overridden = std::map<std::string, std::set<std::string>>;

/// The table [section] of root, nullptr when absent; an error when it is not a table.
const toml::table* table_of(const std::string& file, const toml::table& root, const std::string& section);
/// Applies one --set "section.key=value" (or "models.<n|name>.key=value") to root.
void apply_override(const std::string& file, toml::value& root, const std::string& spec, Overridden& overridden);
/// toml11's multi-line message as one line naming the file, line and column.
std::string syntax_error_message(const std::string& name, const std::string& what, size_t line, size_t column);

}  // namespace seqlab::app::cfg

namespace seqlab::app {
/// Declared for users in apps/config.h; defined in config_toml.cpp (parse_value needs it too).
size_t invalid_utf8_offset(std::string_view text);
/// Throws a one-line syntax error naming `name`, the line, column and byte when `text` is not valid
/// UTF-8 (toml11 3.7 reads out of bounds reporting bad UTF-8 inside a string: found by
/// fuzz/fuzz_config.cpp, so it is rejected before the parser sees it).
void reject_invalid_utf8(const std::string& text, const std::string& name);
}  // namespace seqlab::app
