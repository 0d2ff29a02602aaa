// train_step (apps/run.h) as one CUDA graph: the whole step - zero_grad, forward, loss, backward, the
// non-finite check, clipping and the Adam update - recorded once and replayed with one launch, so a
// short step costs the GPU's time instead of the host's (one launch per kernel, ~130 kernels for a
// 2-layer Mamba). What the eager step decides on the host is decided on the device: the gradients' sum
// of squares feeds the clip and gates the update (a non-finite loss or gradient leaves the parameters
// and the optimizer state as they were), and the optimizer's per-step scalars (bias corrections,
// learning rate) are copied in before each replay. One copy back per step: the loss and the two sums
// of squares, from which the host fills the StepOutcome exactly as train_step would.
//
// The first step runs eagerly (it warms cuBLAS, cuFFT and the kernels' attributes), the second is
// captured (core/cuda/runtime.h, Graph) and every later step with a batch of the same shapes is a
// replay: the same kernels on the same addresses, meant to give the eager step's bits (dropout too: each
// replay draws its masks' seeds from the same generators as the eager step would; docs/GPU.md, session
// 16, says what a GPU has checked so far). Steps stay eager
// where the graph cannot hold them, and why_eager() says why: a CPU model, data-parallel reduction or
// an after_backward observer, an optimizer without a device step (SGD), multi-tensor launches off,
// anything in the model that reads the device on the host,
// and a batch of other shapes (the last short batch of an epoch: that step alone). The parameters and
// the optimizer's state must stay where they are (loading a checkpoint copies into them: fine); after
// a replay each parameter's grad() is the graph's gradient again.
#pragma once
#include <memory>
#include <string>

#include "apps/run.h"
#include "core/cuda/runtime.h"

namespace seqlab::app {

class GraphedStep {
 public:
  /// The model, optimizer and objective must outlive this object; policy as train_step's.
  GraphedStep(nn::SequenceModel& model, optim::Optimizer& opt, const Objective& objective, StepPolicy policy);
  /// One training step (see above).
  StepOutcome operator()(const data::Batch& batch);
  /// True once the step is captured; replays() counts the steps that ran as a replay.
  bool captured() const { return graph_.ready(); }
  int64_t replays() const { return replays_; }
  /// Why steps run eagerly ("" while the graph is used or not yet tried).
  const std::string& why_eager() const { return why_; }

 private:
  std::string capture(const data::Batch& batch);
  void stage(const data::Batch& batch);
  StepOutcome replay();

  nn::SequenceModel& model_;
  optim::Optimizer& opt_;
  const Objective& objective_;
  StepPolicy policy_;
  int64_t eager_steps_ = 0, replays_ = 0;
  std::string why_;
  cuda::Graph graph_;
  Tensor x_, y_;         // the graph's inputs (device), filled before each replay
  Tensor ctl_;           // f64 (3): loss, the gradients' and the parameters' sums of squares
  Tensor scalars_;       // f64: the optimizer's per-step scalars
  std::vector<double> host_scalars_;
  std::vector<std::string> grad_names_;  // the parameters whose gradients the graph computes
  std::vector<Tensor> grads_;            // those gradients (the graph's addresses)
  std::vector<Tensor> grad_params_;      // their parameters
};

}  // namespace seqlab::app
