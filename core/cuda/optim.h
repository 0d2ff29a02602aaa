// Fused optimizer updates and gradient-norm clipping on the device (optim/ calls them for cuda
// parameters): one kernel per parameter tensor, the same per-element maths as the CPU loops.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace seqlab::cuda {

/// The tensors of one parameter's Adam update.
struct AdamTensors {
  Tensor* p;
  const Tensor* g;
  Tensor* m;
  Tensor* v;
};

/// Adam/AdamW on one parameter (see optim/adam.cpp's adam_chunk for the maths): p, m, v in place.
void adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, double b1c, double b2, double b2c, double eps,
                 double step_size, double bc2s, double l2, double shrink, bool decay);
/// The same update for every parameter of a list with the same scalars (one parameter group), in
/// ceil(list / kMaxTensors) launches (core/cuda/multi_tensor.h); the same bits as adam_update on each.
void adam_update_many(const std::vector<AdamTensors>& ts, double b1c, double b2, double b2c, double eps,
                      double step_size, double bc2s, double l2, double shrink, bool decay);
/// SGD with optional momentum/Nesterov/weight decay (optim/sgd.cpp); buf undefined without momentum.
void sgd_update(Tensor& p, const Tensor& g, Tensor* buf, double lr, double wd, double mu, double damp, bool nesterov,
                bool first);
/// sum over tensors of sum(g^2) in float64, a fixed order (per tensor: fixed chunks, then in order);
/// one copy back to the host. With multi_tensor(): the same partials in one launch per group of
/// tensors, so the same value.
double sum_of_squares(const std::vector<Tensor>& gs);
/// g *= c for every tensor.
void scale_all(const std::vector<Tensor>& gs, double c);

// The same steps with their decisions on the device, for a training step captured as a CUDA graph
// (apps/graph_step.h): nothing is read back; `gate` points at the device doubles (loss, the
// gradients' sum of squares). Multi-tensor launches only (multi_tensor()).
/// *out (device) = sum_of_squares(gs), the same value; no copy back.
void sum_of_squares_into(const std::vector<Tensor>& gs, double* out);
/// clip_grad_norm's scale of every gradient by max_norm / (sqrt(gate[1]) + 1e-6) where that is < 1,
/// computed on the device as the host computes it; nothing when gate[0] or gate[1] is not finite.
void scale_all_clipped(const std::vector<Tensor>& gs, double max_norm, const double* gate);
/// adam_update_many with its nine scalars (b1c, b2, b2c, eps, step_size, bc2s, l2, shrink, decay as
/// 0/1) read from device memory when the kernel runs; nothing when gate[0] or gate[1] is not finite.
void adam_update_many_gated(const std::vector<AdamTensors>& ts, const double* scalars, const double* gate);

}  // namespace seqlab::cuda
