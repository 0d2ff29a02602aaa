// The layer registry: a literal table from a config's type name to what seqlab needs of the type:
// its factory, its options (declared once in the layer's file, layers/option_table.h), its forward
// FLOPs, whether its time is quadratic in T, and the options `seqlab bench` uses. Adding a layer
// type is its own files plus one row in registry.cpp: config checking, config.resolved.toml, bench,
// compare and the docs' option tables pick it up. Programs built against an installed seqlab add
// their own types with register_layer() before loading a config.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "layers/option_table.h"
#include "layers/options.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

/// Builds a layer of width d_model from its options; must call args.finish().
using LayerFactory = std::function<std::shared_ptr<SequenceLayer>(int64_t d_model, LayerArgs& args)>;

/// Reads and checks a type's options for width d_model without building a layer (no random numbers
/// drawn): every option with the value the layer would use, in declaration order.
using LayerOptionsFn = std::function<std::vector<OptionValue>(int64_t d_model, LayerArgs& args)>;
/// Forward FLOPs of one layer on a (B, T, d_model) input with these options (GEMMs, scans, FFTs;
/// elementwise work not counted).
using LayerFlopsFn = std::function<double(int64_t B, int64_t T, int64_t d_model, LayerArgs& args)>;

struct LayerType {
  std::string name;
  std::string summary;
  LayerFactory make;
  bool quadratic = false;  // time grows as T^2 in the sequence length (attention), in training and step mode
  LayerOptionsFn options = nullptr;  // null: options not declared (config checking builds a layer instead)
  LayerFlopsFn flops = nullptr;      // null: unknown (bench prints no GFLOP/s)
  std::vector<std::pair<std::string, ArgValue>> bench_args = {};  // `seqlab bench` at its standard sizes (D 64)
};

// GCC 12 at -O2 reports the options struct `o` below as maybe uninitialized when its strings are
// copied into OptionValues (a false positive of -Wmaybe-uninitialized through std::function and
// std::variant; `o` is a complete object returned by value).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
/// The registry row of a layer L whose options O are read by `read` (which fills and checks them),
/// declared by `table`, and whose forward FLOPs are `flops`.
template <class L, class O>
LayerType declare_layer(std::string name, std::string summary, O (*read)(int64_t, LayerArgs&),
                        const OptionTable<O>& (*table)(), double (*flops)(int64_t, int64_t, const O&),
                        std::vector<std::pair<std::string, ArgValue>> bench_args = {}, bool quadratic = false) {
  LayerType t;
  t.name = std::move(name);
  t.summary = std::move(summary);
  t.make = [read](int64_t d_model, LayerArgs& args) -> std::shared_ptr<SequenceLayer> {
    return std::make_shared<L>(read(d_model, args));
  };
  t.quadratic = quadratic;
  t.options = [read, table](int64_t d_model, LayerArgs& args) {
    const O o = read(d_model, args);
    return table().values(o);
  };
  t.flops = [read, flops](int64_t B, int64_t T, int64_t d_model, LayerArgs& args) {
    const O o = read(d_model, args);
    return flops(B, T, o);
  };
  t.bench_args = std::move(bench_args);
  return t;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// Every registered type, built-ins first.
const std::vector<LayerType>& layer_types();
/// The registered type of that name, nullptr when there is none.
const LayerType* find_layer_type(const std::string& name);
/// Adds a type at run time (a user's own layer); throws if the name is taken.
void register_layer(LayerType type);
/// The registered type of that name; an unknown name is an error (prefixed with `where`) listing the known ones.
const LayerType& layer_type(const std::string& name, const std::string& where);
/// Builds the named layer; an unknown name is an error listing the known ones.
std::shared_ptr<SequenceLayer> make_layer(const std::string& type, int64_t d_model, LayerArgs& args);

}  // namespace seqlab::nn
