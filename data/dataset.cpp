// Dataset::get: the allocate-and-gather convenience shared by every dataset.
#include "data/dataset.h"

namespace seqlab::data {

Batch Dataset::get(std::span<const int64_t> indices) const {
  const auto B = static_cast<int64_t>(indices.size());
  Shape xs = x_shape(), ys = y_shape();
  xs.insert(xs.begin(), B);
  ys.insert(ys.begin(), B);
  Batch b{Tensor::empty(xs, dtype()), Tensor::empty(ys, dtype()), B};
  gather(indices, b.x, b.y);
  return b;
}

}  // namespace seqlab::data
