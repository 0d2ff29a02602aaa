// A layer's options declared once. Each field of an Options struct is one row: its config key, the
// member it fills and a one-line doc (what it is, its valid values). From that table the registry
// factory reads a LayerArgs, config.resolved.toml writes every option with the value used, and
// `seqlab info --options` prints the per-layer tables of docs/CONFIG.md. Validity lives in the
// struct's validate(), called after reading, so checking a config builds no layer and draws no
// random numbers.
//
//   const OptionTable<S4DOptions>& s4d_option_table() {
//     static const OptionTable<S4DOptions> t = {
//         {"d_state", &S4DOptions::d_state, "N, the state size per channel (even)"},
//         ...};
//     return t;
//   }
#pragma once
#include <initializer_list>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "layers/options.h"

namespace seqlab::nn {

/// One option with the value a layer uses: written to config.resolved.toml and the docs.
struct OptionValue {
  std::string key;
  ArgValue value;
  std::string doc;
};

template <class O>
struct OptionField {
  using Member = std::variant<int64_t O::*, double O::*, bool O::*, std::string O::*>;
  const char* key;
  Member member;
  const char* doc;
};

template <class O>
class OptionTable {
 public:
  OptionTable(std::initializer_list<OptionField<O>> fields) : fields_(fields) {}

  /// Reads every field present in `args` into `o` (an absent one keeps o's value, the default),
  /// then args.finish() (an unknown key is an error listing the valid ones) and o.validate(); every
  /// error is prefixed with args.where().
  void read(LayerArgs& args, O& o) const {
    for (const auto& f : fields_) {
      if (auto* i = std::get_if<int64_t O::*>(&f.member)) o.**i = args.get_int(f.key, o.**i);
      else if (auto* d = std::get_if<double O::*>(&f.member)) o.**d = args.get_double(f.key, o.**d);
      else if (auto* b = std::get_if<bool O::*>(&f.member)) o.**b = args.get_bool(f.key, o.**b);
      else if (auto* t = std::get_if<std::string O::*>(&f.member)) o.**t = args.get_string(f.key, o.**t);
    }
    args.finish();
    try {
      o.validate();
    } catch (const Error& e) {
      throw Error(str(args.where(), ": ", e.what()));
    }
  }

  /// Every field of `o`, in declaration order.
  std::vector<OptionValue> values(const O& o) const {
    std::vector<OptionValue> out;
    for (const auto& f : fields_) {
      OptionValue v{f.key, int64_t{0}, f.doc};
      if (auto* i = std::get_if<int64_t O::*>(&f.member)) v.value = o.**i;
      else if (auto* d = std::get_if<double O::*>(&f.member)) v.value = o.**d;
      else if (auto* b = std::get_if<bool O::*>(&f.member)) v.value = o.**b;
      else if (auto* t = std::get_if<std::string O::*>(&f.member)) v.value = o.**t;
      out.push_back(std::move(v));
    }
    return out;
  }

 private:
  std::vector<OptionField<O>> fields_;
};

}  // namespace seqlab::nn
