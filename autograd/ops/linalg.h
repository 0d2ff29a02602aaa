// Matrix products through CBLAS (OpenBLAS), split over TBB tasks (OpenBLAS itself runs one thread).
#pragma once
#include "core/tensor.h"

namespace seqlab {

/// a @ b with optional transposes of the last two axes. Shapes: (M, K) @ (K, N); batched
/// (..., M, K) @ (..., K, N) with equal leading axes; or (..., M, K) @ (K, N), a shared matrix.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
/// x @ w^T + b: x (..., in), w (out, in), b (out) or undefined. One GEMM over all leading axes.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

}  // namespace seqlab
