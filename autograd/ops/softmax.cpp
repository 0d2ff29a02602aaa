// softmax and log_softmax ops over core/kernels/softmax; backward reads only the output.
#include "autograd/ops/softmax.h"

#include "autograd/node.h"
#include "core/kernels/softmax.h"

namespace seqlab {

// y = exp(x) / sum(exp(x));  dx = y * (dy - sum(dy * y))
Tensor softmax(const Tensor& x, int64_t axis) {
  Tensor y = kernels::softmax_forward(x, axis);
  return record("softmax", y, {x}, [y = y.detach(), axis](const Tensor& dy) {
    return grads{kernels::softmax_backward(dy, y, axis)};
  });
}

// y = x - log(sum(exp(x)));  dx = dy - exp(y) * sum(dy)
Tensor log_softmax(const Tensor& x, int64_t axis) {
  Tensor y = kernels::log_softmax_forward(x, axis);
  return record("log_softmax", y, {x}, [y = y.detach(), axis](const Tensor& dy) {
    return grads{kernels::log_softmax_backward(dy, y, axis)};
  });
}

}  // namespace seqlab
