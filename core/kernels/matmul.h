// Matrix-product kernels: row-major GEMM through CBLAS (OpenBLAS at one thread), with large products
// split into row blocks over TBB tasks (docs/BENCHMARKS.md, "Threads", has the measurements behind
// that choice). matmul/linear forward and backward are written on one strided batched GEMM.
#pragma once
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// The sizes of a (batched) matmul: L products of (M, K) @ (K, N), b shared across the batch when it is
/// 2-D and a is not, and the output shape. Checks ranks, inner sizes, leading axes and 32-bit BLAS
/// sizes with the messages every matmul reports (the CPU kernels and their CUDA twins share it).
struct MatmulDims {
  int64_t L = 1, M = 0, N = 0, K = 0;
  bool shared_b = false;
  Shape out;
};
MatmulDims matmul_dims(const Shape& a, const Shape& b, bool trans_a, bool trans_b);

/// c (M, N) = op(a) @ op(b) + beta * c, row-major, op(a) (M, K), op(b) (K, N); row blocks over TBB.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* a, const T* b, T beta, T* c);

/// How many inner-axis chunks gemm cuts an (M, N, K) product into (1: none; > 1: a weight-gradient
/// shape whose partial products are summed in chunk order). Fixed by the sizes alone.
int64_t gemm_k_blocks(int64_t M, int64_t N, int64_t K);

/// c (M, N) = alpha * op(a) @ op(b) + beta * c on the calling thread, row-major with explicit leading
/// dimensions: for kernels already running as one task of a parallel loop (RNN steps, attention tiles).
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* a,
                 int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

/// L products c_i = op(a_i) @ op(b_i) + beta * c_i with element strides between matrices; a stride of 0
/// shares one matrix, and stride_c == 0 sums every product into one c (in batch order).
template <typename T>
void batched_gemm(bool trans_a, bool trans_b, int64_t L, int64_t M, int64_t N, int64_t K, const T* a,
                  int64_t stride_a, const T* b, int64_t stride_b, T beta, T* c, int64_t stride_c);

/// The rules of seqlab::matmul: (M, K) @ (K, N), batched with equal leading axes, or a shared (K, N).
Tensor matmul_forward(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b);
/// {da, db} of matmul_forward; a is read only for db and b only for da (either may be undefined when
/// its partner's gradient is not asked for); an entry is undefined when not asked for.
std::array<Tensor, 2> matmul_backward(const Tensor& dy, const Tensor& a, const Tensor& b, const Shape& a_shape,
                                      const Shape& b_shape, bool trans_a, bool trans_b, bool need_da, bool need_db);

/// x (..., in) @ w^T (out, in) + b (out, or undefined) as one GEMM over all leading axes.
Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b);
/// {dx, dw, db} of linear_forward; x is read only for dw, w only for dx; undefined where not asked for.
std::array<Tensor, 3> linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, bool need_dx,
                                      bool need_dw, bool need_db);

/// out (C) = sum over rows of x viewed as (R, C); fixed row chunks summed in order (deterministic).
Tensor column_sum(const Tensor& x, int64_t C);

}  // namespace seqlab::kernels
