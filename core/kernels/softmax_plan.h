// Host-side planning of the softmax kernels (core/kernels/softmax.h), defined once in softmax.cpp and
// used by the CPU loops and their CUDA twins (core/cuda/softmax.cu) alike: the same checks and messages,
// the same view of a tensor as independent lines along the axis. Plain C++, no device code.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// A tensor seen as (outer, n, inner) around the axis: outer * inner lines of n elements at stride inner.
struct SoftmaxLines {
  int64_t outer = 1, n = 1, inner = 1;
};
/// The lines of a tensor of shape s along `axis` (negative counts from the end); a bad axis throws naming op.
SoftmaxLines softmax_lines(const Shape& s, int64_t axis, const char* op);
/// The backward's checks (dy of y's shape) and the lines of y along `axis`; op names the forward.
SoftmaxLines softmax_backward_lines(const Tensor& dy, const Tensor& y, int64_t axis, const char* op);

}  // namespace seqlab::kernels
