// What every CUDA kernel file of seqlab shares: error checks, the one stream, the cuBLAS handle,
// device pointers of tensors, new device tensors, launch sizes and the dtype dispatch. Included by
// .cu files only (core/cuda/*.cu).
//
// A kernel file's public functions take and return Tensors like core/kernels' (same names, same
// shapes, same maths), and are declared in a plain C++ header beside it (core/cuda/<group>.h) that
// core/kernels/<group>.cpp calls when its inputs live on the device:
//     if constexpr (kCuda) if (on_cuda("add", a, b)) return cuda::add(a, b);
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/runtime.h"
#include "core/error.h"
#include "core/tensor.h"

namespace seqlab::cuda {

/// The stream every kernel, copy and library call is queued on.
cudaStream_t stream();
/// The cuBLAS handle, bound to stream(); pointer mode host; default math (strict fp32, no TF32).
cublasHandle_t cublas();

/// Throws seqlab::Error naming the call and CUDA's message.
void check(cudaError_t e, const char* what);
void check_cublas(cublasStatus_t s, const char* what);
/// cublasSgemm / cublasSgemmStridedBatched (column-major), or with matmul_precision() == medium
/// cublasGemmEx / cublasGemmStridedBatchedEx with CUBLAS_COMPUTE_32F_FAST_16BF (core/cuda/matmul.cu).
cublasStatus_t sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                     const float* a, int lda, const float* b, int ldb, const float* beta, float* c, int ldc);
cublasStatus_t sgemm_strided(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                             const float* a, int lda, long long sa, const float* b, int ldb, long long sb,
                             const float* beta, float* c, int ldc, long long sc, int batch);
/// After a launch: a bad configuration (too many threads, too much shared memory) as an Error.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

/// Typed device pointer of a cuda tensor (checks device and dtype).
template <typename T>
T* ptr(const Tensor& t) {
  SEQLAB_CHECK(t.defined(), "cuda: undefined tensor");
  SEQLAB_CHECK(t.device() == Device::cuda, "cuda kernel given a tensor on ", device_name(t.device()));
  SEQLAB_CHECK(dtype_of<T>() == t.dtype(), "cuda kernel: tensor holds ", dtype_name(t.dtype()), ", asked for ",
               dtype_name(dtype_of<T>()));
  return static_cast<T*>(t.device_ptr());
}

/// Uninitialised / zeroed device tensors.
inline Tensor empty(const Shape& s, DType d = DType::f32) { return Tensor::empty(s, d, Device::cuda); }
inline Tensor zeros(const Shape& s, DType d = DType::f32) { return Tensor::zeros(s, d, Device::cuda); }

/// Blocks of `threads` covering n elements, capped (kernels loop grid-stride beyond the cap).
inline unsigned blocks_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535 * 8) b = 65535 * 8;
  return static_cast<unsigned>(b);
}

/// Grid-stride loop over [0, n).
#define SEQLAB_CUDA_LOOP(i, n)                                                                   \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n);        \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

}  // namespace seqlab::cuda
