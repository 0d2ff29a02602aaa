// S4D, S4 and LSSL on the device (core/cuda/ssm.h). Arithmetic is in double whatever the tensor dtype,
// as on the CPU; every sum runs in a fixed order (serial in one thread, or a warp's xor-shuffle tree,
// whose result is bit-identical in every lane), so a run is bit-identical to itself.
//
// S4D kernel: a small pass per (d, m) for dtA and 2 C'; then one thread per (s, d, l) adds the modes
//   in order with z^l = exp(l dtA) (the CPU builds z^l by repeated products: both drift ~l eps).
// S4D backward: one block per (d, m) sums over l (Sg, P: thread k takes l = k mod 128 with
//   z^l = exp(k dtA) times powers of exp(128 dtA); a fixed tree adds the threads), then one thread per d
//   adds the modes' dt terms in order.
// Skip + GELU, GLU, steps: one thread per element / (b, d, m); dD by column_reduce.cuh's tiled column
//   sums (a fixed order of its own, not the CPU's chunks).
// LSSL: one block per channel: the bilinear discretisation by Gauss-Jordan with partial pivoting (the
//   CPU's algorithm, rows parallel over threads), then the T powers (a thread per state row of dA x;
//   the output dot by thread 0 in the CPU's order); backward adds the tangent recurrence.
// S4: per channel (one warp, lanes over the M modes, xor-shuffle sums) the T transposed DPLR steps
//   (C dA^T; the backward keeps every state); per (d, frequency bin) one thread for the Cauchy sums +
//   Woodbury (and in backward the bin's cotangents, its sum over l of dK by a direct DFT); the kernel
//   by a direct inverse DFT, one thread per (d, l), bins in order; the backward's per-mode sums over
//   bins by one thread per (d, m); the reverse of the T steps again by one warp per channel.
// Channels are processed in chunks whose work areas stay under kWorkBytes.
#include "core/cuda/ssm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cuda/column_reduce.cuh"
#include "core/cuda/common.cuh"
#include "core/kernels/s4_check.h"
#include "core/kernels/s4d_check.h"

namespace seqlab::cuda {

using kernels::Discretised;
using kernels::HippoLegs;
using kernels::S4DKernelDims;

namespace {

constexpr size_t kWorkBytes = size_t{512} << 20;  // work area of one chunk of channels
constexpr double kPi = 3.14159265358979323846;

// ---------------------------------------------------------------------------------------------
// Complex double on the device

struct cx {
  double re, im;
};
__device__ __forceinline__ cx operator+(cx a, cx b) { return {a.re + b.re, a.im + b.im}; }
__device__ __forceinline__ cx operator-(cx a, cx b) { return {a.re - b.re, a.im - b.im}; }
__device__ __forceinline__ cx operator-(cx a) { return {-a.re, -a.im}; }
__device__ __forceinline__ cx operator*(cx a, cx b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
__device__ __forceinline__ cx operator*(double s, cx a) { return {s * a.re, s * a.im}; }
__device__ __forceinline__ cx operator*(cx a, double s) { return {a.re * s, a.im * s}; }
__device__ __forceinline__ cx operator/(cx a, double s) { return {a.re / s, a.im / s}; }
__device__ __forceinline__ cx operator+(double s, cx a) { return {s + a.re, a.im}; }
__device__ __forceinline__ cx operator-(double s, cx a) { return {s - a.re, -a.im}; }
__device__ __forceinline__ cx operator+(cx a, double s) { return {a.re + s, a.im}; }
__device__ __forceinline__ cx operator-(cx a, double s) { return {a.re - s, a.im}; }
__device__ __forceinline__ cx& operator+=(cx& a, cx b) {
  a = a + b;
  return a;
}
__device__ __forceinline__ cx& operator-=(cx& a, cx b) {
  a = a - b;
  return a;
}
__device__ __forceinline__ cx cconj(cx a) { return {a.re, -a.im}; }
__device__ __forceinline__ double cnorm(cx a) { return a.re * a.re + a.im * a.im; }
__device__ __forceinline__ cx crecip(cx b) {  // 1 / b
  const double den = b.re * b.re + b.im * b.im;
  return {b.re / den, -b.im / den};
}
__device__ __forceinline__ cx cdiv(cx a, cx b) {  // a conj(b) / |b|^2, as the CPU's cdiv
  const double den = b.re * b.re + b.im * b.im;
  return (a * cconj(b)) / den;
}
__device__ __forceinline__ cx cexp_(cx x) {
  const double r = exp(x.re);
  double s, c;
  sincos(x.im, &s, &c);
  return {r * c, r * s};
}

// The xor-shuffle sum over a warp: every lane gets the same bits (each step adds a pair both ways).
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float dev_erf(float x) { return erff(x); }
__device__ __forceinline__ double dev_erf(double x) { return erf(x); }
__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }

template <typename T>
__device__ __forceinline__ T sigmoid_of(T v) {  // as vmath::sigmoid_of
  const T e = dev_exp(-fabs(v));
  const T r = T(1) / (T(1) + e);
  return v >= T(0) ? r : e * r;
}

// Channels per chunk so that per-channel work of `per_channel` bytes stays under kWorkBytes.
int64_t chunk_channels(int64_t D, size_t per_channel) {
  const auto fit = static_cast<int64_t>(kWorkBytes / std::max<size_t>(1, per_channel));
  return std::max<int64_t>(1, std::min<int64_t>(D, fit));
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::max<int64_t>(1, n)); }

// The per-block vectors of the LSSL and S4 step kernels live in shared memory (48 KiB without opt-in).
void check_shared(size_t bytes, const char* op, int64_t N) {
  SEQLAB_CHECK(bytes <= 48 * 1024, op, ": the device path keeps its state vectors in shared memory, which holds ",
               "N <= 512 (LSSL) / 1536 (S4 step) states; got N = ", N);
}

// =============================================================================================
// S4D

struct Mode {
  cx A, z, q;
  double dt;
};
template <typename T>
__device__ Mode mode_of(const T* log_dt, const T* lar, const T* ai, int64_t d, int64_t M, int64_t m) {
  Mode md;
  md.dt = exp(static_cast<double>(log_dt[d]));
  md.A = {-exp(static_cast<double>(lar[d * M + m])), static_cast<double>(ai[d * M + m])};
  md.z = cexp_(md.A * md.dt);
  md.q = cdiv(md.z - 1.0, md.A);
  return md;
}

// dtA (D, M) and cp = 2 C' (S, D, M)
template <typename T>
__global__ void s4d_modes_kernel(const T* log_dt, const T* lar, const T* ai, const T* C, cx* dtA, cx* cp, int64_t S,
                                 int64_t D, int64_t M) {
  SEQLAB_CUDA_LOOP(i, D * M) {
    const int64_t d = i / M, m = i % M;
    const Mode md = mode_of(log_dt, lar, ai, d, M, m);
    dtA[i] = md.A * md.dt;
    for (int64_t s = 0; s < S; ++s) {
      const T* c = C + ((s * D + d) * M + m) * 2;
      cp[(s * D + d) * M + m] = 2.0 * (cx{static_cast<double>(c[0]), static_cast<double>(c[1])} * md.q);
    }
  }
}

// K[s, d, l] = sum_m Re(cp[s, d, m] exp(l dtA[d, m])), modes in order
template <typename T>
__global__ void s4d_vandermonde_kernel(const cx* dtA, const cx* cp, T* K, int64_t S, int64_t D, int64_t M,
                                       int64_t Tn) {
  SEQLAB_CUDA_LOOP(i, S * D * Tn) {
    const int64_t l = i % Tn, sd = i / Tn, d = sd % D;
    const double fl = static_cast<double>(l);
    double acc = 0;
    for (int64_t m = 0; m < M; ++m) {
      const cx a = dtA[d * M + m], c = cp[sd * M + m];
      const double e = exp(fl * a.re);
      double sn, cs;
      sincos(fl * a.im, &sn, &cs);
      acc += c.re * (e * cs) - c.im * (e * sn);
    }
    K[i] = static_cast<T>(acc);
  }
}

// One block of kGradThreads threads per (d, m): Sg = sum_l G[l] z^l and P = sum_l G[l+1] (l+1) z^l.
// Thread k takes l = k, k + kGradThreads, ... with z^k = exp(k dtA) and a step of
// z^kGradThreads = exp(kGradThreads dtA) (about T / kGradThreads repeated products each, where the
// CPU runs one chain of T); the threads' sums are added by a fixed tree in shared memory. Thread 0 then
// forms dC, dlog_A_real, dA_imag and the mode's share of dL/d(dt). Session 15's profile of an S4D step
// at T = 2880 found the old one-thread-per-(d, m) chain (2,048 threads, 2880 serial steps each) at
// 0.4 ms a launch.
constexpr int kGradThreads = 128;
template <typename T>
__global__ void __launch_bounds__(kGradThreads)
    s4d_kernel_grad_kernel(const T* G, const T* log_dt, const T* lar, const T* ai, const T* C, T* gc, T* glar,
                           T* gai, double* ddt_part, int64_t S, int64_t D, int64_t M, int64_t Tn) {
  __shared__ double red[8][kGradThreads];  // Sg[s].re, Sg[s].im, P[s].re, P[s].im for s < 2
  const int k = threadIdx.x;
  for (int64_t i = blockIdx.x; i < D * M; i += gridDim.x) {
    const int64_t d = i / M, m = i % M;
    const Mode md = mode_of(log_dt, lar, ai, d, M, m);
    const cx dtA = md.A * md.dt;
    cx w = cexp_(dtA * static_cast<double>(k));
    const cx step = cexp_(dtA * static_cast<double>(kGradThreads));
    cx Sg[2] = {{0, 0}, {0, 0}}, P[2] = {{0, 0}, {0, 0}};
    for (int64_t l = k; l < Tn; l += kGradThreads) {
      for (int64_t s = 0; s < S; ++s) {
        const T* g = G + (s * D + d) * Tn;
        const double gl = static_cast<double>(g[l]);
        const double gp = (l + 1 < Tn ? static_cast<double>(g[l + 1]) : 0.0) * static_cast<double>(l + 1);
        Sg[s].re += gl * w.re;
        Sg[s].im += gl * w.im;
        P[s].re += gp * w.re;
        P[s].im += gp * w.im;
      }
      w = w * step;
    }
    for (int s = 0; s < 2; ++s) {
      red[4 * s][k] = Sg[s].re;
      red[4 * s + 1][k] = Sg[s].im;
      red[4 * s + 2][k] = P[s].re;
      red[4 * s + 3][k] = P[s].im;
    }
    __syncthreads();
    for (int half = kGradThreads / 2; half > 0; half /= 2) {
      if (k < half)
        for (int q = 0; q < 8; ++q) red[q][k] += red[q][k + half];
      __syncthreads();
    }
    if (k == 0) {
      for (int s = 0; s < 2; ++s) {
        Sg[s] = {red[4 * s][0], red[4 * s + 1][0]};
        P[s] = {red[4 * s + 2][0], red[4 * s + 3][0]};
      }
      const cx dqdA = cdiv(md.dt * md.z - md.q, md.A);
      cx dFdA{0, 0}, dFdt{0, 0};
      for (int64_t s = 0; s < S; ++s) {
        const T* c = C + ((s * D + d) * M + m) * 2;
        const cx cs{static_cast<double>(c[0]), static_cast<double>(c[1])};
        const cx dFdc = 2.0 * (md.q * Sg[s]);
        T* gcs = gc + ((s * D + d) * M + m) * 2;
        gcs[0] = static_cast<T>(dFdc.re);
        gcs[1] = static_cast<T>(-dFdc.im);
        const cx qPz = (md.q * P[s]) * md.z;
        dFdA += 2.0 * (cs * (dqdA * Sg[s] + md.dt * qPz));
        dFdt += 2.0 * (cs * (md.z * Sg[s] + qPz * md.A));
      }
      glar[i] = static_cast<T>(dFdA.re * md.A.re);
      gai[i] = static_cast<T>(-dFdA.im);
      ddt_part[i] = dFdt.re;
    }
    __syncthreads();  // red is reused by the block's next (d, m)
  }
}

template <typename T>
__global__ void s4d_dt_grad_kernel(const double* ddt_part, const T* log_dt, T* gdt, int64_t D, int64_t M) {
  SEQLAB_CUDA_LOOP(d, D) {
    double ddt = 0;
    for (int64_t m = 0; m < M; ++m) ddt += ddt_part[d * M + m];
    gdt[d] = static_cast<T>(ddt * exp(static_cast<double>(log_dt[d])));
  }
}

template <typename T>
__global__ void skip_gelu_kernel(const T* y, const T* u, const T* Dk, T* h, T* pre, int64_t n, int64_t D) {
  SEQLAB_CUDA_LOOP(i, n) {
    const T p = y[i] + u[i] * Dk[i % D];
    pre[i] = p;
    h[i] = T(0.5) * p * (T(1) + dev_erf(p * T(0.70710678118654752440)));
  }
}

template <typename T>
__global__ void skip_du_kernel(T* du, const T* g, const T* Dk, int64_t n, int64_t D) {
  SEQLAB_CUDA_LOOP(i, n) du[i] += g[i] * Dk[i % D];
}

// dD's column terms: double(g x) of row r, channel j (summed by column_reduce.cuh's tiles)
template <typename T>
struct SkipDDTerm {
  const T* __restrict__ g;
  const T* __restrict__ x;
  int64_t D;
  __device__ void operator()(int64_t r, int64_t j, double* acc) const {
    acc[0] += static_cast<double>(g[r * D + j] * x[r * D + j]);
  }
};

template <typename T>
__global__ void glu_forward_kernel(const T* z, T* out, int64_t R, int64_t D) {
  SEQLAB_CUDA_LOOP(i, R * D) {
    const int64_t r = i / D, d = i % D;
    const T* a = z + r * 2 * D;
    out[i] = a[d] * sigmoid_of(a[D + d]);
  }
}

template <typename T>
__global__ void glu_backward_kernel(const T* g, const T* z, T* dz, int64_t R, int64_t D) {
  SEQLAB_CUDA_LOOP(i, R * D) {
    const int64_t r = i / D, d = i % D;
    const T* a = z + r * 2 * D;
    T* da = dz + r * 2 * D;
    const T s = sigmoid_of(a[D + d]);
    da[d] = g[i] * s;
    da[D + d] = g[i] * a[d] * s * (T(1) - s);
  }
}

// s = exp(dtA) s + q u, one thread per (b, d, m)
template <typename T>
__global__ void s4d_step_state_kernel(const T* u, T* state, const T* log_dt, const T* lar, const T* ai, int64_t B,
                                      int64_t D, int64_t M) {
  SEQLAB_CUDA_LOOP(i, B * D * M) {
    const int64_t m = i % M, d = (i / M) % D, b = i / (M * D);
    const Mode md = mode_of(log_dt, lar, ai, d, M, m);
    T* s = state + i * 2;
    const double ub = static_cast<double>(u[b * D + d]);
    const cx sn = md.z * cx{static_cast<double>(s[0]), static_cast<double>(s[1])} + md.q * ub;
    s[0] = static_cast<T>(sn.re);
    s[1] = static_cast<T>(sn.im);
  }
}

// y = 2 Re(sum_m C s) + D u, modes in order, one thread per (b, d)
template <typename T>
__global__ void s4d_step_out_kernel(const T* u, const T* state, const T* C, const T* Dk, T* y, int64_t B, int64_t D,
                                    int64_t M) {
  SEQLAB_CUDA_LOOP(i, B * D) {
    const int64_t d = i % D;
    double acc = 0;
    for (int64_t m = 0; m < M; ++m) {
      const T* s = state + (i * M + m) * 2;
      const T* c = C + (d * M + m) * 2;
      acc += 2.0 * (static_cast<double>(c[0]) * s[0] - static_cast<double>(c[1]) * s[1]);
    }
    y[i] = static_cast<T>(acc + static_cast<double>(Dk[d]) * u[i]);
  }
}

// =============================================================================================
// LSSL

// The HiPPO matrices on the device (float64).
struct HippoDev {
  Tensor A, B;
};
HippoDev upload(const HippoLegs& hp) {
  return {Tensor::from_vector(hp.A, {hp.N, hp.N}, DType::f64, Device::cuda),
          Tensor::from_vector(hp.B, {hp.N}, DType::f64, Device::cuda)};
}

// In-place Gauss-Jordan inverse with partial pivoting by the whole block (the CPU's order of
// operations for every element). a is destroyed; f: N doubles of shared memory.
__device__ void block_invert(int64_t N, double* a, double* inv, double* f, int* piv_sh) {
  const int64_t tid = threadIdx.x, nt = blockDim.x;
  for (int64_t i = tid; i < N * N; i += nt) inv[i] = (i / N == i % N) ? 1.0 : 0.0;
  __syncthreads();
  for (int64_t col = 0; col < N; ++col) {
    if (tid == 0) {
      int64_t piv = col;
      for (int64_t r = col + 1; r < N; ++r)
        if (fabs(a[r * N + col]) > fabs(a[piv * N + col])) piv = r;
      *piv_sh = static_cast<int>(piv);
    }
    __syncthreads();
    const int64_t piv = *piv_sh;
    if (piv != col)
      for (int64_t k = tid; k < N; k += nt) {
        double t = a[col * N + k];
        a[col * N + k] = a[piv * N + k];
        a[piv * N + k] = t;
        t = inv[col * N + k];
        inv[col * N + k] = inv[piv * N + k];
        inv[piv * N + k] = t;
      }
    __syncthreads();
    const double ip = 1.0 / a[col * N + col];
    __syncthreads();
    for (int64_t k = tid; k < N; k += nt) {
      a[col * N + k] *= ip;
      inv[col * N + k] *= ip;
    }
    __syncthreads();
    for (int64_t r = tid; r < N; r += nt) f[r] = a[r * N + col];
    __syncthreads();
    for (int64_t i = tid; i < N * N; i += nt) {
      const int64_t r = i / N, k = i % N;
      const double fr = f[r];
      if (r == col || fr == 0.0) continue;
      a[i] -= fr * a[col * N + k];
      inv[i] -= fr * inv[col * N + k];
    }
    __syncthreads();
  }
}

// out = a b (N x N), every element's sum in k order; a scaled by sa on the fly. Ends with a barrier.
__device__ void block_matmul(int64_t N, const double* a, double sa, const double* b, double* out) {
  for (int64_t i = threadIdx.x; i < N * N; i += blockDim.x) {
    const int64_t r = i / N, c = i % N;
    double acc = 0;
    for (int64_t k = 0; k < N; ++k) acc += (sa * a[r * N + k]) * b[k * N + c];
    out[i] = acc;
  }
  __syncthreads();
}

// One channel's bilinear discretisation (LsslWork::setup): inv = (I - h A)^-1, dA = inv (I + h A),
// dB = dt inv B. R1 is scratch. Ends with a barrier.
__device__ void lssl_setup_block(int64_t N, const double* A, const double* Bv, double dt, double* R1, double* inv,
                                 double* dA, double* dB, double* f, int* piv_sh) {
  const int64_t tid = threadIdx.x, nt = blockDim.x;
  const double h = dt / 2;
  for (int64_t i = tid; i < N * N; i += nt) R1[i] = -h * A[i] + ((i / N == i % N) ? 1.0 : 0.0);
  __syncthreads();
  block_invert(N, R1, inv, f, piv_sh);
  for (int64_t i = tid; i < N * N; i += nt) R1[i] = h * A[i] + ((i / N == i % N) ? 1.0 : 0.0);
  __syncthreads();
  block_matmul(N, inv, 1.0, R1, dA);
  for (int64_t i = tid; i < N; i += nt) {
    double v = 0;
    for (int64_t j = 0; j < N; ++j) v += inv[i * N + j] * Bv[j];
    dB[i] = v * dt;
  }
  __syncthreads();
}

// Work of one channel: R1, inv, dA (N x N), dB (N) [, dAd (N x N)]
__device__ double* channel_work(double* work, int64_t N, int64_t mats) {
  return work + static_cast<int64_t>(blockIdx.x) * (mats * N * N + N);
}

constexpr int kLsslThreads = 256;

// K[d, l] = C dA^l dB; block per channel of the chunk starting at d0. Shared: x, xn, c, f (4 N doubles).
template <typename T>
__global__ void lssl_kernel_fwd_kernel(const T* log_dt, const T* C, const double* A, const double* Bv, T* K,
                                       double* work, int64_t d0, int64_t N, int64_t Tn) {
  extern __shared__ double sh[];
  __shared__ int piv_sh;
  double *x = sh, *xn = sh + N, *cc = sh + 2 * N, *f = sh + 3 * N;
  const int64_t d = d0 + blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
  double* R1 = channel_work(work, N, 3);
  double *inv = R1 + N * N, *dA = inv + N * N, *dB = dA + N * N;
  const double dt = exp(static_cast<double>(log_dt[d]));
  lssl_setup_block(N, A, Bv, dt, R1, inv, dA, dB, f, &piv_sh);
  for (int64_t n = tid; n < N; n += nt) {
    cc[n] = static_cast<double>(C[d * N + n]);
    x[n] = dB[n];
  }
  __syncthreads();
  for (int64_t l = 0; l < Tn; ++l) {
    if (tid == 0) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += cc[n] * x[n];
      K[d * Tn + l] = static_cast<T>(acc);
    }
    if (l + 1 < Tn) {
      for (int64_t n = tid; n < N; n += nt) {
        double v = 0;
        for (int64_t k = 0; k < N; ++k) v += dA[n * N + k] * x[k];
        xn[n] = v;
      }
      __syncthreads();
      double* t = x;
      x = xn;
      xn = t;
    }
  }
}

// dC = sum_l G_l x_l, dlog_dt by tangents (the CPU's lssl_kernel_backward). Shared: x, xn, xd, xdn, c, dc, f.
template <typename T>
__global__ void lssl_kernel_bwd_kernel(const T* G, const T* log_dt, const T* C, const double* A, const double* Bv,
                                       T* gdt, T* gc, double* work, int64_t d0, int64_t N, int64_t Tn) {
  extern __shared__ double sh[];
  __shared__ int piv_sh;
  double *x = sh, *xn = sh + N, *xd = sh + 2 * N, *xdn = sh + 3 * N, *cc = sh + 4 * N, *dc = sh + 5 * N,
         *f = sh + 6 * N;
  const int64_t d = d0 + blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
  double* R1 = channel_work(work, N, 4);
  double *inv = R1 + N * N, *dA = inv + N * N, *dB = dA + N * N, *tmp = dB + N;
  const double dt = exp(static_cast<double>(log_dt[d]));
  lssl_setup_block(N, A, Bv, dt, R1, inv, dA, dB, f, &piv_sh);
  // dAd = inv (A/2 (I + dA)), into R1
  for (int64_t i = tid; i < N * N; i += nt) R1[i] = dA[i] + ((i / N == i % N) ? 1.0 : 0.0);
  __syncthreads();
  block_matmul(N, A, 0.5, R1, tmp);
  block_matmul(N, inv, 1.0, tmp, R1);
  const double* dAd = R1;
  // xd_0 = inv (A/2 dB + B)
  for (int64_t n = tid; n < N; n += nt) {
    double v = 0;
    for (int64_t k = 0; k < N; ++k) v += (0.5 * A[n * N + k]) * dB[k];
    xn[n] = v + Bv[n];
  }
  __syncthreads();
  for (int64_t n = tid; n < N; n += nt) {
    double v = 0;
    for (int64_t k = 0; k < N; ++k) v += inv[n * N + k] * xn[k];
    xd[n] = v;
    cc[n] = static_cast<double>(C[d * N + n]);
    dc[n] = 0;
    x[n] = dB[n];
  }
  __syncthreads();
  double ddt = 0;  // thread 0's
  for (int64_t l = 0; l < Tn; ++l) {
    const double gl = static_cast<double>(G[d * Tn + l]);
    for (int64_t n = tid; n < N; n += nt) dc[n] += gl * x[n];
    if (tid == 0) {
      double cxd = 0;
      for (int64_t n = 0; n < N; ++n) cxd += cc[n] * xd[n];
      ddt += gl * cxd;
    }
    if (l + 1 < Tn) {
      for (int64_t n = tid; n < N; n += nt) {
        double v1 = 0, v2 = 0, v3 = 0;
        for (int64_t k = 0; k < N; ++k) v1 += dA[n * N + k] * xd[k];
        for (int64_t k = 0; k < N; ++k) v2 += dAd[n * N + k] * x[k];
        for (int64_t k = 0; k < N; ++k) v3 += dA[n * N + k] * x[k];
        xdn[n] = v1 + v2;
        xn[n] = v3;
      }
      __syncthreads();
      double* t = x;
      x = xn;
      xn = t;
      t = xd;
      xd = xdn;
      xdn = t;
    }
  }
  __syncthreads();
  for (int64_t n = tid; n < N; n += nt) gc[d * N + n] = static_cast<T>(dc[n]);
  if (tid == 0) gdt[d] = static_cast<T>(ddt * dt);
}

// dA, dB of each channel of the chunk, converted to T.
template <typename T>
__global__ void lssl_discretise_kernel(const T* log_dt, const double* A, const double* Bv, T* out_dA, T* out_dB,
                                       double* work, int64_t d0, int64_t N) {
  extern __shared__ double sh[];
  __shared__ int piv_sh;
  const int64_t d = d0 + blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
  double* R1 = channel_work(work, N, 3);
  double *inv = R1 + N * N, *dA = inv + N * N, *dB = dA + N * N;
  lssl_setup_block(N, A, Bv, exp(static_cast<double>(log_dt[d])), R1, inv, dA, dB, sh, &piv_sh);
  for (int64_t i = tid; i < N * N; i += nt) out_dA[d * N * N + i] = static_cast<T>(dA[i]);
  for (int64_t i = tid; i < N; i += nt) out_dB[d * N + i] = static_cast<T>(dB[i]);
}

// x = dA x + dB u; y = C x + D u. Block per (b, d), shared xn (N doubles).
template <typename T>
__global__ void lssl_step_kernel(const T* u, T* state, const T* dA, const T* dB, const T* C, const T* Dk, T* y,
                                 int64_t D, int64_t N) {
  extern __shared__ double sh[];
  const int64_t i = blockIdx.x, d = i % D, tid = threadIdx.x, nt = blockDim.x;
  T* s = state + i * N;
  const double uv = static_cast<double>(u[i]);
  for (int64_t n = tid; n < N; n += nt) {
    double v = static_cast<double>(dB[d * N + n]) * uv;
    const T* row = dA + (d * N + n) * N;
    for (int64_t k = 0; k < N; ++k) v += static_cast<double>(row[k]) * static_cast<double>(s[k]);
    sh[n] = v;
  }
  __syncthreads();
  for (int64_t n = tid; n < N; n += nt) s[n] = static_cast<T>(sh[n]);
  if (tid == 0) {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += static_cast<double>(C[d * N + n]) * sh[n];
    y[i] = static_cast<T>(acc + static_cast<double>(Dk[d]) * uv);
  }
}

// x = dA x + dB u (complex, all N states), y = Re(C_full x) + D u. Block per (b, d), shared x, xn.
template <typename T>
__global__ void s4_step_kernel(const T* u, T* state, const T* dA, const T* dB, const T* C, const T* Dk, T* y,
                               int64_t D, int64_t N) {
  extern __shared__ double sh[];
  cx* x = reinterpret_cast<cx*>(sh);
  cx* xn = x + N;
  const int64_t i = blockIdx.x, d = i % D, tid = threadIdx.x, nt = blockDim.x, M = N / 2;
  T* s = state + i * N * 2;
  const double uv = static_cast<double>(u[i]);
  for (int64_t n = tid; n < N; n += nt) x[n] = {static_cast<double>(s[2 * n]), static_cast<double>(s[2 * n + 1])};
  __syncthreads();
  const T *pa = dA + d * N * N * 2, *pb = dB + d * N * 2;
  for (int64_t r = tid; r < N; r += nt) {
    cx v = cx{static_cast<double>(pb[2 * r]), static_cast<double>(pb[2 * r + 1])} * uv;
    for (int64_t j = 0; j < N; ++j)
      v += cx{static_cast<double>(pa[(r * N + j) * 2]), static_cast<double>(pa[(r * N + j) * 2 + 1])} * x[j];
    xn[r] = v;
  }
  __syncthreads();
  for (int64_t n = tid; n < N; n += nt) {
    s[2 * n] = static_cast<T>(xn[n].re);
    s[2 * n + 1] = static_cast<T>(xn[n].im);
  }
  if (tid == 0) {
    const T* pc = C + d * M * 2;
    double acc = 0;
    for (int64_t r = 0; r < N; ++r) {
      const cx c = r < M ? cx{static_cast<double>(pc[2 * r]), static_cast<double>(pc[2 * r + 1])}
                         : cx{static_cast<double>(pc[2 * (r - M)]), -static_cast<double>(pc[2 * (r - M) + 1])};
      acc += (c * xn[r]).re;
    }
    y[i] = static_cast<T>(acc + static_cast<double>(Dk[d]) * uv);
  }
}

// =============================================================================================
// S4

// Per-channel arrays of a chunk of nc channels, in one float64 tensor: scalars (nc, 4) = dt, h, kappa, c;
// then complex (nc, M) arrays; then per-bin arrays (nc, nf); then the states (nc, T + 1, M).
struct S4Work {
  double* scal;
  cx *lam, *P, *B, *C, *inv1, *e, *Ct, *X;       // constants, C~, the running state (forward)
  cx *Ctb, *Bb, *Pb, *lamb, *eb, *inv1b, *xb;    // cotangents (backward)
  cx* bins;                                       // forward: Fw (nc, nf); backward: 6 per bin (nc, nf, 6)
  double* dtbk;                                   // backward: (nc, nf)
  cx* xs;                                         // backward: (nc, T + 1, M)
};

size_t s4_work_doubles(int64_t M, int64_t Tn, int64_t nf, bool backward) {
  size_t v = 4 + 2 * 8 * static_cast<size_t>(M);
  if (!backward) return v + 2 * static_cast<size_t>(nf);
  return v + 2 * 7 * static_cast<size_t>(M) + 2 * 6 * static_cast<size_t>(nf) + static_cast<size_t>(nf) +
         2 * static_cast<size_t>((Tn + 1) * M);
}

S4Work s4_work(double* base, int64_t nc, int64_t M, int64_t Tn, int64_t nf, bool backward) {
  S4Work w{};
  double* p = base;
  auto take = [&](int64_t doubles) {
    double* r = p;
    p += doubles;
    return r;
  };
  auto takec = [&](int64_t n) { return reinterpret_cast<cx*>(take(2 * n)); };
  w.scal = take(4 * nc);
  w.lam = takec(nc * M), w.P = takec(nc * M), w.B = takec(nc * M), w.C = takec(nc * M);
  w.inv1 = takec(nc * M), w.e = takec(nc * M), w.Ct = takec(nc * M), w.X = takec(nc * M);
  if (!backward) {
    w.bins = takec(nc * nf);
    return w;
  }
  w.Ctb = takec(nc * M), w.Bb = takec(nc * M), w.Pb = takec(nc * M), w.lamb = takec(nc * M);
  w.eb = takec(nc * M), w.inv1b = takec(nc * M), w.xb = takec(nc * M);
  w.bins = takec(nc * nf * 6);
  w.dtbk = take(nc * nf);
  w.xs = takec(nc * (Tn + 1) * M);
  return w;
}

// E[j] = exp(2 pi i j / L)
__global__ void roots_kernel(cx* E, int64_t L) {
  SEQLAB_CUDA_LOOP(j, L) {
    const double a = 2.0 * kPi * static_cast<double>(j) / static_cast<double>(L);
    E[j] = {cos(a), sin(a)};
  }
}

__device__ __forceinline__ double dft_weight(int64_t k, int64_t L) {
  return (k == 0 || (L % 2 == 0 && 2 * k == L)) ? 1.0 : 2.0;
}

// S4Chan::load, one thread per channel of the chunk (modes in order, as the CPU's kappa).
template <typename T>
__global__ void s4_load_kernel(const T* pdt, const T* plar, const T* pai, const T* pp, const T* pb, const T* pc,
                               S4Work w, int64_t d0, int64_t nc, int64_t M) {
  SEQLAB_CUDA_LOOP(c, nc) {
    const int64_t d = d0 + c;
    const double dt = exp(static_cast<double>(pdt[d])), h = dt / 2;
    double kappa = 0;
    for (int64_t m = 0; m < M; ++m) {
      const int64_t i = d * M + m, j = c * M + m;
      const cx lam{-exp(static_cast<double>(plar[i])), static_cast<double>(pai[i])};
      const cx P{static_cast<double>(pp[2 * i]), static_cast<double>(pp[2 * i + 1])};
      w.lam[j] = lam;
      w.P[j] = P;
      w.B[j] = {static_cast<double>(pb[2 * i]), static_cast<double>(pb[2 * i + 1])};
      w.C[j] = {static_cast<double>(pc[2 * i]), static_cast<double>(pc[2 * i + 1])};
      const cx inv1 = crecip(1.0 - h * lam);
      w.inv1[j] = inv1;
      w.e[j] = cconj(P) * inv1;
      kappa += 2 * cnorm(P) * inv1.re;
    }
    double* s = w.scal + c * 4;
    s[0] = dt;
    s[1] = h;
    s[2] = kappa;
    s[3] = h / (1 + h * kappa);
  }
}

// The T transposed steps x <- x dA from x_0 = C, one warp per channel (lanes over modes); C~ = C - x_T.
// keep: every state into w.xs (backward), else in place in w.X.
__global__ void s4_power_kernel(S4Work w, int64_t M, int64_t Tn, bool keep) {
  const int64_t c = blockIdx.x;
  const int lane = threadIdx.x;
  const double h = w.scal[c * 4 + 1], cc = w.scal[c * 4 + 3];
  const cx *lam = w.lam + c * M, *P = w.P + c * M, *inv1 = w.inv1 + c * M, *e = w.e + c * M, *C = w.C + c * M;
  cx* base = keep ? w.xs + c * (Tn + 1) * M : w.X + c * M;
  for (int64_t m = lane; m < M; m += 32) base[m] = C[m];
  for (int64_t l = 0; l < Tn; ++l) {
    const cx* x = keep ? base + l * M : base;
    cx* out = keep ? base + (l + 1) * M : base;
    double p = 0;
    for (int64_t m = lane; m < M; m += 32) p += 2 * (P[m] * x[m]).re;
    const double s1 = warp_sum(p);
    p = 0;
    for (int64_t m = lane; m < M; m += 32) {
      const cx y = x[m] + h * (lam[m] * x[m] - cconj(P[m]) * s1);
      const cx q = y * inv1[m];
      out[m] = q;
      p += 2 * (P[m] * q).re;
    }
    const double s2 = warp_sum(p);
    for (int64_t m = lane; m < M; m += 32) out[m] = out[m] - e[m] * (cc * s2);
  }
  const cx* last = keep ? base + Tn * M : base;
  for (int64_t m = lane; m < M; m += 32) w.Ct[c * M + m] = C[m] - last[m];
}

struct BinSums {
  cx alpha, beta, r00, r01, r10, r11, tau, F;
};
// cauchy_bin of the CPU for channel c at z.
__device__ BinSums cauchy_bin(const S4Work& w, int64_t c, int64_t M, cx z) {
  BinSums b;
  const double dt = w.scal[c * 4];
  b.alpha = (2.0 / dt) * (1.0 - z);
  b.beta = 1.0 + z;
  b.r00 = b.r01 = b.r10 = b.r11 = cx{0, 0};
  for (int64_t m = 0; m < M; ++m) {
    const int64_t j = c * M + m;
    const cx lam = w.lam[j], P = w.P[j], B = w.B[j], Ct = w.Ct[j];
    const cx id = crecip(b.alpha - b.beta * lam), idc = crecip(b.alpha - b.beta * cconj(lam));
    const cx n00 = Ct * B, n01 = Ct * P, n10 = cconj(P) * B;
    const double n11 = cnorm(P);
    b.r00 += n00 * id + cconj(n00) * idc;
    b.r01 += n01 * id + cconj(n01) * idc;
    b.r10 += n10 * id + cconj(n10) * idc;
    b.r11 += n11 * (id + idc);
  }
  b.tau = crecip(1.0 + b.beta * b.r11);
  b.F = 2.0 * (b.r00 - ((b.beta * b.r01) * b.r10) * b.tau);
  return b;
}

// Fw[c, k] = k(z_k) w_k / T, one thread per (c, bin)
__global__ void s4_bins_fwd_kernel(S4Work w, const cx* E, int64_t nc, int64_t M, int64_t Tn, int64_t nf) {
  SEQLAB_CUDA_LOOP(i, nc * nf) {
    const int64_t c = i / nf, k = i % nf;
    const BinSums b = cauchy_bin(w, c, M, cconj(E[k]));
    w.bins[i] = b.F * (dft_weight(k, Tn) / static_cast<double>(Tn));
  }
}

// K[d, l] = sum_k Re(Fw_k E[k l]), bins in order, one thread per (c, l)
template <typename T>
__global__ void s4_idft_kernel(S4Work w, const cx* E, T* K, int64_t d0, int64_t nc, int64_t Tn, int64_t nf) {
  SEQLAB_CUDA_LOOP(i, nc * Tn) {
    const int64_t c = i / Tn, l = i % Tn;
    const cx* Fw = w.bins + c * nf;
    double acc = 0;
    for (int64_t k = 0, j = 0; k < nf; ++k) {  // j = k l mod T
      acc += Fw[k].re * E[j].re - Fw[k].im * E[j].im;
      j += l;
      if (j >= Tn) j -= Tn;
    }
    K[(d0 + c) * Tn + l] = static_cast<T>(acc);
  }
}

// rho cotangent of one term (the CPU's `term`): accumulates denb, dencb, returns nbar.
__device__ __forceinline__ cx bin_term(cx rb, cx n, cx i1, cx i2, cx& denb, cx& dencb) {
  denb -= rb * cconj((n * i1) * i1);
  dencb -= (rb * n) * cconj(i2 * i2);
  return rb * cconj(i1) + cconj(rb) * i2;
}

// Backward, one thread per (c, bin): Fbar_k (a DFT of dK), the bin's sums, the cotangents of
// r00, r01, r10, r11 (kept with alpha, beta for the per-mode pass) and the bin's share of dL/d(dt).
template <typename T>
__global__ void s4_bins_bwd_kernel(S4Work w, const cx* E, const T* G, int64_t d0, int64_t nc, int64_t M, int64_t Tn,
                                   int64_t nf) {
  SEQLAB_CUDA_LOOP(i, nc * nf) {
    const int64_t c = i / nf, k = i % nf;
    const T* g = G + (d0 + c) * Tn;
    cx Fb{0, 0};
    for (int64_t l = 0, j = 0; l < Tn; ++l) {  // j = k l mod T (k < T)
      Fb += static_cast<double>(g[l]) * cconj(E[j]);
      j += k;
      if (j >= Tn) j -= Tn;
    }
    Fb = Fb * (dft_weight(k, Tn) / static_cast<double>(Tn));
    const BinSums b = cauchy_bin(w, c, M, cconj(E[k]));
    const cx bt = b.beta;
    const cx r00b = 2.0 * Fb;
    const cx r01b = (-2.0 * Fb) * cconj((bt * b.r10) * b.tau);
    const cx r10b = (-2.0 * Fb) * cconj((bt * b.r01) * b.tau);
    const cx taub = (-2.0 * Fb) * cconj((bt * b.r01) * b.r10);
    const cx r11b = (-taub * cconj(b.tau * b.tau)) * cconj(bt);
    cx alphab{0, 0};
    for (int64_t m = 0; m < M; ++m) {
      const int64_t j = c * M + m;
      const cx lam = w.lam[j], P = w.P[j], B = w.B[j], Ct = w.Ct[j];
      const cx i1 = crecip(b.alpha - b.beta * lam), i2 = crecip(b.alpha - b.beta * cconj(lam));
      const cx n00 = Ct * B, n01 = Ct * P, n10 = cconj(P) * B, n11{cnorm(P), 0.0};
      cx denb{0, 0}, dencb{0, 0};
      bin_term(r00b, n00, i1, i2, denb, dencb);
      bin_term(r01b, n01, i1, i2, denb, dencb);
      bin_term(r10b, n10, i1, i2, denb, dencb);
      bin_term(r11b, n11, i1, i2, denb, dencb);
      alphab += denb + dencb;
    }
    const double dt = w.scal[c * 4];
    w.dtbk[i] = (alphab * cconj((-b.alpha) / dt)).re;
    cx* keep = w.bins + i * 6;
    keep[0] = b.alpha;
    keep[1] = b.beta;
    keep[2] = r00b;
    keep[3] = r01b;
    keep[4] = r10b;
    keep[5] = r11b;
  }
}

// Backward, one thread per (c, m): the frequency part's sums over bins (in order) of Ctb, Bb, Pb, lamb.
__global__ void s4_modes_bwd_kernel(S4Work w, int64_t nc, int64_t M, int64_t nf) {
  SEQLAB_CUDA_LOOP(j, nc * M) {
    const int64_t c = j / M;
    const cx lam = w.lam[j], P = w.P[j], B = w.B[j], Ct = w.Ct[j];
    const cx n00 = Ct * B, n01 = Ct * P, n10 = cconj(P) * B, n11{cnorm(P), 0.0};
    cx Ctb{0, 0}, Bb{0, 0}, Pb{0, 0}, lamb{0, 0};
    for (int64_t k = 0; k < nf; ++k) {
      const cx* kb = w.bins + (c * nf + k) * 6;
      const cx alpha = kb[0], bt = kb[1];
      const cx i1 = crecip(alpha - bt * lam), i2 = crecip(alpha - bt * cconj(lam));
      cx denb{0, 0}, dencb{0, 0};
      const cx n00b = bin_term(kb[2], n00, i1, i2, denb, dencb);
      const cx n01b = bin_term(kb[3], n01, i1, i2, denb, dencb);
      const cx n10b = bin_term(kb[4], n10, i1, i2, denb, dencb);
      const cx n11b = bin_term(kb[5], n11, i1, i2, denb, dencb);
      Ctb += n00b * cconj(B) + n01b * cconj(P);
      Bb += n00b * cconj(Ct) + n10b * P;
      Pb += n01b * cconj(Ct) + cconj(n10b) * B + (2.0 * n11b.re) * P;
      lamb += (-denb) * cconj(bt) - cconj(dencb) * bt;
    }
    w.Ctb[j] = Ctb;
    w.Bb[j] = Bb;
    w.Pb[j] = Pb;
    w.lamb[j] = lamb;
  }
}

// Backward, one warp per channel: C~ = C - C dA^T, the T transposed steps in reverse, the step
// constants, then every gradient of the channel (the CPU's second half of s4_kernel_backward).
template <typename T>
__global__ void s4_reverse_kernel(S4Work w, int64_t d0, int64_t M, int64_t Tn, int64_t nf, T* gdt, T* glar, T* gai,
                                  T* gp, T* gb, T* gc) {
  const int64_t c = blockIdx.x, d = d0 + c;
  const int lane = threadIdx.x;
  const double dt = w.scal[c * 4], h = w.scal[c * 4 + 1], kappa = w.scal[c * 4 + 2], cc = w.scal[c * 4 + 3];
  const int64_t o = c * M;
  const cx *lam = w.lam + o, *P = w.P + o, *inv1 = w.inv1 + o, *e = w.e + o;
  cx *Ctb = w.Ctb + o, *Pb = w.Pb + o, *lamb = w.lamb + o, *eb = w.eb + o, *inv1b = w.inv1b + o, *xb = w.xb + o;
  const cx* xs = w.xs + c * (Tn + 1) * M;
  for (int64_t m = lane; m < M; m += 32) {
    xb[m] = -Ctb[m];
    eb[m] = cx{0, 0};
    inv1b[m] = cx{0, 0};
  }
  double cb = 0, hbp = 0;  // cb: the same in every lane; hbp: this lane's share of hb
  for (int64_t l = Tn - 1; l >= 0; --l) {
    const cx* x = xs + l * M;
    double p = 0;
    for (int64_t m = lane; m < M; m += 32) p += 2 * (P[m] * x[m]).re;
    const double s1 = warp_sum(p);
    p = 0;
    for (int64_t m = lane; m < M; m += 32) {
      const cx y = x[m] + h * (lam[m] * x[m] - cconj(P[m]) * s1);
      const cx q = y * inv1[m];
      p += 2 * (P[m] * q).re;
    }
    const double s2 = warp_sum(p);
    p = 0;
    for (int64_t m = lane; m < M; m += 32) p += (xb[m] * cconj(e[m])).re;
    const double ve = warp_sum(p);
    cb += -s2 * ve;
    const double s2b = -cc * ve;
    p = 0;  // s1b
    for (int64_t m = lane; m < M; m += 32) {
      const cx y = x[m] + h * (lam[m] * x[m] - cconj(P[m]) * s1);
      const cx q = y * inv1[m];
      const cx xbm = xb[m];
      eb[m] += -(cc * s2) * xbm;
      const cx qb = xbm + (2 * s2b) * cconj(P[m]);
      Pb[m] += (2 * s2b) * cconj(q);
      const cx yb = qb * cconj(inv1[m]);
      inv1b[m] += qb * cconj(y);
      xb[m] = yb * cconj(1.0 + h * lam[m]);
      lamb[m] += (h * yb) * cconj(x[m]);
      hbp += (yb * cconj(lam[m] * x[m] - cconj(P[m]) * s1)).re;
      Pb[m] += (-h * s1) * cconj(yb);
      p += -h * (yb * P[m]).re;
    }
    const double s1b = warp_sum(p);
    for (int64_t m = lane; m < M; m += 32) {
      xb[m] += (2 * s1b) * cconj(P[m]);
      Pb[m] += (2 * s1b) * cconj(x[m]);
    }
  }
  double hb = warp_sum(hbp);
  const double den = 1 + h * kappa;
  hb += cb / (den * den);
  const double kb = -cb * h * h / (den * den);
  double p = 0;
  for (int64_t m = lane; m < M; m += 32) {
    Ctb[m] += xb[m];
    Pb[m] += cconj(eb[m]) * inv1[m] + ((4 * kb) * inv1[m].re) * P[m];
    inv1b[m] += eb[m] * P[m] + (2 * kb) * cnorm(P[m]);
    const cx d1b = (-inv1b[m]) * cconj(inv1[m] * inv1[m]);
    lamb[m] += (-h) * d1b;
    p += -(d1b * cconj(lam[m])).re;
  }
  hb += warp_sum(p);
  double dtb = 0;
  for (int64_t k = 0; k < nf; ++k) dtb += w.dtbk[c * nf + k];
  dtb += hb / 2;
  if (lane == 0) gdt[d] = static_cast<T>(dtb * dt);
  for (int64_t m = lane; m < M; m += 32) {
    const int64_t i = d * M + m;
    glar[i] = static_cast<T>(lamb[m].re * lam[m].re);
    gai[i] = static_cast<T>(lamb[m].im);
    gp[2 * i] = static_cast<T>(Pb[m].re);
    gp[2 * i + 1] = static_cast<T>(Pb[m].im);
    gb[2 * i] = static_cast<T>(w.Bb[o + m].re);
    gb[2 * i + 1] = static_cast<T>(w.Bb[o + m].im);
    gc[2 * i] = static_cast<T>(Ctb[m].re);
    gc[2 * i + 1] = static_cast<T>(Ctb[m].im);
  }
}

}  // namespace

// =============================================================================================
// S4D

Tensor s4d_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                          int64_t T) {
  const S4DKernelDims kd = kernels::check_s4d_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_kernel");
  const int64_t D = kd.D, M = kd.M, S = kd.S;
  SEQLAB_CHECK(T >= 1, "s4d_kernel: expected a length T >= 1, got ", T);
  Shape kshape(C.shape().begin(), C.shape().end() - 2);
  kshape.push_back(T);
  Tensor K = cuda::empty(kshape, C.dtype());
  if (K.numel() == 0) return K;
  Tensor dtA = cuda::empty({D, M, 2}, DType::f64), cp = cuda::empty({S, D, M, 2}, DType::f64);
  dispatch_float(C.dtype(), "s4d_kernel", [&]<typename T_>() {
    s4d_modes_kernel<T_><<<blocks_for(D * M), 256, 0, stream()>>>(
        ptr<T_>(log_dt), ptr<T_>(log_A_real), ptr<T_>(A_imag), ptr<T_>(C), static_cast<cx*>(dtA.device_ptr()),
        static_cast<cx*>(cp.device_ptr()), S, D, M);
    check_launch("s4d_kernel: modes");
    s4d_vandermonde_kernel<T_><<<blocks_for(S * D * T), 256, 0, stream()>>>(
        static_cast<const cx*>(dtA.device_ptr()), static_cast<const cx*>(cp.device_ptr()), ptr<T_>(K), S, D, M, T);
    check_launch("s4d_kernel");
  });
  return K;
}

kernels::S4DKernelGrads s4d_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& log_A_real,
                                            const Tensor& A_imag, const Tensor& C) {
  const S4DKernelDims kd = kernels::check_s4d_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_kernel_backward");
  const int64_t D = kd.D, M = kd.M, S = kd.S;
  int64_t T = dK.size(-1);
  SEQLAB_CHECK(dK.numel() == S * D * T && dK.dtype() == C.dtype(), "s4d_kernel_backward: bad dK ",
               to_string(dK.shape()));
  kernels::S4DKernelGrads g{cuda::zeros(log_dt.shape(), C.dtype()), cuda::zeros(log_A_real.shape(), C.dtype()),
                            cuda::zeros(A_imag.shape(), C.dtype()), cuda::zeros(C.shape(), C.dtype())};
  if (D == 0) return g;
  Tensor part = cuda::zeros({D, M}, DType::f64);
  dispatch_float(C.dtype(), "s4d_kernel_backward", [&]<typename T_>() {
    if (M > 0) {
      SEQLAB_CHECK(S <= 2, "s4d_kernel_backward: at most 2 kernel copies, got ", S);
      const unsigned grid = static_cast<unsigned>(std::min<int64_t>(D * M, 65535));
      s4d_kernel_grad_kernel<T_><<<grid, kGradThreads, 0, stream()>>>(
          ptr<T_>(dK), ptr<T_>(log_dt), ptr<T_>(log_A_real), ptr<T_>(A_imag), ptr<T_>(C), ptr<T_>(g.dC),
          ptr<T_>(g.dlog_A_real), ptr<T_>(g.dA_imag), ptr<double>(part), S, D, M, T);
      check_launch("s4d_kernel_backward");
    }
    s4d_dt_grad_kernel<T_><<<blocks_for(D), 256, 0, stream()>>>(ptr<double>(part), ptr<T_>(log_dt),
                                                                ptr<T_>(g.dlog_dt), D, M);
    check_launch("s4d_kernel_backward: dlog_dt");
  });
  return g;
}

kernels::SkipGelu s4d_skip_gelu_forward(const Tensor& y, const Tensor& u, const Tensor& D_skip) {
  SEQLAB_CHECK(u.dim() == 3 && y.shape() == u.shape() && D_skip.dim() == 1 && D_skip.size(0) == u.size(2) &&
                   y.dtype() == u.dtype() && D_skip.dtype() == u.dtype(),
               "s4d_skip_gelu: expected y, u (B, T, D) and D_skip (D) of one dtype, got ", to_string(y.shape()), ", ",
               to_string(u.shape()), ", ", to_string(D_skip.shape()));
  const int64_t D = u.size(2), n = u.numel();
  kernels::SkipGelu r{cuda::empty(u.shape(), u.dtype()), cuda::empty(u.shape(), u.dtype())};
  if (n == 0) return r;
  dispatch_float(u.dtype(), "s4d_skip_gelu", [&]<typename T>() {
    skip_gelu_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(ptr<T>(y), ptr<T>(u), ptr<T>(D_skip), ptr<T>(r.h),
                                                             ptr<T>(r.pre), n, D);
  });
  check_launch("s4d_skip_gelu");
  return r;
}

Tensor s4d_skip_backward(Tensor& du, const Tensor& dpre, const Tensor& u, const Tensor& D_skip, bool need_u,
                         bool need_D) {
  SEQLAB_CHECK(u.dim() == 3 && dpre.shape() == u.shape() && dpre.dtype() == u.dtype() && D_skip.dim() == 1 &&
                   D_skip.size(0) == u.size(2) && D_skip.dtype() == u.dtype(),
               "s4d_skip_backward: expected dpre, u (B, T, D) and D_skip (D) of one dtype, got ",
               to_string(dpre.shape()), ", ", to_string(u.shape()), ", ", to_string(D_skip.shape()));
  const int64_t D = u.size(2), n = u.numel(), R = D > 0 ? n / D : 0;
  if (need_u && !du.defined()) du = cuda::zeros(u.shape(), u.dtype());
  if (need_u)
    SEQLAB_CHECK(du.shape() == u.shape() && du.dtype() == u.dtype() && du.device() == Device::cuda,
                 "s4d_skip_backward: du must be ", to_string(u.shape()), " on cuda, got ", to_string(du.shape()));
  Tensor dD = need_D ? cuda::zeros({D}, u.dtype()) : Tensor();
  if (n == 0) return dD;
  dispatch_float(u.dtype(), "s4d_skip_backward", [&]<typename T>() {
    if (need_u) {
      skip_du_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(ptr<T>(du), ptr<T>(dpre), ptr<T>(D_skip), n, D);
      check_launch("s4d_skip_backward: du");
    }
    if (need_D)  // tiled column sums (was one thread per (1024-row chunk, channel): 0.4 ms at T = 2880)
      term_sum_into<T>(SkipDDTerm<T>{ptr<T>(dpre), ptr<T>(u), D}, R, D, ptr<T>(dD), "s4d_skip_backward: dD");
  });
  return dD;
}

Tensor glu_forward(const Tensor& z) {
  SEQLAB_CHECK(z.dim() >= 1 && z.size(-1) % 2 == 0, "glu: expected an even last axis, got ", to_string(z.shape()));
  const int64_t D2 = z.size(-1), D = D2 / 2, R = z.numel() / std::max<int64_t>(1, D2);
  Shape oshape = z.shape();
  oshape.back() = D;
  Tensor out = cuda::empty(oshape, z.dtype());
  if (out.numel() == 0) return out;
  dispatch_float(z.dtype(), "glu", [&]<typename T>() {
    glu_forward_kernel<T><<<blocks_for(R * D), 256, 0, stream()>>>(ptr<T>(z), ptr<T>(out), R, D);
  });
  check_launch("glu");
  return out;
}

Tensor glu_backward(const Tensor& dout, const Tensor& z) {
  const int64_t D2 = z.size(-1), D = D2 / 2, R = z.numel() / std::max<int64_t>(1, D2);
  SEQLAB_CHECK(dout.numel() == R * D && dout.dtype() == z.dtype(), "glu_backward: bad gradient shape ",
               to_string(dout.shape()));
  Tensor dz = cuda::empty(z.shape(), z.dtype());
  if (dz.numel() == 0) return dz;
  dispatch_float(z.dtype(), "glu_backward", [&]<typename T>() {
    glu_backward_kernel<T><<<blocks_for(R * D), 256, 0, stream()>>>(ptr<T>(dout), ptr<T>(z), ptr<T>(dz), R, D);
  });
  check_launch("glu_backward");
  return dz;
}

Tensor s4d_step_forward(const Tensor& u_t, const Tensor& state, const Tensor& log_dt, const Tensor& log_A_real,
                        const Tensor& A_imag, const Tensor& C, const Tensor& D_skip) {
  const S4DKernelDims kd = kernels::check_s4d_step(u_t, state, log_dt, log_A_real, A_imag, C);
  const int64_t D = kd.D, M = kd.M, B = u_t.size(0);
  SEQLAB_CHECK(u_t.dtype() == C.dtype() && D_skip.dtype() == C.dtype() && D_skip.numel() == D,
               "s4d_step: x_t, the parameters and D_skip (D) must share one dtype");
  Tensor y = cuda::empty(u_t.shape(), u_t.dtype());
  if (y.numel() == 0) return y;
  dispatch_float(u_t.dtype(), "s4d_step", [&]<typename T_>() {
    if (M > 0) {
      s4d_step_state_kernel<T_><<<blocks_for(B * D * M), 256, 0, stream()>>>(
          ptr<T_>(u_t), ptr<T_>(state), ptr<T_>(log_dt), ptr<T_>(log_A_real), ptr<T_>(A_imag), B, D, M);
      check_launch("s4d_step: state");
    }
    s4d_step_out_kernel<T_><<<blocks_for(B * D), 256, 0, stream()>>>(ptr<T_>(u_t), ptr<T_>(state), ptr<T_>(C),
                                                                     ptr<T_>(D_skip), ptr<T_>(y), B, D, M);
    check_launch("s4d_step");
  });
  return y;
}

// =============================================================================================
// LSSL

Tensor lssl_kernel_forward(const Tensor& log_dt, const Tensor& C, const HippoLegs& hp, int64_t T) {
  kernels::check_lssl_params(log_dt, C, hp, "lssl_kernel");
  SEQLAB_CHECK(T >= 1, "lssl_kernel: expected a length T >= 1, got ", T);
  const int64_t D = log_dt.size(0), N = hp.N;
  Tensor K = cuda::empty({D, T}, C.dtype());
  if (D == 0) return K;
  if (N == 0) return cuda::zeros({D, T}, C.dtype());
  const HippoDev hd = upload(hp);
  const size_t per = static_cast<size_t>(3 * N * N + N) * sizeof(double);
  const int64_t chunk = chunk_channels(D, per);
  Tensor work = cuda::empty({chunk * (3 * N * N + N)}, DType::f64);
  const size_t shm = static_cast<size_t>(4 * N) * sizeof(double);
  check_shared(shm, "lssl_kernel", N);
  dispatch_float(C.dtype(), "lssl_kernel", [&]<typename T_>() {
    for (int64_t d0 = 0; d0 < D; d0 += chunk) {
      const int64_t nc = std::min(chunk, D - d0);
      lssl_kernel_fwd_kernel<T_><<<grid_for(nc), kLsslThreads, shm, stream()>>>(
          ptr<T_>(log_dt), ptr<T_>(C), ptr<double>(hd.A), ptr<double>(hd.B), ptr<T_>(K), ptr<double>(work), d0, N, T);
      check_launch("lssl_kernel");
    }
  });
  return K;
}

kernels::LsslKernelGrads lssl_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& C,
                                              const HippoLegs& hp) {
  kernels::check_lssl_params(log_dt, C, hp, "lssl_kernel_backward");
  const int64_t D = log_dt.size(0), N = hp.N, T = dK.size(-1);
  SEQLAB_CHECK(dK.shape() == Shape({D, T}) && dK.dtype() == C.dtype(), "lssl_kernel_backward: bad dK ",
               to_string(dK.shape()));
  kernels::LsslKernelGrads g{cuda::zeros(log_dt.shape(), C.dtype()), cuda::zeros(C.shape(), C.dtype())};
  if (D == 0 || N == 0) return g;
  const HippoDev hd = upload(hp);
  const size_t per = static_cast<size_t>(4 * N * N + N) * sizeof(double);
  const int64_t chunk = chunk_channels(D, per);
  Tensor work = cuda::empty({chunk * (4 * N * N + N)}, DType::f64);
  const size_t shm = static_cast<size_t>(7 * N) * sizeof(double);
  check_shared(shm, "lssl_kernel_backward", N);
  dispatch_float(C.dtype(), "lssl_kernel_backward", [&]<typename T_>() {
    for (int64_t d0 = 0; d0 < D; d0 += chunk) {
      const int64_t nc = std::min(chunk, D - d0);
      lssl_kernel_bwd_kernel<T_><<<grid_for(nc), kLsslThreads, shm, stream()>>>(
          ptr<T_>(dK), ptr<T_>(log_dt), ptr<T_>(C), ptr<double>(hd.A), ptr<double>(hd.B), ptr<T_>(g.dlog_dt),
          ptr<T_>(g.dC), ptr<double>(work), d0, N, T);
      check_launch("lssl_kernel_backward");
    }
  });
  return g;
}

Discretised lssl_discretise(const Tensor& log_dt, const HippoLegs& hp) {
  SEQLAB_CHECK(log_dt.dim() == 1, "lssl_discretise: log_dt must be (D)");
  const int64_t D = log_dt.size(0), N = hp.N;
  Discretised r{cuda::empty({D, N, N}, log_dt.dtype()), cuda::empty({D, N}, log_dt.dtype())};
  if (D == 0 || N == 0) return r;
  const HippoDev hd = upload(hp);
  const size_t per = static_cast<size_t>(3 * N * N + N) * sizeof(double);
  const int64_t chunk = chunk_channels(D, per);
  Tensor work = cuda::empty({chunk * (3 * N * N + N)}, DType::f64);
  const size_t shm = static_cast<size_t>(N) * sizeof(double);
  dispatch_float(log_dt.dtype(), "lssl_discretise", [&]<typename T_>() {
    for (int64_t d0 = 0; d0 < D; d0 += chunk) {
      const int64_t nc = std::min(chunk, D - d0);
      lssl_discretise_kernel<T_><<<grid_for(nc), kLsslThreads, shm, stream()>>>(
          ptr<T_>(log_dt), ptr<double>(hd.A), ptr<double>(hd.B), ptr<T_>(r.dA), ptr<T_>(r.dB), ptr<double>(work), d0,
          N);
      check_launch("lssl_discretise");
    }
  });
  return r;
}

Tensor lssl_step_forward(const Tensor& u_t, const Tensor& state, const Discretised& disc, const Tensor& C,
                         const Tensor& D_skip) {
  kernels::check_lssl_step(u_t, state, C);
  const int64_t D = C.size(0), N = C.size(1), B = u_t.size(0);
  SEQLAB_CHECK(disc.dA.shape() == Shape({D, N, N}) && disc.dB.shape() == Shape({D, N}) && D_skip.numel() == D,
               "lssl_step: expected dA (D, N, N), dB (D, N) and D_skip (D) with D = ", D, ", N = ", N);
  Tensor y = cuda::empty(u_t.shape(), u_t.dtype());
  if (y.numel() == 0) return y;
  const int threads = static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, (N + 31) / 32 * 32)));
  dispatch_float(u_t.dtype(), "lssl_step", [&]<typename T_>() {
    lssl_step_kernel<T_><<<grid_for(B * D), threads, static_cast<size_t>(std::max<int64_t>(1, N)) * sizeof(double),
                           stream()>>>(ptr<T_>(u_t), ptr<T_>(state), ptr<T_>(disc.dA), ptr<T_>(disc.dB), ptr<T_>(C),
                                       ptr<T_>(D_skip), ptr<T_>(y), D, N);
  });
  check_launch("lssl_step");
  return y;
}

// =============================================================================================
// S4

Tensor s4_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                         const Tensor& B, const Tensor& C, int64_t T) {
  kernels::check_s4_params(log_dt, log_A_real, A_imag, {&P, &B, &C}, "s4_kernel");
  SEQLAB_CHECK(T >= 1, "s4_kernel: expected a length T >= 1, got ", T);
  const int64_t D = log_dt.size(0), M = log_A_real.size(1), nf = T / 2 + 1;
  Tensor K = cuda::empty({D, T}, C.dtype());
  if (D == 0) return K;
  Tensor E = cuda::empty({T, 2}, DType::f64);
  roots_kernel<<<blocks_for(T), 256, 0, stream()>>>(static_cast<cx*>(E.device_ptr()), T);
  check_launch("s4_kernel: roots");
  const size_t per = s4_work_doubles(M, T, nf, false) * sizeof(double);
  const int64_t chunk = chunk_channels(D, per);
  Tensor work = cuda::empty({static_cast<int64_t>(s4_work_doubles(M, T, nf, false)) * chunk}, DType::f64);
  const cx* pE = static_cast<const cx*>(E.device_ptr());
  dispatch_float(C.dtype(), "s4_kernel", [&]<typename T_>() {
    for (int64_t d0 = 0; d0 < D; d0 += chunk) {
      const int64_t nc = std::min(chunk, D - d0);
      const S4Work w = s4_work(ptr<double>(work), nc, M, T, nf, false);
      s4_load_kernel<T_><<<blocks_for(nc, 64), 64, 0, stream()>>>(ptr<T_>(log_dt), ptr<T_>(log_A_real),
                                                                   ptr<T_>(A_imag), ptr<T_>(P), ptr<T_>(B), ptr<T_>(C),
                                                                   w, d0, nc, M);
      check_launch("s4_kernel: load");
      s4_power_kernel<<<grid_for(nc), 32, 0, stream()>>>(w, M, T, false);
      check_launch("s4_kernel: powers");
      s4_bins_fwd_kernel<<<blocks_for(nc * nf), 256, 0, stream()>>>(w, pE, nc, M, T, nf);
      check_launch("s4_kernel: bins");
      s4_idft_kernel<T_><<<blocks_for(nc * T), 256, 0, stream()>>>(w, pE, ptr<T_>(K), d0, nc, T, nf);
      check_launch("s4_kernel: inverse DFT");
    }
  });
  return K;
}

kernels::S4KernelGrads s4_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& log_A_real,
                                          const Tensor& A_imag, const Tensor& P, const Tensor& B, const Tensor& C) {
  kernels::check_s4_params(log_dt, log_A_real, A_imag, {&P, &B, &C}, "s4_kernel_backward");
  const int64_t D = log_dt.size(0), M = log_A_real.size(1), T = dK.size(-1);
  SEQLAB_CHECK(dK.shape() == Shape({D, T}) && dK.dtype() == C.dtype(), "s4_kernel_backward: bad dK ",
               to_string(dK.shape()));
  const DType dty = C.dtype();
  kernels::S4KernelGrads g{cuda::zeros(log_dt.shape(), dty), cuda::zeros(log_A_real.shape(), dty),
                           cuda::zeros(A_imag.shape(), dty),  cuda::zeros(P.shape(), dty),
                           cuda::zeros(B.shape(), dty),       cuda::zeros(C.shape(), dty)};
  if (D == 0 || T == 0) return g;
  const int64_t nf = T / 2 + 1;
  Tensor E = cuda::empty({T, 2}, DType::f64);
  roots_kernel<<<blocks_for(T), 256, 0, stream()>>>(static_cast<cx*>(E.device_ptr()), T);
  check_launch("s4_kernel_backward: roots");
  const size_t per = s4_work_doubles(M, T, nf, true) * sizeof(double);
  const int64_t chunk = chunk_channels(D, per);
  Tensor work = cuda::empty({static_cast<int64_t>(s4_work_doubles(M, T, nf, true)) * chunk}, DType::f64);
  const cx* pE = static_cast<const cx*>(E.device_ptr());
  dispatch_float(dty, "s4_kernel_backward", [&]<typename T_>() {
    for (int64_t d0 = 0; d0 < D; d0 += chunk) {
      const int64_t nc = std::min(chunk, D - d0);
      const S4Work w = s4_work(ptr<double>(work), nc, M, T, nf, true);
      s4_load_kernel<T_><<<blocks_for(nc, 64), 64, 0, stream()>>>(ptr<T_>(log_dt), ptr<T_>(log_A_real),
                                                                   ptr<T_>(A_imag), ptr<T_>(P), ptr<T_>(B), ptr<T_>(C),
                                                                   w, d0, nc, M);
      check_launch("s4_kernel_backward: load");
      s4_power_kernel<<<grid_for(nc), 32, 0, stream()>>>(w, M, T, true);
      check_launch("s4_kernel_backward: powers");
      s4_bins_bwd_kernel<T_><<<blocks_for(nc * nf), 256, 0, stream()>>>(w, pE, ptr<T_>(dK), d0, nc, M, T, nf);
      check_launch("s4_kernel_backward: bins");
      if (M > 0) {
        s4_modes_bwd_kernel<<<blocks_for(nc * M, 64), 64, 0, stream()>>>(w, nc, M, nf);
        check_launch("s4_kernel_backward: modes");
      }
      s4_reverse_kernel<T_><<<grid_for(nc), 32, 0, stream()>>>(w, d0, M, T, nf, ptr<T_>(g.dlog_dt),
                                                               ptr<T_>(g.dlog_A_real), ptr<T_>(g.dA_imag),
                                                               ptr<T_>(g.dP), ptr<T_>(g.dB), ptr<T_>(g.dC));
      check_launch("s4_kernel_backward: reverse steps");
    }
  });
  return g;
}

// Host path: one dense N x N complex inverse per channel (sizes D N^2, independent of the batch).
Discretised s4_discretise(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                          const Tensor& B) {
  kernels::check_s4_params(log_dt, log_A_real, A_imag, {&P, &B}, "s4_discretise");
  Discretised h = kernels::s4_discretise(log_dt.to(Device::cpu), log_A_real.to(Device::cpu),
                                         A_imag.to(Device::cpu), P.to(Device::cpu), B.to(Device::cpu));
  return {h.dA.to(Device::cuda), h.dB.to(Device::cuda)};
}

// Host path: the dense reference kernel (D, T).
Tensor s4_kernel_dense(const Discretised& disc, const Tensor& C, int64_t T) {
  Discretised h{disc.dA.to(Device::cpu), disc.dB.to(Device::cpu)};
  return kernels::s4_kernel_dense(h, C.to(Device::cpu), T).to(Device::cuda);
}

Tensor s4_step_forward(const Tensor& u_t, const Tensor& state, const Discretised& disc, const Tensor& C,
                       const Tensor& D_skip) {
  kernels::check_s4_step(u_t, state, C);
  const int64_t D = C.size(0), M = C.size(1), N = 2 * M, B = u_t.size(0);
  SEQLAB_CHECK(disc.dA.shape() == Shape({D, N, N, 2}) && disc.dB.shape() == Shape({D, N, 2}) && D_skip.numel() == D,
               "s4_step: expected dA (D, N, N, 2), dB (D, N, 2) and D_skip (D) with D = ", D, ", N = ", N);
  Tensor y = cuda::empty(u_t.shape(), u_t.dtype());
  if (y.numel() == 0) return y;
  const int threads = static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, (N + 31) / 32 * 32)));
  check_shared(static_cast<size_t>(4 * N) * sizeof(double), "s4_step", N);
  dispatch_float(u_t.dtype(), "s4_step", [&]<typename T_>() {
    s4_step_kernel<T_><<<grid_for(B * D), threads, static_cast<size_t>(std::max<int64_t>(1, 4 * N)) * sizeof(double),
                         stream()>>>(ptr<T_>(u_t), ptr<T_>(state), ptr<T_>(disc.dA), ptr<T_>(disc.dB), ptr<T_>(C),
                                     ptr<T_>(D_skip), ptr<T_>(y), D, N);
  });
  check_launch("s4_step");
  return y;
}

}  // namespace seqlab::cuda
