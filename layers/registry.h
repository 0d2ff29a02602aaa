// The layer registry: a literal table from a config's type name to a factory. Adding a layer type
// is one line in registry.cpp. Programs built against an installed seqlab add their own types with
// register_layer() before loading a config.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layers/options.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

/// Builds a layer of width d_model from its options; must call args.finish().
using LayerFactory = std::function<std::shared_ptr<SequenceLayer>(int64_t d_model, LayerArgs& args)>;

struct LayerType {
  std::string name;
  std::string summary;
  LayerFactory make;
  bool quadratic = false;  // time grows as T^2 in the sequence length (attention), in training and step mode
};

/// Every registered type, built-ins first.
const std::vector<LayerType>& layer_types();
/// The registered type of that name, nullptr when there is none.
const LayerType* find_layer_type(const std::string& name);
/// Adds a type at run time (a user's own layer); throws if the name is taken.
void register_layer(LayerType type);
/// Builds the named layer; an unknown name is an error listing the known ones.
std::shared_ptr<SequenceLayer> make_layer(const std::string& type, int64_t d_model, LayerArgs& args);

}  // namespace seqlab::nn
