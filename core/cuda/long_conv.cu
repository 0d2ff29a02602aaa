// The long causal convolution on the device (core/cuda/long_conv.h).
//
// Direct: K is first transposed to (S, T, D) so that a warp's reads are coalesced along channels;
// y, du: one thread per (b, t, d) adding the lags in the CPU loops' order; dK: one thread per (s, j, d)
// adding the batch rows in order (each row's inner sum over t first, as the CPU).
//
// FFT: u and dy are transposed to (B*D, n) rows zero-padded to n (a 32 x 32 shared-memory tile
// transpose), transformed by one batched cuFFT R2C; the kernel of channel d is laid out circularly
// over n points (kb[j] = K0[j], kb[n-1-j] = K1[j]) and transformed once per call. y = C2R(U Kb) / n,
// du = C2R(conj(Kb) DY) / n, dK = C2R(sum_b conj(U_b) DY_b) / n read at the same positions (the sum
// over b runs in order in one thread per (d, bin)). cuFFT plans are cached per (n, batch, type), run
// on stream() with their work area from the caching allocator (no auto allocation).
#include "core/cuda/long_conv.h"

#include <cufft.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

#include "core/cuda/common.cuh"
#include "core/kernels/long_conv_check.h"

namespace seqlab::cuda {

using kernels::ConvGrads;

namespace {

constexpr int64_t kDirectMaxT = 64;  // causal_conv_forward/backward: direct loops up to this length

using kernels::check_causal_conv;
using kernels::check_causal_conv_fft;

// The gradient's shape and dtype (device safety: the CPU loops read dy unchecked).
void check_dy(const Tensor& dy, const Tensor& u, const char* op) {
  SEQLAB_CHECK(dy.shape() == u.shape() && dy.dtype() == u.dtype(), op, ": dy must be ", to_string(u.shape()), " ",
               dtype_name(u.dtype()), ", got ", to_string(dy.shape()), " ", dtype_name(dy.dtype()));
}

// ---------------------------------------------------------------------------------------------
// Direct

// Kt[(s T + j) D + d] = K[(s D + d) T + j]
template <typename T>
__global__ void transpose_kernel_k(const T* __restrict__ K, T* __restrict__ Kt, int64_t S, int64_t Tn, int64_t D) {
  SEQLAB_CUDA_LOOP(i, S * Tn * D) {
    const int64_t d = i % D, j = (i / D) % Tn, s = i / (D * Tn);
    Kt[i] = K[(s * D + d) * Tn + j];
  }
}

Tensor transposed_kernel(const Tensor& K, int64_t S, int64_t Tn, int64_t D) {
  Tensor Kt = cuda::empty({S, Tn, D}, K.dtype());
  dispatch_float(K.dtype(), "causal_conv", [&]<typename T>() {
    transpose_kernel_k<T><<<blocks_for(S * Tn * D), 256, 0, stream()>>>(ptr<T>(K), ptr<T>(Kt), S, Tn, D);
  });
  check_launch("causal_conv: transpose K");
  return Kt;
}

// y[b, t, d] = sum_{j<=t} K0[j] u[t-j] (+ sum_{t+1+j<T} K1[j] u[t+1+j])
template <typename T>
__global__ void direct_forward_kernel(const T* __restrict__ u, const T* __restrict__ Kt, T* __restrict__ y,
                                      int64_t B, int64_t Tn, int64_t D, int64_t S) {
  SEQLAB_CUDA_LOOP(i, B * Tn * D) {
    const int64_t d = i % D, t = (i / D) % Tn, b = i / (D * Tn);
    const T* ub = u + b * Tn * D + d;
    T acc = 0;
    for (int64_t j = 0; j <= t; ++j) acc += Kt[j * D + d] * ub[(t - j) * D];
    if (S == 2)
      for (int64_t j = 0; t + 1 + j < Tn; ++j) acc += Kt[(Tn + j) * D + d] * ub[(t + 1 + j) * D];
    y[i] = acc;
  }
}

// du[b, s, d] = sum_{t>=s} dy[t] K0[t-s] + sum_{t<s} dy[t] K1[s-t-1]
template <typename T>
__global__ void direct_du_kernel(const T* __restrict__ dy, const T* __restrict__ Kt, T* __restrict__ du, int64_t B,
                                 int64_t Tn, int64_t D, int64_t S) {
  SEQLAB_CUDA_LOOP(i, B * Tn * D) {
    const int64_t d = i % D, s = (i / D) % Tn, b = i / (D * Tn);
    const T* g = dy + b * Tn * D + d;
    T a = 0;
    for (int64_t t = s; t < Tn; ++t) a += g[t * D] * Kt[(t - s) * D + d];
    if (S == 2)
      for (int64_t t = 0; t < s; ++t) a += g[t * D] * Kt[(Tn + s - t - 1) * D + d];
    du[i] = a;
  }
}

// dK0[j] = sum_b (sum_{t>=j} dy[t] u[t-j]); dK1[j] = sum_b (sum_{t+1+j<T} dy[t] u[t+1+j]); one thread per (j, d)
template <typename T>
__global__ void direct_dk_kernel(const T* __restrict__ dy, const T* __restrict__ u, T* __restrict__ dK, int64_t B,
                                 int64_t Tn, int64_t D, int64_t S) {
  SEQLAB_CUDA_LOOP(i, Tn * D) {
    const int64_t d = i % D, j = i / D;
    T acc0 = 0, acc1 = 0;
    for (int64_t b = 0; b < B; ++b) {
      const T *g = dy + b * Tn * D + d, *x = u + b * Tn * D + d;
      T a = 0;
      for (int64_t t = j; t < Tn; ++t) a += g[t * D] * x[(t - j) * D];
      acc0 += a;
      if (S == 2) {
        T a1 = 0;
        for (int64_t t = 0; t + 1 + j < Tn; ++t) a1 += g[t * D] * x[(t + 1 + j) * D];
        acc1 += a1;
      }
    }
    dK[d * Tn + j] = acc0;
    if (S == 2) dK[(D + d) * Tn + j] = acc1;
  }
}

Tensor direct_forward(const Tensor& u, const Tensor& K, int64_t S) {
  const int64_t B = u.size(0), Tn = u.size(1), D = u.size(2);
  Tensor y = cuda::empty(u.shape(), u.dtype());
  if (y.numel() == 0) return y;
  Tensor Kt = transposed_kernel(K, S, Tn, D);
  dispatch_float(u.dtype(), "causal_conv", [&]<typename T>() {
    direct_forward_kernel<T><<<blocks_for(B * Tn * D), 256, 0, stream()>>>(ptr<T>(u), ptr<T>(Kt), ptr<T>(y), B, Tn,
                                                                           D, S);
  });
  check_launch("causal_conv_direct_forward");
  return y;
}

ConvGrads direct_backward(const Tensor& dy, const Tensor& u, const Tensor& K, int64_t S, bool need_u, bool need_K) {
  const int64_t B = u.size(0), Tn = u.size(1), D = u.size(2);
  ConvGrads g;
  if (need_u) g.du = cuda::empty(u.shape(), u.dtype());
  if (need_K) g.dK = cuda::zeros(K.shape(), K.dtype());
  if (u.numel() == 0 || (!need_u && !need_K)) return g;
  dispatch_float(u.dtype(), "causal_conv_backward", [&]<typename T>() {
    if (need_u) {
      Tensor Kt = transposed_kernel(K, S, Tn, D);
      direct_du_kernel<T><<<blocks_for(B * Tn * D), 256, 0, stream()>>>(ptr<T>(dy), ptr<T>(Kt), ptr<T>(g.du), B, Tn,
                                                                        D, S);
      check_launch("causal_conv_direct_backward: du");
    }
    if (need_K) {
      direct_dk_kernel<T><<<blocks_for(Tn * D), 256, 0, stream()>>>(ptr<T>(dy), ptr<T>(u), ptr<T>(g.dK), B, Tn, D,
                                                                     S);
      check_launch("causal_conv_direct_backward: dK");
    }
  });
  return g;
}

// ---------------------------------------------------------------------------------------------
// FFT

void check_cufft(cufftResult r, const char* what) {
  if (r != CUFFT_SUCCESS) throw Error(str("cuFFT error in ", what, ": status ", static_cast<int>(r)));
}

template <typename T>
struct Fft;
template <>
struct Fft<float> {
  using C = cufftComplex;
  static constexpr cufftType r2c = CUFFT_R2C, c2r = CUFFT_C2R;
  static cufftResult forward(cufftHandle p, const void* in, void* out) {
    return cufftExecR2C(p, static_cast<cufftReal*>(const_cast<void*>(in)), static_cast<cufftComplex*>(out));
  }
  static cufftResult inverse(cufftHandle p, const void* in, void* out) {
    return cufftExecC2R(p, static_cast<cufftComplex*>(const_cast<void*>(in)), static_cast<cufftReal*>(out));
  }
};
template <>
struct Fft<double> {
  using C = cufftDoubleComplex;
  static constexpr cufftType r2c = CUFFT_D2Z, c2r = CUFFT_Z2D;
  static cufftResult forward(cufftHandle p, const void* in, void* out) {
    return cufftExecD2Z(p, static_cast<cufftDoubleReal*>(const_cast<void*>(in)), static_cast<cufftDoubleComplex*>(out));
  }
  static cufftResult inverse(cufftHandle p, const void* in, void* out) {
    return cufftExecZ2D(p, static_cast<cufftDoubleComplex*>(const_cast<void*>(in)), static_cast<cufftDoubleReal*>(out));
  }
};

struct Plan {
  cufftHandle handle = 0;
  size_t work = 0;
};

// Runs one batched transform of `batch` rows of n points (type r2c or c2r of T) on stream(), with a
// plan from the cache and its work area from the caching allocator (freed after queueing: the next
// user of the block runs after this transform on the one stream).
template <typename T>
void run_fft(bool forward, int64_t n, int64_t batch, const void* in, void* out) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int>, Plan> cache;
  const cufftType type = forward ? Fft<T>::r2c : Fft<T>::c2r;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_tuple(n, batch, static_cast<int>(type));
  auto it = cache.find(key);
  if (it == cache.end()) {
    Plan p;
    check_cufft(cufftCreate(&p.handle), "cufftCreate");
    check_cufft(cufftSetAutoAllocation(p.handle, 0), "cufftSetAutoAllocation");
    long long nn = n;
    check_cufft(cufftMakePlanMany64(p.handle, 1, &nn, nullptr, 1, 0, nullptr, 1, 0, type, batch, &p.work),
                "cufftMakePlanMany64");
    it = cache.emplace(key, p).first;
  }
  const Plan& p = it->second;
  Tensor work;
  if (p.work > 0) {
    work = cuda::empty({static_cast<int64_t>((p.work + 3) / 4)}, DType::f32);
    check_cufft(cufftSetWorkArea(p.handle, work.device_ptr()), "cufftSetWorkArea");
  }
  check_cufft(cufftSetStream(p.handle, stream()), "cufftSetStream");
  check_cufft(forward ? Fft<T>::forward(p.handle, in, out) : Fft<T>::inverse(p.handle, in, out),
              forward ? "causal_conv: forward transform" : "causal_conv: inverse transform");
}

// The smallest even 2,3,5,7-smooth length >= 2T - 1.
int64_t fft_length(int64_t Tn) {
  for (int64_t k = std::max<int64_t>(2, 2 * Tn - 1);; ++k) {
    if (k % 2) continue;
    int64_t m = k;
    for (int64_t p : {2, 3, 5, 7})
      while (m % p == 0) m /= p;
    if (m == 1) return k;
  }
}

// dst (B*D, n) row (b, d) = src (B, T, D)[b, :, d] padded with zeros to n. Block (32, 8).
template <typename T>
__global__ void pad_transpose_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t B, int64_t Tn, int64_t D,
                                     int64_t n) {
  __shared__ T tile[32][33];
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * 32, d0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
      const int64_t t = t0 + r, d = d0 + threadIdx.x;
      tile[r][threadIdx.x] = (t < Tn && d < D) ? src[(b * Tn + t) * D + d] : T(0);
    }
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
      const int64_t d = d0 + r, t = t0 + threadIdx.x;
      if (d < D && t < n) dst[(b * D + d) * n + t] = tile[threadIdx.x][r];
    }
    __syncthreads();
  }
}

// dst (B, T, D)[b, t, d] = scale * src (B*D, n)[(b, d), t] for t < T.
template <typename T>
__global__ void unpad_transpose_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t B, int64_t Tn,
                                       int64_t D, int64_t n, T scale) {
  __shared__ T tile[32][33];
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * 32, d0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
      const int64_t d = d0 + r, t = t0 + threadIdx.x;
      tile[r][threadIdx.x] = (d < D && t < Tn) ? src[(b * D + d) * n + t] : T(0);
    }
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += blockDim.y) {
      const int64_t t = t0 + r, d = d0 + threadIdx.x;
      if (t < Tn && d < D) dst[(b * Tn + t) * D + d] = tile[threadIdx.x][r] * scale;
    }
    __syncthreads();
  }
}

dim3 tile_grid(int64_t cols, int64_t D, int64_t B) {
  return dim3(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((D + 31) / 32),
              static_cast<unsigned>(std::min<int64_t>(B, 65535)));
}

// kb (D, n): kb[d, t] = K0[d, t] (t < T), K1[d, n-1-t] (S == 2, t > n - T), else 0
template <typename T>
__global__ void circular_kernel_kernel(const T* __restrict__ K, T* __restrict__ kb, int64_t S, int64_t Tn, int64_t D,
                                       int64_t n) {
  SEQLAB_CUDA_LOOP(i, D * n) {
    const int64_t t = i % n, d = i / n;
    T v = 0;
    if (t < Tn) v = K[d * Tn + t];
    else if (S == 2 && t > n - Tn) v = K[(D + d) * Tn + (n - 1 - t)];
    kb[i] = v;
  }
}

// X[(r, k)] *= KF[d, k] (or conj(KF)), d = r % D
template <typename C>
__global__ void mul_spectrum_kernel(C* __restrict__ X, const C* __restrict__ KF, int64_t rows, int64_t D, int64_t nh,
                                    bool conj_k) {
  SEQLAB_CUDA_LOOP(i, rows * nh) {
    const int64_t k = i % nh, d = (i / nh) % D;
    const C a = X[i];
    C b = KF[d * nh + k];
    if (conj_k) b.y = -b.y;
    C r;
    r.x = a.x * b.x - a.y * b.y;
    r.y = a.x * b.y + a.y * b.x;
    X[i] = r;
  }
}

// acc[d, k] = sum_b conj(U[(b, d), k]) G[(b, d), k], b in order
template <typename C>
__global__ void accumulate_dk_kernel(const C* __restrict__ U, const C* __restrict__ G, C* __restrict__ acc, int64_t B,
                                     int64_t D, int64_t nh) {
  SEQLAB_CUDA_LOOP(i, D * nh) {
    const int64_t k = i % nh, d = i / nh;
    decltype(C::x) re = 0, im = 0;
    for (int64_t b = 0; b < B; ++b) {
      const C u = U[(b * D + d) * nh + k], g = G[(b * D + d) * nh + k];
      re += u.x * g.x + u.y * g.y;
      im += u.x * g.y - u.y * g.x;
    }
    C r;
    r.x = re;
    r.y = im;
    acc[i] = r;
  }
}

// dK[s, d, j] = scale * x[d, j] (s = 0), scale * x[d, n-1-j] (s = 1, j < T-1), 0 (s = 1, j = T-1)
template <typename T>
__global__ void extract_dk_kernel(const T* __restrict__ x, T* __restrict__ dK, int64_t S, int64_t Tn, int64_t D,
                                  int64_t n, T scale) {
  SEQLAB_CUDA_LOOP(i, S * D * Tn) {
    const int64_t j = i % Tn, d = (i / Tn) % D, s = i / (Tn * D);
    T v = 0;
    if (s == 0) v = x[d * n + j];
    else if (j + 1 < Tn) v = x[d * n + (n - 1 - j)];
    dK[i] = v * scale;
  }
}

// The spectra (D, nh) of the circular kernels.
template <typename T>
Tensor kernel_spectra(const Tensor& K, int64_t S, int64_t Tn, int64_t D, int64_t n) {
  const int64_t nh = n / 2 + 1;
  Tensor kb = cuda::empty({D, n}, K.dtype()), kf = cuda::empty({D, nh, 2}, K.dtype());
  circular_kernel_kernel<T><<<blocks_for(D * n), 256, 0, stream()>>>(ptr<T>(K), ptr<T>(kb), S, Tn, D, n);
  check_launch("causal_conv: circular kernel");
  run_fft<T>(true, n, D, kb.device_ptr(), kf.device_ptr());
  return kf;
}

// rows (B*D, n) of src (B, T, D) padded, and their spectra (B*D, nh)
template <typename T>
Tensor row_spectra(const Tensor& src, Tensor& rows, int64_t B, int64_t Tn, int64_t D, int64_t n) {
  const int64_t nh = n / 2 + 1;
  rows = cuda::empty({B * D, n}, src.dtype());
  Tensor f = cuda::empty({B * D, nh, 2}, src.dtype());
  pad_transpose_kernel<T><<<tile_grid(n, D, B), dim3(32, 8), 0, stream()>>>(ptr<T>(src), ptr<T>(rows), B, Tn, D, n);
  check_launch("causal_conv: pad");
  run_fft<T>(true, n, B * D, rows.device_ptr(), f.device_ptr());
  return f;
}

template <typename T>
Tensor fft_forward(const Tensor& u, const Tensor& K, int64_t S) {
  using C = typename Fft<T>::C;
  const int64_t B = u.size(0), Tn = u.size(1), D = u.size(2);
  Tensor y = cuda::empty(u.shape(), u.dtype());
  if (y.numel() == 0) return y;
  const int64_t n = fft_length(Tn), nh = n / 2 + 1;
  Tensor kf = kernel_spectra<T>(K, S, Tn, D, n);
  Tensor rows;
  Tensor xf = row_spectra<T>(u, rows, B, Tn, D, n);
  mul_spectrum_kernel<C><<<blocks_for(B * D * nh), 256, 0, stream()>>>(static_cast<C*>(xf.device_ptr()),
                                                                       static_cast<const C*>(kf.device_ptr()), B * D,
                                                                       D, nh, false);
  check_launch("causal_conv: spectrum product");
  run_fft<T>(false, n, B * D, xf.device_ptr(), rows.device_ptr());
  unpad_transpose_kernel<T><<<tile_grid(Tn, D, B), dim3(32, 8), 0, stream()>>>(ptr<T>(rows), ptr<T>(y), B, Tn, D, n,
                                                                               T(1) / static_cast<T>(n));
  check_launch("causal_conv: unpad");
  return y;
}

template <typename T>
ConvGrads fft_backward(const Tensor& dy, const Tensor& u, const Tensor& K, int64_t S, bool need_u, bool need_K) {
  using C = typename Fft<T>::C;
  const int64_t B = u.size(0), Tn = u.size(1), D = u.size(2);
  ConvGrads g;
  if (need_u) g.du = cuda::empty(u.shape(), u.dtype());
  if (need_K) g.dK = cuda::empty(K.shape(), K.dtype());
  if (!need_u && !need_K) return g;
  if (u.numel() == 0) {
    if (need_K) g.dK = cuda::zeros(K.shape(), K.dtype());
    return g;
  }
  const int64_t n = fft_length(Tn), nh = n / 2 + 1;
  const T scale = T(1) / static_cast<T>(n);
  Tensor grows;
  Tensor gf = row_spectra<T>(dy, grows, B, Tn, D, n);
  if (need_K) {
    Tensor urows;
    Tensor uf = row_spectra<T>(u, urows, B, Tn, D, n);
    Tensor acc = cuda::empty({D, nh, 2}, u.dtype()), kx = cuda::empty({D, n}, u.dtype());
    accumulate_dk_kernel<C><<<blocks_for(D * nh), 256, 0, stream()>>>(static_cast<const C*>(uf.device_ptr()),
                                                                      static_cast<const C*>(gf.device_ptr()),
                                                                      static_cast<C*>(acc.device_ptr()), B, D, nh);
    check_launch("causal_conv_backward: dK spectrum");
    run_fft<T>(false, n, D, acc.device_ptr(), kx.device_ptr());
    extract_dk_kernel<T><<<blocks_for(S * D * Tn), 256, 0, stream()>>>(ptr<T>(kx), ptr<T>(g.dK), S, Tn, D, n, scale);
    check_launch("causal_conv_backward: dK");
  }
  if (need_u) {
    Tensor kf = kernel_spectra<T>(K, S, Tn, D, n);
    mul_spectrum_kernel<C><<<blocks_for(B * D * nh), 256, 0, stream()>>>(static_cast<C*>(gf.device_ptr()),
                                                                         static_cast<const C*>(kf.device_ptr()),
                                                                         B * D, D, nh, true);
    check_launch("causal_conv_backward: spectrum product");
    run_fft<T>(false, n, B * D, gf.device_ptr(), grows.device_ptr());
    unpad_transpose_kernel<T><<<tile_grid(Tn, D, B), dim3(32, 8), 0, stream()>>>(ptr<T>(grows), ptr<T>(g.du), B, Tn,
                                                                                 D, n, scale);
    check_launch("causal_conv_backward: unpad");
  }
  return g;
}

Tensor fft_forward_any(const Tensor& u, const Tensor& K, int64_t S) {
  return dispatch_float(u.dtype(), "causal_conv", [&]<typename T>() { return fft_forward<T>(u, K, S); });
}
ConvGrads fft_backward_any(const Tensor& dy, const Tensor& u, const Tensor& K, int64_t S, bool need_u, bool need_K) {
  return dispatch_float(u.dtype(), "causal_conv_backward",
                        [&]<typename T>() { return fft_backward<T>(dy, u, K, S, need_u, need_K); });
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Tensor causal_conv_direct_forward(const Tensor& u, const Tensor& K) {
  const int64_t S = check_causal_conv(u, K, "causal_conv");
  return direct_forward(u, K, S);
}

ConvGrads causal_conv_direct_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K) {
  const int64_t S = check_causal_conv(u, K, "causal_conv_backward");
  check_dy(dy, u, "causal_conv_backward");
  return direct_backward(dy, u, K, S, need_u, need_K);
}

Tensor causal_conv_fft_forward(const Tensor& u, const Tensor& K) {
  const int64_t S = check_causal_conv(u, K, "causal_conv_fft");
  check_causal_conv_fft(u);
  return fft_forward<float>(u, K, S);
}

ConvGrads causal_conv_fft_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K) {
  const int64_t S = check_causal_conv(u, K, "causal_conv_fft_backward");
  check_causal_conv_fft(u);
  check_dy(dy, u, "causal_conv_fft_backward");
  return fft_backward<float>(dy, u, K, S, need_u, need_K);
}

Tensor causal_conv_forward(const Tensor& u, const Tensor& K) {
  const int64_t S = check_causal_conv(u, K, "causal_conv");
  return u.size(1) <= kDirectMaxT ? direct_forward(u, K, S) : fft_forward_any(u, K, S);
}

ConvGrads causal_conv_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K) {
  const int64_t S = check_causal_conv(u, K, "causal_conv_backward");
  check_dy(dy, u, "causal_conv_backward");
  return u.size(1) <= kDirectMaxT ? direct_backward(dy, u, K, S, need_u, need_K)
                                  : fft_backward_any(dy, u, K, S, need_u, need_K);
}

}  // namespace seqlab::cuda
