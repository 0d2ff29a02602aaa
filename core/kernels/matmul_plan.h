// Host-side checks and planning of the matrix products (core/kernels/matmul.h), defined once in
// matmul.cpp and used by the CPU kernels and their CUDA twins (core/cuda/matmul.cu) alike: the same
// checks, the same messages, the same folding of batches. Plain C++, no device code.
#pragma once
#include <cstdint>

#include "core/kernels/matmul.h"
#include "core/tensor.h"

namespace seqlab::kernels {

/// matmul_forward's checks (one dtype, then matmul_dims) and its sizes.
MatmulDims check_matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b);
/// matmul_backward's checks (matmul_dims, dy of the output's shape) and its sizes.
MatmulDims check_matmul_backward(const Tensor& dy, const Shape& a_shape, const Shape& b_shape, bool trans_a,
                                 bool trans_b);

/// The sizes of a linear layer call: R rows of `in` features mapped to `out`.
struct LinearDims {
  int64_t R, in, out;
};
/// linear_forward's checks (x (..., in), w (out, in), b (out) or undefined, one dtype, 32-bit BLAS sizes).
LinearDims check_linear(const Tensor& x, const Tensor& w, const Tensor& b);
/// linear_backward's sizes: R and out from dy (..., out), in from w (or x when w is not given).
LinearDims linear_backward_dims(const Tensor& dy, const Tensor& x, const Tensor& w);

/// batched_gemm's products folded in place, as the CPU kernel and its CUDA twin both run them: an empty
/// sum into one c (L == 0, stride_c == 0) becomes one product with K = 0 (c = beta * c); products of a
/// shared b and an untransposed a whose rows follow each other become one product of L * M rows; products
/// summed into one c whose inner axis runs down the stored rows of both become one product over L * K.
/// Nothing else is folded when L, M or N is then not positive: there is nothing to compute.
void fold_batched_gemm(bool trans_a, bool trans_b, int64_t& L, int64_t& M, int64_t N, int64_t& K, int64_t stride_a,
                       int64_t stride_b, int64_t stride_c);

}  // namespace seqlab::kernels
