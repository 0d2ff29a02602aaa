// LayerArgs: a layer's options as a flat key -> value map, filled from a config table (apps/ reads
// TOML; layers/ never sees it). A layer reads each key with a default and finally calls
// finish(), which rejects keys it never read, naming them and listing the valid ones.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <variant>

#include "core/error.h"

namespace seqlab::nn {

using ArgValue = std::variant<int64_t, double, bool, std::string>;

/// An option value (or combination) that does not make sense: key() names the option, why() says
/// what was expected; what() is "model: key: why". A config reader reports it with its file and
/// section ("configs/x.toml: [model] key: why").
class OptionError : public Error {
 public:
  OptionError(std::string key, std::string why)
      : Error(str("model: ", key, ": ", why)), key_(std::move(key)), why_(std::move(why)) {}
  const std::string& key() const { return key_; }
  const std::string& why() const { return why_; }

 private:
  std::string key_, why_;
};

class LayerArgs {
 public:
  LayerArgs() = default;
  /// `where` names the origin in errors, e.g. "configs/etth1.toml [model]" or "layer 'lstm'".
  explicit LayerArgs(std::string where) : where_(std::move(where)) {}

  LayerArgs& set(const std::string& key, ArgValue v) {
    values_[key] = std::move(v);
    return *this;
  }
  bool has(const std::string& key) const { return values_.count(key) > 0; }

  /// Integer option (a whole double is accepted).
  int64_t get_int(const std::string& key, int64_t def);
  /// Real option (an integer is accepted).
  double get_double(const std::string& key, double def);
  bool get_bool(const std::string& key, bool def);
  std::string get_string(const std::string& key, const std::string& def);

  /// Throws seqlab::Error naming every key that no get_* asked for, and the keys that were valid.
  void finish() const;
  const std::string& where() const { return where_; }
  const std::map<std::string, ArgValue>& values() const { return values_; }

 private:
  [[noreturn]] void type_error(const std::string& key, const char* expected) const;
  std::string where_ = "layer options";
  std::map<std::string, ArgValue> values_;
  std::set<std::string> asked_;
};

inline int64_t LayerArgs::get_int(const std::string& key, int64_t def) {
  asked_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return def;
  if (auto* i = std::get_if<int64_t>(&it->second)) return *i;
  if (auto* d = std::get_if<double>(&it->second); d && *d == static_cast<double>(static_cast<int64_t>(*d)))
    return static_cast<int64_t>(*d);
  type_error(key, "an integer");
}

inline double LayerArgs::get_double(const std::string& key, double def) {
  asked_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return def;
  if (auto* d = std::get_if<double>(&it->second)) return *d;
  if (auto* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  type_error(key, "a number");
}

inline bool LayerArgs::get_bool(const std::string& key, bool def) {
  asked_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return def;
  if (auto* b = std::get_if<bool>(&it->second)) return *b;
  type_error(key, "true or false");
}

inline std::string LayerArgs::get_string(const std::string& key, const std::string& def) {
  asked_.insert(key);
  auto it = values_.find(key);
  if (it == values_.end()) return def;
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  type_error(key, "a string");
}

inline void LayerArgs::finish() const {
  std::string unknown, valid;
  for (const auto& [k, v] : values_)
    if (!asked_.count(k)) unknown += (unknown.empty() ? "" : ", ") + k;
  for (const auto& k : asked_) valid += (valid.empty() ? "" : ", ") + k;
  SEQLAB_CHECK(unknown.empty(), where_, ": unknown option(s) ", unknown, " (valid: ", valid, ")");
}

inline void LayerArgs::type_error(const std::string& key, const char* expected) const {
  throw Error(str(where_, ": option '", key, "' must be ", expected));
}

}  // namespace seqlab::nn
