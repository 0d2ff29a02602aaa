// The training step as a CUDA graph (apps/graph_step.h).
#include "apps/graph_step.h"

#include <cmath>

#include "autograd/node.h"
#include "core/cuda/multi_tensor.h"
#include "core/cuda/optim.h"
#include "core/device.h"

namespace seqlab::app {

GraphedStep::GraphedStep(nn::SequenceModel& model, optim::Optimizer& opt, const Objective& objective,
                         StepPolicy policy)
    : model_(model), opt_(opt), objective_(objective), policy_(std::move(policy)) {
  if (!kCuda || model.device() != Device::cuda) why_ = "the model is not on the GPU";
  else if (policy_.reducer) why_ = "data-parallel training (the gradient all-reduce runs on the host)";
  else if (policy_.after_backward) why_ = "an after_backward observer runs on the host";
  else if (opt.device_scalars_per_group() == 0) why_ = "the optimizer has no device-side step (Adam and AdamW have)";
  else if (!cuda::multi_tensor()) why_ = "multi-tensor launches are off (SEQLAB_CUDA_MULTI_TENSOR=0)";
}

StepOutcome GraphedStep::operator()(const data::Batch& batch) {
  auto eager = [&] {
    ++eager_steps_;
    return train_step(model_, opt_, batch, objective_, policy_);
  };
  if (!why_.empty()) return eager();
  if (!graph_.ready()) {
    if (eager_steps_ == 0) return eager();  // warm-up: cuBLAS, cuFFT plans, kernel attributes
    if (const std::string why = capture(batch); !why.empty()) {
      why_ = "the step could not be captured: " + why;
      return eager();
    }
  } else if (batch.x.shape() != x_.shape() || batch.y.shape() != y_.shape() || batch.x.dtype() != x_.dtype() ||
             batch.y.dtype() != y_.dtype()) {
    return eager();  // another shape (an epoch's short last batch): this step alone
  }
  stage(batch);
  return replay();
}

std::string GraphedStep::capture(const data::Batch& batch) {
  if constexpr (!kCuda) {
    (void)batch;
    return "seqlab was built without CUDA";
  } else {
    x_ = Tensor::empty(batch.x.shape(), batch.x.dtype(), Device::cuda);
    y_ = Tensor::empty(batch.y.shape(), batch.y.dtype(), Device::cuda);
    ctl_ = Tensor::zeros({3}, DType::f64, Device::cuda);
    host_scalars_.assign(static_cast<size_t>(opt_.device_scalars_per_group()) * opt_.param_groups().size(), 0.0);
    scalars_ = Tensor::zeros({static_cast<int64_t>(host_scalars_.size())}, DType::f64, Device::cuda);
    double* ctl = static_cast<double*>(ctl_.device_ptr());
    const double* scalars = static_cast<const double*>(scalars_.device_ptr());
    grads_.clear();
    grad_names_.clear();
    grad_params_.clear();
    return graph_.capture([&] {
      opt_.zero_grad();
      Tensor loss = objective_.loss(model_.forward(x_), y_);
      SEQLAB_CHECK(loss.numel() == 1, "the objective's loss has ", loss.numel(), " elements, expected one");
      backward(loss);
      cuda::convert(ctl, DType::f64, loss.device_ptr(), loss.dtype(), 1);
      // train_step's order: the check's sum of squares over the gradients in registration order, which
      // the clip reuses; the update; the parameters' check.
      std::vector<Tensor> params;
      for (const auto& p : model_.named_parameters()) {
        params.push_back(p.tensor);
        if (Tensor g = p.tensor.grad(); g.defined()) {
          grads_.push_back(g);
          grad_names_.push_back(p.name);
        }
      }
      cuda::sum_of_squares_into(grads_, ctl + 1);
      if (policy_.grad_clip > 0) cuda::scale_all_clipped(grads_, policy_.grad_clip, ctl);
      opt_.step_gated(scalars, ctl);
      cuda::sum_of_squares_into(params, ctl + 2);
    });
  }
}

void GraphedStep::stage(const data::Batch& batch) {
  auto put = [](const Tensor& dst, const Tensor& src) {
    if (src.device() == Device::cuda) cuda::copy_d2d(dst.device_ptr(), src.device_ptr(), src.nbytes());
    else cuda::copy_h2d_pinned(dst.device_ptr(), src.raw_data(), src.nbytes());
  };
  put(x_, batch.x);
  put(y_, batch.y);
  opt_.device_scalars(host_scalars_.data());
  cuda::copy_h2d_pinned(scalars_.device_ptr(), host_scalars_.data(), host_scalars_.size() * sizeof(double));
}

StepOutcome GraphedStep::replay() {
  graph_.launch();
  double h[3];
  cuda::copy_d2h(h, ctl_.device_ptr(), sizeof h);
  ++replays_;
  for (size_t i = 0; i < grads_.size(); ++i)  // an eager step in between left its own gradients there
    if (!grad_params_[i].grad().shares_storage(grads_[i])) grad_params_[i].set_grad(grads_[i]);
  StepOutcome so;
  so.loss = h[0];
  if constexpr (kCuda)
    if (!std::isfinite(h[1]))  // the first non-finite gradient by name, as train_step's check reports it
      for (size_t i = 0; i < grads_.size() && so.bad_gradient.empty(); ++i)
        if (!std::isfinite(cuda::sum_of_squares({grads_[i]}))) so.bad_gradient = grad_names_[i];
  if (!std::isfinite(so.loss) || !so.bad_gradient.empty()) return so;  // the device skipped the update
  so.applied = true;
  opt_.count_step();
  if (!std::isfinite(h[2])) so.bad_parameter = first_nonfinite(model_, false);
  return so;
}

}  // namespace seqlab::app
