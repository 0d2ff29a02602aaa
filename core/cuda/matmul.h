// Matrix products on the device (core/kernels/matmul.h's Tensor functions, same shapes and maths):
// cuBLAS sgemm/dgemm (strided batched for batches) with the row-major <-> column-major swap
// (C^T = op(B)^T op(A)^T), and column_sum as a fixed-order two-pass reduction (no atomics).
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::cuda {

/// (M, K) @ (K, N), batched with equal leading axes, or (..., M, K) @ a shared (K, N); transposes.
Tensor matmul_forward(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b);
/// {da, db} of matmul_forward; undefined where not asked for (a shared b sums over the batch in order).
std::array<Tensor, 2> matmul_backward(const Tensor& dy, const Tensor& a, const Tensor& b, const Shape& a_shape,
                                      const Shape& b_shape, bool trans_a, bool trans_b, bool need_da, bool need_db);
/// x (..., in) @ w^T (out, in) + b (out, or undefined).
Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b);
/// {dx, dw, db} of linear_forward; undefined where not asked for.
std::array<Tensor, 3> linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, bool need_dx,
                                      bool need_dw, bool need_db);
/// out (C) = sum over rows of x viewed as (R, C): 256-row chunk partials in double, added in chunk order
/// (the CPU's order).
Tensor column_sum(const Tensor& x, int64_t C);

}  // namespace seqlab::cuda
