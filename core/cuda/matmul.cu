// Matrix products on the device: cuBLAS (bound to stream(); strict fp32 unless set_matmul_precision
// asks for TF32 or bfloat16 tensor cores) with the row-major
// <-> column-major swap: a row-major C (M, N) is a column-major C^T (N, M) = op(B)^T op(A)^T, so every
// call passes b before a and swaps M and N. Batches are strided batched GEMMs; products that sum into
// one output (the gradient of a shared weight) are either one GEMM over the concatenated inner axis or
// GEMMs accumulated in batch order. cuBLAS GEMMs are deterministic on one stream; column_sum is a
// fixed-order two-pass reduction (row-tile partials in double, then the tiles added in order;
// core/cuda/column_reduce.cuh).
#include <algorithm>
#include <climits>

#include "core/cuda/column_reduce.cuh"
#include "core/cuda/common.cuh"
#include "core/cuda/matmul.h"
#include "core/kernels/matmul_plan.h"

namespace seqlab::cuda {
namespace {

constexpr int kThreads = 256;

cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

cublasStatus_t gemm_raw(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                        const float* a, int lda, const float* b, int ldb, const float* beta, float* c, int ldc) {
  return sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
cublasStatus_t gemm_raw(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double* alpha,
                        const double* a, int lda, const double* b, int ldb, const double* beta, double* c, int ldc) {
  return cublasDgemm(cublas(), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
cublasStatus_t gemm_strided_raw(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                                const float* a, int lda, long long sa, const float* b, int ldb, long long sb,
                                const float* beta, float* c, int ldc, long long sc, int batch) {
  return sgemm_strided(ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
}
cublasStatus_t gemm_strided_raw(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double* alpha,
                                const double* a, int lda, long long sa, const double* b, int ldb, long long sb,
                                const double* beta, double* c, int ldc, long long sc, int batch) {
  return cublasDgemmStridedBatched(cublas(), ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
}

// Row-major c (M, N) = op(a) @ op(b) + beta * c, one product (M, N, K > 0).
template <typename T>
void gemm1(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* a, const T* b, T beta, T* c) {
  const T one = T(1);
  const int lda = static_cast<int>(ta ? M : K), ldb = static_cast<int>(tb ? K : N);
  check_cublas(gemm_raw(op(tb), op(ta), static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one, b, ldb,
                        a, lda, &beta, c, static_cast<int>(N)),
               "gemm");
}

// core/kernels' batched_gemm on the device: L products c_i = op(a_i) @ op(b_i) + beta * c_i with element
// strides; a stride 0 shares one matrix; stride_c == 0 sums every product into one c in batch order.
// beta is 0 or 1.
template <typename T>
void batched(bool ta, bool tb, int64_t L, int64_t M, int64_t N, int64_t K, const T* a, int64_t sa, const T* b,
             int64_t sb, T beta, T* c, int64_t sc) {
  kernels::fold_batched_gemm(ta, tb, L, M, N, K, sa, sb, sc);
  if (L <= 0 || M <= 0 || N <= 0) return;
  SEQLAB_CHECK(M < INT_MAX && N < INT_MAX && K < INT_MAX && L < INT_MAX, "gemm: sizes (", M, ", ", N, ", ", K,
               ") exceed what BLAS indexes with 32-bit ints");
  if (K == 0) {  // the product is zero: c = beta * c
    if (beta == T(0)) memset_zero(c, static_cast<size_t>((sc == 0 ? 1 : L) * M * N) * sizeof(T));
    return;
  }
  if (L == 1) return gemm1(ta, tb, M, N, K, a, b, beta, c);
  if (sc == 0) {  // products accumulated into one c, in batch order
    for (int64_t i = 0; i < L; ++i) gemm1(ta, tb, M, N, K, a + i * sa, b + i * sb, i == 0 ? beta : T(1), c);
    return;
  }
  const T one = T(1);
  const int lda = static_cast<int>(ta ? M : K), ldb = static_cast<int>(tb ? K : N);
  check_cublas(gemm_strided_raw(op(tb), op(ta), static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &one,
                                b, ldb, sb, a, lda, sa, &beta, c, static_cast<int>(N), sc, static_cast<int>(L)),
               "gemm (strided batched)");
}

// y (R, C) = b broadcast over rows.
template <typename T>
__global__ void broadcast_rows(const T* __restrict__ b, T* __restrict__ y, int64_t R, int64_t C) {
  SEQLAB_CUDA_LOOP(i, R * C) y[i] = b[i % C];
}

}  // namespace

cublasStatus_t sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                     const float* a, int lda, const float* b, int ldb, const float* beta, float* c, int ldc) {
  if (matmul_precision() == MatmulPrecision::medium)
    return cublasGemmEx(cublas(), ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb, beta, c,
                        CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT);
  return cublasSgemm(cublas(), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

cublasStatus_t sgemm_strided(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                             const float* a, int lda, long long sa, const float* b, int ldb, long long sb,
                             const float* beta, float* c, int ldc, long long sc, int batch) {
  if (matmul_precision() == MatmulPrecision::medium)
    return cublasGemmStridedBatchedEx(cublas(), ta, tb, m, n, k, alpha, a, CUDA_R_32F, lda, sa, b, CUDA_R_32F, ldb,
                                      sb, beta, c, CUDA_R_32F, ldc, sc, batch, CUBLAS_COMPUTE_32F_FAST_16BF,
                                      CUBLAS_GEMM_DEFAULT);
  return cublasSgemmStridedBatched(cublas(), ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
}

Tensor matmul_forward(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const kernels::MatmulDims d = kernels::check_matmul(a, b, ta, tb);
  Tensor y = empty(d.out, a.dtype());
  dispatch_float(a.dtype(), "matmul", [&]<typename T>() {
    int64_t sb = d.L > 1 && !d.shared_b ? d.K * d.N : 0;
    batched<T>(ta, tb, d.L, d.M, d.N, d.K, ptr<T>(a), d.M * d.K, ptr<T>(b), sb, T(0), ptr<T>(y), d.M * d.N);
  });
  return y;
}

std::array<Tensor, 2> matmul_backward(const Tensor& dy, const Tensor& a, const Tensor& b, const Shape& a_shape,
                                      const Shape& b_shape, bool ta, bool tb, bool need_da, bool need_db) {
  const kernels::MatmulDims d = kernels::check_matmul_backward(dy, a_shape, b_shape, ta, tb);
  std::array<Tensor, 2> g;
  dispatch_float(dy.dtype(), "matmul", [&]<typename T>() {
    int64_t L = d.L, M = d.M, N = d.N, K = d.K;
    int64_t sa = M * K, sy = M * N, sb = L > 1 && !d.shared_b ? K * N : 0;
    const T* py = ptr<T>(dy);
    if (need_da) {
      const T* pb = ptr<T>(b);
      g[0] = empty(a_shape, dy.dtype());
      T* da = ptr<T>(g[0]);
      // y = op(a) op(b):  d op(a) = dy op(b)^T, transposed back when a was
      if (!ta) batched<T>(false, !tb, L, M, K, N, py, sy, pb, sb, T(0), da, sa);
      else batched<T>(tb, true, L, K, M, N, pb, sb, py, sy, T(0), da, sa);
    }
    if (need_db) {
      const T* pa = ptr<T>(a);
      g[1] = empty(b_shape, dy.dtype());
      T* db = ptr<T>(g[1]);
      // d op(b) = op(a)^T dy, transposed back when b was; a shared b sums over the batch (stride 0)
      if (!tb) batched<T>(!ta, false, L, K, N, M, pa, sa, py, sy, T(0), db, sb);
      else batched<T>(true, ta, L, N, K, M, py, sy, pa, sa, T(0), db, sb);
    }
  });
  return g;
}

Tensor column_sum(const Tensor& x, int64_t C) {
  SEQLAB_CHECK(C >= 0 && (C == 0 || x.numel() % C == 0), "column_sum: ", to_string(x.shape()),
               " is not a multiple of ", C, " columns");
  Tensor out = empty({C}, x.dtype());
  if (C == 0) return out;
  const int64_t R = x.numel() / C;
  dispatch_float(x.dtype(), "column_sum", [&]<typename T>() {
    column_sum_into<T, T>(ptr<T>(x), R, C, ptr<T>(out), "column_sum");
  });
  return out;
}

Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b) {
  const kernels::LinearDims d = kernels::check_linear(x, w, b);
  const int64_t R = d.R, in = d.in, out = d.out;
  Shape ys = x.shape();
  ys.back() = out;
  Tensor y = empty(ys, x.dtype());
  dispatch_float(x.dtype(), "linear", [&]<typename T>() {
    T* py = ptr<T>(y);
    // The bias is written first and the GEMM adds onto it (beta = 1).
    if (b.defined() && R * out > 0) {
      broadcast_rows<T><<<blocks_for(R * out, kThreads), kThreads, 0, stream()>>>(ptr<T>(b), py, R, out);
      check_launch("linear (bias)");
    }
    batched<T>(false, true, 1, R, out, in, ptr<T>(x), 0, ptr<T>(w), 0, b.defined() ? T(1) : T(0), py, 0);
  });
  return y;
}

std::array<Tensor, 3> linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, bool need_dx,
                                      bool need_dw, bool need_db) {
  const kernels::LinearDims d = kernels::linear_backward_dims(dy, x, w);
  const int64_t R = d.R, in = d.in, out = d.out;
  std::array<Tensor, 3> g;
  dispatch_float(dy.dtype(), "linear", [&]<typename T>() {
    const T* py = ptr<T>(dy);
    if (need_dx) {  // dx (R, in) = dy (R, out) @ w (out, in)
      Shape xs = dy.shape();
      xs.back() = in;
      g[0] = empty(xs, dy.dtype());
      batched<T>(false, false, 1, R, in, out, py, 0, ptr<T>(w), 0, T(0), ptr<T>(g[0]), 0);
    }
    if (need_dw) {  // dw (out, in) = dy^T (out, R) @ x (R, in)
      g[1] = empty({out, in}, dy.dtype());
      batched<T>(true, false, 1, out, in, R, py, 0, ptr<T>(x), 0, T(0), ptr<T>(g[1]), 0);
    }
  });
  if (need_db) g[2] = column_sum(dy, out);
  return g;
}

}  // namespace seqlab::cuda
