// MLP: Linear -> activation -> dropout, repeated over the hidden widths, then a final Linear.
// Parameters are named layers.<i>.weight / layers.<i>.bias.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/random.h"
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/option_table.h"
#include "layers/options.h"
#include "layers/sequence_layer.h"

namespace seqlab::nn {

struct MLPOptions {
  int64_t in = 0;
  std::vector<int64_t> hidden;  // widths of the hidden layers (may be empty: one Linear)
  int64_t out = 0;
  std::string activation = "gelu";
  double dropout = 0.0;  // after each hidden activation
  /// Throws seqlab::Error naming the field (in, out, hidden[i], activation, dropout) when invalid.
  void validate() const;
};

class MLP : public Module {  // (..., in) -> (..., out)
 public:
  /// Linear layers are initialised from gen in order; dropout also draws from gen.
  explicit MLP(const MLPOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  const MLPOptions& options() const { return options_; }

 private:
  MLPOptions options_;
  std::vector<std::shared_ptr<Linear>> linears_;
  std::shared_ptr<Activation> act_;
  std::shared_ptr<Dropout> drop_;  // null when options.dropout == 0
};

/// The "mlp" layer type: a position-wise feed-forward mixer, (B, T, D) -> (B, T, D), the same MLP
/// D -> expand*D -> D applied at every time step and nothing mixed across time. With the model's
/// "flatten" head it makes the classic MLP forecaster; as a baseline it shows what the sequence
/// mixers add. Stateless, so step() is the forward at one position. Parameters: mlp.layers.<i>.*.
struct PointwiseMLPOptions;
class PointwiseMLP : public SequenceLayer {
 public:
  PointwiseMLP(int64_t d_model, const MLPOptions& options, Generator& gen = default_generator());
  explicit PointwiseMLP(const PointwiseMLPOptions& options, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override { return mlp_->forward(x); }
  int64_t d_model() const override { return d_model_; }
  bool has_step() const override { return true; }
  StepState init_state(int64_t, DType) const override { return {}; }
  Tensor step(const Tensor& x_t, StepState&) override;

 private:
  int64_t d_model_;
  std::shared_ptr<MLP> mlp_;
};

/// The config options of the `mlp` layer type.
struct PointwiseMLPOptions {
  int64_t d_model = 0;
  int64_t expand = 2;                 // hidden width expand * d_model
  std::string activation = "gelu";
  double dropout = 0.0;               // after the hidden activation
  /// The MLP it builds: d_model -> expand d_model -> d_model.
  MLPOptions mlp() const;
  /// Throws seqlab::Error naming the field and what was expected.
  void validate() const;
};
const OptionTable<PointwiseMLPOptions>& mlp_option_table();
PointwiseMLPOptions mlp_options(int64_t d_model, LayerArgs& args);
/// Forward FLOPs on (B, T, D): the two GEMMs D -> expand D -> D.
double mlp_flops(int64_t B, int64_t T, const PointwiseMLPOptions& o);

/// Registry factory. Options: expand (2: hidden width expand * d_model), activation ("gelu"),
/// dropout (0, after the hidden activation).
std::shared_ptr<SequenceLayer> make_mlp_layer(int64_t d_model, LayerArgs& args);

}  // namespace seqlab::nn
