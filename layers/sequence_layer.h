// SequenceLayer: what every sequence-mixing layer (rnn, lstm, gru, transformer, s4d, mamba, ...)
// implements. forward maps (B, T, D) -> (B, T, D) over the whole sequence (training, parallel
// where the family allows); step() advances one time step, (B, D) -> (B, D), in constant memory
// (inference on unbounded lengths). Step mode must equal the parallel forward (tested per layer).
#pragma once
#include <vector>

#include "layers/module.h"

namespace seqlab::nn {

/// Whatever a layer carries between step() calls (hidden and cell states, conv buffers, SSM states,
/// and what a layer builds once per sequence: S4 and LSSL keep their discretised system here).
struct StepState {
  std::vector<Tensor> tensors;
};

class SequenceLayer : public Module {
 public:
  /// (B, T, D) -> (B, T, D).
  Tensor forward(const Tensor& x) override = 0;
  /// Model width D (input and output).
  virtual int64_t d_model() const = 0;
  /// True when step() is implemented.
  virtual bool has_step() const { return false; }
  /// Zero state for a batch of B sequences.
  virtual StepState init_state(int64_t batch, DType dtype) const;
  /// One time step: x_t (B, D) -> y_t (B, D); updates `state`. Runs without building a graph.
  virtual Tensor step(const Tensor& x_t, StepState& state);
};

inline StepState SequenceLayer::init_state(int64_t, DType) const {
  throw Error("this layer has no step (recurrent) mode");
}
inline Tensor SequenceLayer::step(const Tensor&, StepState&) {
  throw Error("this layer has no step (recurrent) mode");
}

}  // namespace seqlab::nn
