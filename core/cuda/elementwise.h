// CUDA twins of core/kernels/elementwise.h (same names, shapes, checks and maths); the CPU
// functions call these when their inputs live on the device. Outputs are device tensors; the in-place
// ops modify the device storage of their destination.
#pragma once
#include "core/tensor.h"

namespace seqlab::cuda {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor broadcast_to(const Tensor& x, const Shape& shape, double alpha = 1.0);

Tensor neg(const Tensor& x);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor pow_scalar(const Tensor& x, double p);
Tensor pow_scalar_backward(const Tensor& dy, const Tensor& x, double p);

void add_(Tensor& dst, const Tensor& src, double alpha = 1.0);
void axpby_(Tensor& dst, double alpha, const Tensor& src, double beta);
void mul_(Tensor& dst, const Tensor& src);
void addcmul_(Tensor& dst, const Tensor& a, const Tensor& b, double value);
void scale_(Tensor& t, double s);
void fill(Tensor& t, double v);
void copy_(Tensor& dst, const Tensor& src);

}  // namespace seqlab::cuda
