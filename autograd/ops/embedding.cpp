// out[i, :] = weight[ids[i], :];  dweight[v, :] = sum over i with ids[i] == v of dout[i, :]
#include "autograd/ops/embedding.h"

#include <cstring>

#include "autograd/node.h"
#include "core/cuda/nn.h"
#include "core/device.h"

namespace seqlab {

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  SEQLAB_CHECK(weight.dim() == 2, "embedding: weight must be (V, D), got ", to_string(weight.shape()));
  SEQLAB_CHECK(ids.dtype() == DType::i32, "embedding: ids must be int32, got ", dtype_name(ids.dtype()));
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  Tensor y;
  bool gpu = false;
  if constexpr (kCuda)
    if (on_cuda("embedding", weight, ids)) {  // the id check runs on the device (one int copied back)
      y = cuda::embedding_forward(weight, ids);
      gpu = true;
    }
  if (!gpu) {
    const int32_t* id = ids.data<int32_t>();
    for (int64_t i = 0; i < n; ++i)
      SEQLAB_CHECK(id[i] >= 0 && id[i] < V, "embedding: id ", id[i], " at position ", i, " outside [0, ", V, ")");
    Shape out_shape = ids.shape();
    out_shape.push_back(D);
    y = Tensor::empty(out_shape, weight.dtype());
    const size_t row = static_cast<size_t>(D) * dtype_size(weight.dtype());
    auto* src = static_cast<const char*>(weight.raw_data());
    auto* dst = static_cast<char*>(y.raw_data());
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * row, src + id[i] * row, row);
  }
  return record("embedding", y, {weight, ids}, [ids = ids.detach(), V, D](const Tensor& dy) {
    if constexpr (kCuda)
      if (on_cuda("embedding backward", dy, ids)) return grads{cuda::embedding_backward(dy, ids, V, D), Tensor()};
    Tensor dw = Tensor::zeros({V, D}, dy.dtype());
    dispatch_float(dy.dtype(), "embedding backward", [&]<typename T>() {
      const int32_t* id = ids.data<int32_t>();
      const T* g = dy.data<T>();
      T* w = dw.data<T>();
      for (int64_t i = 0, n = ids.numel(); i < n; ++i)  // sequential: fixed summation order
        for (int64_t d = 0; d < D; ++d) w[id[i] * D + d] += g[i * D + d];
    });
    return grads{dw, Tensor()};
  });
}

}  // namespace seqlab
