// The literal table of built-in layer types. Adding a type: include its header and add one row.
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

RnnOptions tanh_rnn_options(int64_t d_model, LayerArgs& args) { return rnn_options(RnnCell::tanh, d_model, args); }
RnnOptions lstm_options(int64_t d_model, LayerArgs& args) { return rnn_options(RnnCell::lstm, d_model, args); }
RnnOptions gru_options(int64_t d_model, LayerArgs& args) { return rnn_options(RnnCell::gru, d_model, args); }

std::vector<LayerType>& table() {
  using A = std::vector<std::pair<std::string, ArgValue>>;  // bench options at D = 64
  static std::vector<LayerType> types = {
      declare_layer<Rnn>("rnn", "Elman RNN (tanh), fused BPTT", tanh_rnn_options, rnn_option_table, rnn_flops),
      declare_layer<Rnn>("lstm", "LSTM (Hochreiter & Schmidhuber 1997), fused BPTT", lstm_options, rnn_option_table,
                         rnn_flops),
      declare_layer<Rnn>("gru", "GRU (Cho et al. 2014), fused BPTT", gru_options, rnn_option_table, rnn_flops),
      declare_layer<Transformer>("transformer", "pre-LN Transformer encoder layer, fused tiled attention",
                                 transformer_options, transformer_option_table, transformer_flops,
                                 A{{"n_heads", int64_t{4}}, {"d_ff", int64_t{256}}, {"dropout", 0.0}}, true),
      declare_layer<S4D>("s4d", "S4D diagonal state space layer (Gu et al. 2022), FFT conv", s4d_options,
                         s4d_option_table, s4d_flops, A{{"d_state", int64_t{64}}}),
      declare_layer<LSSL>("lssl", "LSSL: dense HiPPO-LegS state space layer (Gu et al. 2021)", lssl_options,
                          lssl_option_table, lssl_flops, A{{"d_state", int64_t{64}}}),
      declare_layer<S4>("s4", "S4 DPLR (HiPPO-LegS NPLR) state space layer (Gu et al. 2022)", s4_options,
                        s4_option_table, s4_flops, A{{"d_state", int64_t{64}}}),
      declare_layer<Mamba>("mamba", "Mamba-1 selective SSM block (Gu & Dao 2023), fused scan", mamba_options,
                           mamba_option_table, mamba_flops,
                           A{{"expand", int64_t{2}}, {"d_state", int64_t{16}}, {"d_conv", int64_t{4}},
                             {"dt_rank", int64_t{4}}}),
      declare_layer<PointwiseMLP>("mlp", "position-wise MLP, no mixing across time (a baseline)", mlp_options,
                                  mlp_option_table, mlp_flops),
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

const LayerType& layer_type(const std::string& name, const std::string& where) {
  if (const LayerType* t = find_layer_type(name)) return *t;
  std::string known;
  for (const auto& t : layer_types()) known += (known.empty() ? "" : ", ") + t.name;
  throw Error(str(where, ": unknown layer type '", name, "' (known: ", known, ")"));
}

std::shared_ptr<SequenceLayer> make_layer(const std::string& type, int64_t d_model, LayerArgs& args) {
  auto layer = layer_type(type, args.where()).make(d_model, args);
  args.finish();
  return layer;
}

}  // namespace seqlab::nn
