// The literal table of built-in layer types. Adding a type: include its header and add one line.
#include "layers/registry.h"

#include <mutex>

#include "layers/mamba.h"
#include "layers/mlp.h"
#include "layers/rnn.h"
#include "layers/s4d.h"
#include "layers/s4.h"
#include "layers/transformer.h"

namespace seqlab::nn {
namespace {

std::vector<LayerType>& table() {
  static std::vector<LayerType> types = {
      // name          summary                                                        factory (, quadratic)
      {"rnn",         "Elman RNN (tanh), fused BPTT",                                 make_rnn},
      {"lstm",        "LSTM (Hochreiter & Schmidhuber 1997), fused BPTT",             make_lstm},
      {"gru",         "GRU (Cho et al. 2014), fused BPTT",                            make_gru},
      {"transformer", "pre-LN Transformer encoder layer, fused tiled attention",      make_transformer, true},
      {"s4d",         "S4D diagonal state space layer (Gu et al. 2022), FFT conv",    make_s4d},
      {"lssl",        "LSSL: dense HiPPO-LegS state space layer (Gu et al. 2021)",   make_lssl},
      {"s4",          "S4 DPLR (HiPPO-LegS NPLR) state space layer (Gu et al. 2022)", make_s4},
      {"mamba",       "Mamba-1 selective SSM block (Gu & Dao 2023), fused scan",     make_mamba},
      {"mlp",         "position-wise MLP, no mixing across time (a baseline)",        make_mlp_layer},
  };
  return types;
}

std::mutex& table_mutex() {
  static std::mutex mu;
  return mu;
}

}  // namespace

const std::vector<LayerType>& layer_types() { return table(); }

const LayerType* find_layer_type(const std::string& name) {
  for (const auto& t : layer_types())
    if (t.name == name) return &t;
  return nullptr;
}

void register_layer(LayerType type) {
  std::lock_guard lock(table_mutex());
  SEQLAB_CHECK(!type.name.empty() && type.make, "register_layer: a layer type needs a name and a factory");
  for (const auto& t : table())
    SEQLAB_CHECK(t.name != type.name, "register_layer: a layer type named '", type.name, "' already exists");
  table().push_back(std::move(type));
}

std::shared_ptr<SequenceLayer> make_layer(const std::string& type, int64_t d_model, LayerArgs& args) {
  for (const auto& t : layer_types())
    if (t.name == type) {
      auto layer = t.make(d_model, args);
      args.finish();
      return layer;
    }
  std::string known;
  for (const auto& t : layer_types()) known += (known.empty() ? "" : ", ") + t.name;
  throw Error(str(args.where(), ": unknown layer type '", type, "' (known: ", known, ")"));
}

}  // namespace seqlab::nn
