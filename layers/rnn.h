// Recurrent sequence layers: a stacked tanh RNN (Elman 1990), LSTM (Hochreiter & Schmidhuber 1997,
// with the forget gate of Gers et al. 2000) and GRU (Cho et al. 2014), batch-first, with PyTorch's
// equations, gate order and parameter names (weight_ih_l0, ...) so a torch.nn.RNN/LSTM/GRU state dict
// loads directly. Every stacked layer keeps the width D, so the layer maps (B, T, D) -> (B, T, D).
// Glossary: B batch, T time, D model width (= hidden size), G gates (rnn 1, lstm 4, gru 3).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/ops/rnn.h"
#include "core/random.h"
#include "layers/option_table.h"
#include "layers/options.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

struct RnnOptions {
  RnnCell cell = RnnCell::lstm;
  int64_t d_model = 0;     // D: input and hidden width of every stacked layer
  int64_t num_layers = 1;  // stacked layers; layer k > 0 reads layer k-1's outputs
  double dropout = 0.0;    // on the outputs of every layer but the last, in training (as PyTorch)
  bool bias = true;        // b_ih and b_hh
  /// Throws seqlab::Error naming the field when d_model or num_layers is not positive or dropout is
  /// outside [0, 1).
  void validate() const;
};

class Rnn : public SequenceLayer {  // (B, T, D) -> (B, T, D)
 public:
  /// Registers weight_ih_l{k} (G*D, D), weight_hh_l{k} (G*D, D), bias_ih_l{k}, bias_hh_l{k} (G*D) for
  /// every layer k, all ~ U(-1/sqrt(D), 1/sqrt(D)) from gen, as PyTorch.
  explicit Rnn(const RnnOptions& options, Generator& gen = default_generator());
  /// One fused op per stacked layer (zero initial state).
  Tensor forward(const Tensor& x) override;
  /// The same computation on the composite reference op (a graph node per step); for tests.
  Tensor forward_reference(const Tensor& x);
  int64_t d_model() const override { return options_.d_model; }
  bool has_step() const override { return true; }
  /// Zero h (and c for the lstm) per stacked layer: tensors [h_0, (c_0), h_1, (c_1), ...], each (B, D).
  StepState init_state(int64_t batch, DType dtype) const override;
  /// x_t (B, D) -> h_t of the last layer (B, D); advances every layer's state by one step, no graph.
  Tensor step(const Tensor& x_t, StepState& state) override;
  const RnnOptions& options() const { return options_; }

 private:
  struct LayerParams {
    Tensor w_ih, w_hh, b_ih, b_hh;
  };
  Tensor run(const Tensor& x, bool reference);
  int64_t states_per_layer() const { return options_.cell == RnnCell::lstm ? 2 : 1; }

  RnnOptions options_;
  std::vector<LayerParams> layers_;
};

/// The options of `rnn`, `lstm` and `gru`, declared once (layers/option_table.h).
const OptionTable<RnnOptions>& rnn_option_table();
/// Reads and checks the options of a `cell` layer of width d_model (errors name args.where()).
RnnOptions rnn_options(RnnCell cell, int64_t d_model, LayerArgs& args);
/// Forward FLOPs on (B, T, D): the input and recurrent GEMMs (gates x D x D each) of every stacked layer.
double rnn_flops(int64_t B, int64_t T, const RnnOptions& o);

/// Config type "rnn" (tanh): options num_layers (1), dropout (0.0), bias (true).
std::shared_ptr<SequenceLayer> make_rnn(int64_t d_model, LayerArgs& args);
/// Config type "lstm": options num_layers (1), dropout (0.0), bias (true).
std::shared_ptr<SequenceLayer> make_lstm(int64_t d_model, LayerArgs& args);
/// Config type "gru": options num_layers (1), dropout (0.0), bias (true).
std::shared_ptr<SequenceLayer> make_gru(int64_t d_model, LayerArgs& args);

}  // namespace seqlab::nn
