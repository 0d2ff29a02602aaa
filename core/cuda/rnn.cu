// Tanh-RNN / LSTM / GRU layer kernels on the device (core/cuda/rnn.h), the twins of core/kernels/rnn.cpp:
// the same equations, gate order, saved tensors (y, gates, c) and chunked backpropagation through time.
//   forward : proj = x @ W_ih^T + biases (one cuBLAS GEMM over B*T rows and a bias kernel), then the
//             recurrence: when W_hh fits one block (registers or shared memory), one persistent kernel
//             runs every step (forward_persistent_kernel: blocks own batch rows, no grid-wide sync);
//             else per step hg = h_{t-1} @ W_hh^T (one GEMM, skipped for a zero state) and one fused
//             gate kernel writing h_t (into y), c_t and the gates the backward reads.
//   backward: time chunks as the CPU (last first); per chunk the steps in one persistent kernel
//             (backward_persistent_kernel: gate gradients and dh_{t-1} = da_h @ W_hh per batch row),
//             or per step one fused gate-gradient kernel and one GEMM dh_{t-1} (+)= da_h @ W_hh; per
//             chunk dx = da_x @ W_ih (a strided batched GEMM), dW_ih += da_x^T x, dW_hh += da_h^T h_prev
//             (one GEMM each over the chunk's B*L rows) and the bias sums in double by fixed-order
//             column sums (no atomics: a run is bit-identical to itself).
#include <algorithm>
#include <map>
#include <mutex>
#include <type_traits>

#include "core/cuda/column_reduce.cuh"
#include "core/cuda/common.cuh"
#include "core/cuda/rnn.h"
#include "core/kernels/rnn_check.h"

namespace seqlab::cuda {
namespace {

// ---------------------------------------------------------------------------------------------------
// cuBLAS on row-major matrices: C (M, N) = alpha op(A) op(B) + beta C, computed as the column-major
// C^T = op(B)^T op(A)^T.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc, const char* what) {
  const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if constexpr (std::is_same_v<T, float>)
    check_cublas(sgemm(ob, oa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B,
                       static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc)),
                 what);
  else
    check_cublas(cublasDgemm(cublas(), ob, oa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha,
                             B, static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc)),
                 what);
}

// The same for `batch` independent products, A, B, C advancing by sa, sb, sc elements.
template <typename T>
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, int64_t sa,
                  const T* B, int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc, int64_t sc, int64_t batch,
                  const char* what) {
  const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if constexpr (std::is_same_v<T, float>)
    check_cublas(sgemm_strided(ob, oa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B,
                               static_cast<int>(ldb), sb, A, static_cast<int>(lda), sa, &beta, C,
                               static_cast<int>(ldc), sc, static_cast<int>(batch)),
                 what);
  else
    check_cublas(cublasDgemmStridedBatched(cublas(), ob, oa, static_cast<int>(N), static_cast<int>(M),
                                           static_cast<int>(K), &alpha, B, static_cast<int>(ldb), sb, A,
                                           static_cast<int>(lda), sa, &beta, C, static_cast<int>(ldc), sc,
                                           static_cast<int>(batch)),
                 what);
}

// ---------------------------------------------------------------------------------------------------
// Nonlinearities: the CPU's forms (vmath::sigmoid_of: exp of a non-positive number, both branches
// accurate in relative terms), with CUDA's accurate expf / tanhf.
__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }
__device__ __forceinline__ float dtanh(float v) { return tanhf(v); }
__device__ __forceinline__ double dtanh(double v) { return tanh(v); }
template <typename T>
__device__ __forceinline__ T dsigmoid(T v) {
  const T e = dexp(-fabs(v));
  const T r = T(1) / (T(1) + e);
  return v >= T(0) ? r : e * r;
}

constexpr int kThreads = 256;

// proj[r * ldp + j] += b_ih[j] + b_hh[j] for r < rows, j < GH (the gru's b_hn stays inside r * (.)).
template <typename T>
__global__ void add_bias_kernel(T* proj, int64_t rows, int64_t GH, int64_t ldp, const T* b_ih, const T* b_hh,
                                int64_t hh_cols) {
  SEQLAB_CUDA_LOOP(i, rows * GH) {
    const int64_t r = i / GH, j = i % GH;
    T s = T(0);
    if (b_ih) s += b_ih[j];
    if (b_hh && j < hh_cols) s += b_hh[j];
    proj[r * ldp + j] += s;
  }
}

// One forward step t for every (b, j), b < B, j < H. hg (B, GH) = W_hh h_{t-1} (null: zero state).
template <typename T>
__global__ void forward_step_kernel(RnnCell cell, int64_t B, int64_t T_, int64_t H, int64_t t, const T* hg,
                                    const T* h0, const T* c0, const T* b_hh, T* y, T* gates, T* c) {
  const int64_t GH = (cell == RnnCell::tanh ? 1 : cell == RnnCell::lstm ? 4 : 3) * H;
  SEQLAB_CUDA_LOOP(i, B * H) {
    const int64_t b = i / H, j = i % H;
    const int64_t row = b * T_ + t;
    const T* hgb = hg ? hg + b * GH : nullptr;
    auto rec = [&](int64_t k) { return hgb ? hgb[k * H + j] : T(0); };
    T* yb = y + row * H;
    if (cell == RnnCell::tanh) {
      yb[j] = dtanh(yb[j] + rec(0));
    } else if (cell == RnnCell::lstm) {
      T* g = gates + row * 4 * H;
      const T ig = dsigmoid(g[j] + rec(0));
      const T fg = dsigmoid(g[H + j] + rec(1));
      const T gg = dtanh(g[2 * H + j] + rec(2));
      const T og = dsigmoid(g[3 * H + j] + rec(3));
      g[j] = ig;
      g[H + j] = fg;
      g[2 * H + j] = gg;
      g[3 * H + j] = og;
      const T cp = t > 0 ? c[(row - 1) * H + j] : (c0 ? c0[b * H + j] : T(0));
      const T ct = fg * cp + ig * gg;
      c[row * H + j] = ct;
      yb[j] = og * dtanh(ct);
    } else {  // gru
      T* g = gates + row * 4 * H;
      const T rg = dsigmoid(g[j] + rec(0));
      const T zg = dsigmoid(g[H + j] + rec(1));
      const T hn = rec(2) + (b_hh ? b_hh[2 * H + j] : T(0));
      const T ng = dtanh(g[2 * H + j] + rg * hn);
      g[j] = rg;
      g[H + j] = zg;
      g[2 * H + j] = ng;
      g[3 * H + j] = hn;
      const T hp = t > 0 ? y[(row - 1) * H + j] : (h0 ? h0[b * H + j] : T(0));
      yb[j] = (T(1) - zg) * ng + zg * hp;
    }
  }
}

// dst[b * H + j] = src[(b * T + T - 1) * H + j]: the last step of a (B, T, H) tensor.
template <typename T>
__global__ void last_step_kernel(const T* src, T* dst, int64_t B, int64_t T_, int64_t H) {
  SEQLAB_CUDA_LOOP(i, B * H) {
    const int64_t b = i / H, j = i % H;
    dst[i] = src[(b * T_ + T_ - 1) * H + j];
  }
}

// One backward step t (inside the time chunk [t0, t0 + L)) for every (b, j). Reads dh (the gradient of
// h_t through h_{t+1}) and, for the lstm, dc; writes the gate pre-activation gradients of row
// crow = b * L + t - t0 of dgx (and dgh for the gru), dc_{t-1}, and for the gru dh's z part.
template <typename T>
__global__ void backward_step_kernel(RnnCell cell, int64_t B, int64_t T_, int64_t H, int64_t t, int64_t t0,
                                     int64_t L, const T* dy, const T* y, const T* gates, const T* c, T* dh, T* dc,
                                     T* dgx, T* dgh) {
  const int64_t GH = (cell == RnnCell::tanh ? 1 : cell == RnnCell::lstm ? 4 : 3) * H;
  SEQLAB_CUDA_LOOP(i, B * H) {
    const int64_t b = i / H, j = i % H;
    const int64_t row = b * T_ + t, crow = b * L + t - t0;
    const T dht = dy[row * H + j] + dh[b * H + j];
    T* gx = dgx + crow * GH;
    if (cell == RnnCell::tanh) {
      const T yv = y[row * H + j];
      gx[j] = dht * (T(1) - yv * yv);
    } else if (cell == RnnCell::lstm) {
      const T* g = gates + row * 4 * H;
      const T ig = g[j], fg = g[H + j], gg = g[2 * H + j], og = g[3 * H + j];
      const T tc = dtanh(c[row * H + j]);
      const T cp = t > 0 ? c[(row - 1) * H + j] : T(0);  // c_{-1} = 0: df = 0
      const T dct = dc[b * H + j] + dht * og * (T(1) - tc * tc);
      gx[j] = dct * gg * ig * (T(1) - ig);
      gx[H + j] = dct * cp * fg * (T(1) - fg);
      gx[2 * H + j] = dct * ig * (T(1) - gg * gg);
      gx[3 * H + j] = dht * tc * og * (T(1) - og);
      dc[b * H + j] = dct * fg;
    } else {  // gru
      const T* g = gates + row * 4 * H;
      const T rg = g[j], zg = g[H + j], ng = g[2 * H + j], hn = g[3 * H + j];
      const T hp = t > 0 ? y[(row - 1) * H + j] : T(0);  // h_{-1} = 0
      const T dan = dht * (T(1) - zg) * (T(1) - ng * ng);
      const T dar = dan * hn * rg * (T(1) - rg);
      const T daz = dht * (hp - ng) * zg * (T(1) - zg);
      T* gh = dgh + crow * GH;
      gx[j] = dar;
      gh[j] = dar;
      gx[H + j] = daz;
      gh[H + j] = daz;
      gx[2 * H + j] = dan;
      gh[2 * H + j] = dan * rg;
      dh[b * H + j] = dht * zg;
    }
  }
}

// dst (B, L, n) = rows t0 + shift .. t0 + shift + L - 1 of src (B, T, n); rows before 0 are zero
// (shift -1: h_{t-1} with h_{-1} = 0).
template <typename T>
__global__ void gather_rows_kernel(const T* src, T* dst, int64_t B, int64_t T_, int64_t L, int64_t n, int64_t t0,
                                   int64_t shift) {
  SEQLAB_CUDA_LOOP(i, B * L * n) {
    const int64_t k = i % n, bl = i / n;
    const int64_t l = bl % L, b = bl / L;
    const int64_t t = t0 + l + shift;
    dst[i] = t >= 0 ? src[(b * T_ + t) * n + k] : T(0);
  }
}

template <typename T>
__global__ void from_double_kernel(const double* src, T* dst, int64_t n) {
  SEQLAB_CUDA_LOOP(i, n) dst[i] = static_cast<T>(src[i]);
}

// ---------------------------------------------------------------------------------------------------
// The persistent recurrence: one launch runs every step of the sequence (forward) or of a time chunk
// (backward). The batch rows are independent, so block k owns rows R k .. R k + R - 1 for the whole
// loop and no grid-wide synchronisation is needed. Thread u < GH owns one row (forward) or one column
// block (backward) of W_hh, held in registers (KC > 0: W_hh's H <= KC) or in shared memory (KC = 0, as
// (Hp, GH) so that a warp reads consecutive words), and does the H-long dot product of its unit for
// each of the block's rows from shared memory, in a fixed order (four interleaved partial sums, then
// (a0 + a1) + (a2 + a3)): a run is bit-identical to itself, whatever the launch shape. Thread
// i = r H + j < R H owns the per-unit state (c, dh, dc) of (row r, unit j). The step's inputs that do
// not depend on the recurrence (the input projection; dy and the saved tensors) are prefetched D - 1
// steps ahead into a ring of shared slots with cp.async, each thread copying exactly what it reads.
constexpr int kMaxRows = 4;  // batch rows per block at most

// One element (4 or 8 bytes) global -> shared, asynchronous; completion by commit groups.
template <typename T>
__device__ __forceinline__ void cp_async_elt(T* smem, const T* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(s), "l"(gmem), "n"(sizeof(T)) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Waits until the oldest of the D - 1 groups in flight has landed (D in {2, 4, 8}).
__device__ __forceinline__ void cp_async_wait_ring(int D) {
  if (D == 8) cp_async_wait<6>();
  else if (D == 4) cp_async_wait<2>();
  else cp_async_wait<0>();
}

template <typename T>
struct Quad {
  T x, y, z, w;
};
// Four consecutive elements of shared memory (16-byte aligned for float, 32 for double).
template <typename T>
__device__ __forceinline__ Quad<T> load4(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    return {q.x, q.y, q.z, q.w};
  } else {
    const double2 a = *reinterpret_cast<const double2*>(p), b = *reinterpret_cast<const double2*>(p + 2);
    return {a.x, a.y, b.x, b.y};
  }
}

// sum over m < Hp of W_u[m] v[m] (Hp a multiple of 4; W_u[m] = v[m] = 0 for H <= m < Hp): W_u is w
// (registers, KC > 0) or sW[m * ldw + u] (shared, KC = 0); v is in shared memory, read by the whole
// warp at once (a broadcast).
template <typename T, int KC>
__device__ __forceinline__ T rec_dot(const T (&w)[KC > 0 ? KC : 1], const T* sW, int ldw, int u, const T* v,
                                     int Hp) {
  T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0);
  if constexpr (KC > 0) {
#pragma unroll
    for (int m = 0; m < KC; m += 4) {
      if (m >= Hp) break;
      const Quad<T> q = load4(v + m);
      a0 += w[m] * q.x;
      a1 += w[m + 1] * q.y;
      a2 += w[m + 2] * q.z;
      a3 += w[m + 3] * q.w;
    }
  } else {
    const T* wc = sW + u;
#pragma unroll 2
    for (int m = 0; m < Hp; m += 4) {
      const Quad<T> q = load4(v + m);
      a0 += wc[0] * q.x;
      a1 += wc[ldw] * q.y;
      a2 += wc[2 * ldw] * q.z;
      a3 += wc[3 * ldw] * q.w;
      wc += 4 * ldw;
    }
  }
  return (a0 + a1) + (a2 + a3);
}

// The whole forward recurrence of rows b0 .. b0 + rows - 1 (b0 = R blockIdx.x). proj (y for tanh, the
// gate buffer otherwise, row stride ldp) holds x W_ih^T + biases; the kernel overwrites it with the
// outputs as forward_step_kernel does. Shared memory (elements of T):
//   sW   (Hp, GH) when KC = 0: sW[m * GH + u] = W_hh[u][m], zero for m >= H
//   sh   2 x (R, Hp): h_{t-1} and h_t (alternating), zero beyond H
//   sg   (R, 4H) (lstm, gru): the step's gates
//   ring D x (R, GH): the input projections of steps t .. t + D - 2
// Per step: [wait for slot t, sync] thread u < GH: a = W_u . h_{t-1} for each row, its gate (tanh:
// h_t directly); [sync] thread (r, j): c_t, h_t (lstm, gru).
template <typename T, int KC>
__global__ void __launch_bounds__(KC > 0 ? 256 : 1024, 1)
    forward_persistent_kernel(RnnCell cell, int B, int T_, int H, int G, int R, int D, int Hp,
                              const T* __restrict__ whh, const T* proj, int ldp, const T* __restrict__ h0,
                              const T* __restrict__ c0, const T* __restrict__ bhh, T* y, T* gates, T* c) {
  extern __shared__ __align__(16) unsigned char rnn_smem[];
  const int GH = G * H, tid = threadIdx.x, nth = blockDim.x;
  T* const sW = reinterpret_cast<T*>(rnn_smem);
  T* const sh = sW + (KC > 0 ? 0 : Hp * GH);
  T* const sg = sh + 2 * R * Hp;
  T* const ring = sg + (cell == RnnCell::tanh ? 0 : R * 4 * H);
  const int b0 = blockIdx.x * R, rows = min(R, B - b0);

  // this thread's dot-product unit u = tid (gate ug, unit uj) and its row of W_hh
  const bool unit = tid < GH;
  const int ug = unit ? tid / H : 0, uj = unit ? tid - ug * H : 0;
  T w[KC > 0 ? KC : 1];
  if constexpr (KC > 0) {
#pragma unroll
    for (int m = 0; m < KC; ++m) w[m] = unit && m < H ? whh[static_cast<int64_t>(tid) * H + m] : T(0);
  } else {
    w[0] = T(0);
    for (int e = tid; e < Hp * GH; e += nth) {
      const int m = e / GH, u = e - m * GH;
      sW[e] = m < H ? whh[static_cast<int64_t>(u) * H + m] : T(0);
    }
  }
  for (int e = tid; e < 2 * R * Hp; e += nth) {
    const int r = e / Hp, m = e - r * Hp;  // r >= R: the second buffer
    sh[e] = h0 && r < rows && m < H ? h0[static_cast<int64_t>(b0 + r) * H + m] : T(0);
  }
  const T bn = cell == RnnCell::gru && unit && ug == 2 && bhh ? bhh[tid] : T(0);  // b_hn
  // this thread's state unit (row ir, unit ij)
  const bool item = tid < rows * H;
  const int ir = item ? tid / H : 0, ij = item ? tid - ir * H : 0;
  T creg = cell == RnnCell::lstm && item && c0 ? c0[static_cast<int64_t>(b0 + ir) * H + ij] : T(0);

  auto prefetch = [&](int t) {
    if (unit && t < T_) {
      T* dst = ring + (t & (D - 1)) * R * GH + tid;
      for (int r = 0; r < rows; ++r)
        cp_async_elt(dst + r * GH, proj + (static_cast<int64_t>(b0 + r) * T_ + t) * ldp + tid);
    }
    cp_async_commit();
  };
  for (int t = 0; t < D - 1; ++t) prefetch(t);

  for (int t = 0; t < T_; ++t) {
    cp_async_wait_ring(D);
    __syncthreads();       // h_{t-1} complete; every thread is past step t - 1
    prefetch(t + D - 1);   // into the slot step t - 1 used
    const T* hp = sh + (t & 1) * R * Hp;
    T* hn = sh + ((t + 1) & 1) * R * Hp;
    if (unit) {
      const T* slot = ring + (t & (D - 1)) * R * GH + tid;
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r) {
        if (r >= rows) break;
        const T a = rec_dot<T, KC>(w, sW, GH, tid, hp + r * Hp, Hp);
        const T pre = slot[r * GH];
        const int64_t row = static_cast<int64_t>(b0 + r) * T_ + t;
        if (cell == RnnCell::tanh) {
          const T h = dtanh(pre + a);
          y[row * H + uj] = h;
          hn[r * Hp + uj] = h;
        } else if (cell == RnnCell::lstm || ug < 2) {  // lstm i, f, g, o; gru r, z
          const T v = cell == RnnCell::lstm && ug == 2 ? dtanh(pre + a) : dsigmoid(pre + a);
          gates[row * 4 * H + tid] = v;
          sg[r * 4 * H + tid] = v;
        } else {  // gru n: its input part and hn = W_hn h + b_hn, for the state thread
          const T hnv = a + bn;
          gates[row * 4 * H + 3 * H + uj] = hnv;
          sg[r * 4 * H + 2 * H + uj] = pre;
          sg[r * 4 * H + 3 * H + uj] = hnv;
        }
      }
    }
    if (cell != RnnCell::tanh) {
      __syncthreads();  // the gates of step t complete
      if (item) {
        const T* g = sg + ir * 4 * H;
        const int64_t row = static_cast<int64_t>(b0 + ir) * T_ + t;
        T h;
        if (cell == RnnCell::lstm) {
          const T ct = g[H + ij] * creg + g[ij] * g[2 * H + ij];
          creg = ct;
          c[row * H + ij] = ct;
          h = g[3 * H + ij] * dtanh(ct);
        } else {
          const T rg = g[ij], zg = g[H + ij], hnv = g[3 * H + ij];
          const T ng = dtanh(g[2 * H + ij] + rg * hnv);
          gates[row * 4 * H + 2 * H + ij] = ng;
          h = (T(1) - zg) * ng + zg * hp[ir * Hp + ij];
        }
        y[row * H + ij] = h;
        hn[ir * Hp + ij] = h;
      }
    }
  }
  cp_async_wait<0>();
}

// The backward steps t = t0 + L - 1 .. t0 of rows b0 .. b0 + rows - 1 (b0 = R blockIdx.x): the same
// maths as backward_step_kernel followed by dh_{t-1} (+)= da_h W_hh. dh, dc (B, H) carry the state in
// from the later chunk and out to the earlier one. Shared memory (elements of T):
//   sW   (Hp, GH) when KC = 0: sW[m * GH + u] = W_hh[(u / H) H + m][u % H], zero for m >= H
//   sdg  (R, G, Hp): the step's da_h, zero beyond H
//   sp   (R, GH): sp[r][g H + k] = sum over m of da_h[r][g H + m] W_hh[g H + m][k] (dh_{t-1} = sum over g)
//   ring D x (S, R H): per step and state unit: dy, then y (tanh) or the 4 gates and c_t, c_{t-1}
//        (lstm) or h_{t-1} (gru)
// Per step: [wait, sync] thread (r, j): dh_t = dy + sum_g sp + (gru) dh z, the gate gradients into
// dgx (dgh) and sdg; [sync] thread u = (g, k) < GH: sp[r][u] = the column block's dot product.
template <typename T, int KC>
__global__ void __launch_bounds__(KC > 0 ? 256 : 1024, 1)
    backward_persistent_kernel(RnnCell cell, int B, int T_, int H, int G, int R, int D, int Hp, int t0, int L,
                               const T* __restrict__ whh, const T* __restrict__ dy, const T* __restrict__ y,
                               const T* __restrict__ gates, const T* __restrict__ c, T* dh, T* dc, T* dgx,
                               T* dgh) {
  extern __shared__ __align__(16) unsigned char rnn_smem[];
  const int GH = G * H, tid = threadIdx.x, nth = blockDim.x, RH = R * H;
  const int S = cell == RnnCell::tanh ? 2 : cell == RnnCell::lstm ? 7 : 6;
  T* const sW = reinterpret_cast<T*>(rnn_smem);
  T* const sdg = sW + (KC > 0 ? 0 : Hp * GH);
  T* const sp = sdg + R * G * Hp;
  T* const ring = sp + R * GH;
  const int b0 = blockIdx.x * R, rows = min(R, B - b0);

  const bool unit = tid < GH;
  const int ug = unit ? tid / H : 0, uj = unit ? tid - ug * H : 0;
  T w[KC > 0 ? KC : 1];
  if constexpr (KC > 0) {
#pragma unroll
    for (int m = 0; m < KC; ++m)
      w[m] = unit && m < H ? whh[(static_cast<int64_t>(ug) * H + m) * H + uj] : T(0);
  } else {
    w[0] = T(0);
    for (int e = tid; e < Hp * GH; e += nth) {
      const int m = e / GH, u = e - m * GH, g = u / H, k = u - g * H;
      sW[e] = m < H ? whh[(static_cast<int64_t>(g) * H + m) * H + k] : T(0);
    }
  }
  for (int e = tid; e < R * G * Hp + R * GH; e += nth) sdg[e] = T(0);  // sdg and sp
  const bool item = tid < rows * H;
  const int ir = item ? tid / H : 0, ij = item ? tid - ir * H : 0;
  const int64_t bj = static_cast<int64_t>(b0 + ir) * H + ij;
  T carry = item ? dh[bj] : T(0);  // the part of dh_t that is not in sp
  T dcr = cell == RnnCell::lstm && item ? dc[bj] : T(0);

  auto prefetch = [&](int s) {
    if (item && s < L) {
      const int t = t0 + L - 1 - s;
      const int64_t row = static_cast<int64_t>(b0 + ir) * T_ + t;
      T* dst = ring + (s & (D - 1)) * S * RH + tid;
      cp_async_elt(dst, dy + row * H + ij);
      if (cell == RnnCell::tanh) {
        cp_async_elt(dst + RH, y + row * H + ij);
      } else {
        for (int k = 0; k < 4; ++k) cp_async_elt(dst + (1 + k) * RH, gates + row * 4 * H + k * H + ij);
        if (cell == RnnCell::lstm) {
          cp_async_elt(dst + 5 * RH, c + row * H + ij);
          if (t > 0) cp_async_elt(dst + 6 * RH, c + (row - 1) * H + ij);
        } else if (t > 0) {
          cp_async_elt(dst + 5 * RH, y + (row - 1) * H + ij);
        }
      }
    }
    cp_async_commit();
  };
  for (int s = 0; s < D - 1; ++s) prefetch(s);

  for (int s = 0; s < L; ++s) {
    const int t = t0 + L - 1 - s;
    cp_async_wait_ring(D);
    __syncthreads();  // sp of step t + 1 complete; every thread is past step t + 1
    prefetch(s + D - 1);
    if (item) {
      const T* sl = ring + (s & (D - 1)) * S * RH + tid;
      T dsum = sp[ir * GH + ij];
      for (int g = 1; g < G; ++g) dsum += sp[ir * GH + g * H + ij];
      const T dht = sl[0] + (dsum + carry);
      const int64_t crow = static_cast<int64_t>(b0 + ir) * L + (t - t0);
      T* gx = dgx + crow * GH;
      T* sd = sdg + ir * G * Hp;
      carry = T(0);
      if (cell == RnnCell::tanh) {
        const T yv = sl[RH];
        const T v = dht * (T(1) - yv * yv);
        gx[ij] = v;
        sd[ij] = v;
      } else if (cell == RnnCell::lstm) {
        const T ig = sl[RH], fg = sl[2 * RH], gg = sl[3 * RH], og = sl[4 * RH];
        const T tc = dtanh(sl[5 * RH]);
        const T cp = t > 0 ? sl[6 * RH] : T(0);  // c_{-1} = 0: df = 0
        const T dct = dcr + dht * og * (T(1) - tc * tc);
        const T ai = dct * gg * ig * (T(1) - ig);
        const T af = dct * cp * fg * (T(1) - fg);
        const T ag = dct * ig * (T(1) - gg * gg);
        const T ao = dht * tc * og * (T(1) - og);
        gx[ij] = ai;
        gx[H + ij] = af;
        gx[2 * H + ij] = ag;
        gx[3 * H + ij] = ao;
        sd[ij] = ai;
        sd[Hp + ij] = af;
        sd[2 * Hp + ij] = ag;
        sd[3 * Hp + ij] = ao;
        dcr = dct * fg;
      } else {  // gru
        const T rg = sl[RH], zg = sl[2 * RH], ng = sl[3 * RH], hnv = sl[4 * RH];
        const T hp = t > 0 ? sl[5 * RH] : T(0);  // h_{-1} = 0
        const T dan = dht * (T(1) - zg) * (T(1) - ng * ng);
        const T dar = dan * hnv * rg * (T(1) - rg);
        const T daz = dht * (hp - ng) * zg * (T(1) - zg);
        T* gh = dgh + crow * GH;
        gx[ij] = dar;
        gh[ij] = dar;
        gx[H + ij] = daz;
        gh[H + ij] = daz;
        gx[2 * H + ij] = dan;
        gh[2 * H + ij] = dan * rg;
        sd[ij] = dar;
        sd[Hp + ij] = daz;
        sd[2 * Hp + ij] = dan * rg;
        carry = dht * zg;
      }
    }
    __syncthreads();  // da_h of step t complete; sp read
    if (unit && t > 0) {  // nothing flows into the zero state
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r) {
        if (r >= rows) break;
        sp[r * GH + tid] = rec_dot<T, KC>(w, sW, GH, tid, sdg + (r * G + ug) * Hp, Hp);
      }
    }
  }
  if (t0 > 0) {  // dh_{t0-1}, dc_{t0-1} for the chunk before
    __syncthreads();
    if (item) {
      T dsum = sp[ir * GH + ij];
      for (int g = 1; g < G; ++g) dsum += sp[ir * GH + g * H + ij];
      dh[bj] = dsum + carry;
      if (cell == RnnCell::lstm) dc[bj] = dcr;
    }
  }
  cp_async_wait<0>();
}

// ---------------------------------------------------------------------------------------------------
using Dims = kernels::RnnDims;

template <typename T>
const T* opt_ptr(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

// ---------------------------------------------------------------------------------------------------
// When and how the persistent kernels run.
struct DeviceLimits {
  int sms = 1, smem_optin = 48 * 1024;
};
// The current device's SM count and opt-in shared memory per block, asked once per device.
DeviceLimits device_limits() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  static std::mutex mu;
  static std::map<int, DeviceLimits> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(dev);
  if (it != cache.end()) return it->second;
  DeviceLimits l;
  check(cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&l.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
        "cudaDeviceGetAttribute");
  cache[dev] = l;
  return l;
}

// kc: W_hh's slice per thread in registers (16, 32, 64) or 0 for shared memory; -1: the persistent
// kernel does not fit (the per-step path runs). R rows per block, D prefetch slots, Hp = H rounded up
// to 4, threads per block, grid blocks, smem bytes of dynamic shared memory.
struct PersistentPlan {
  int kc = -1, R = 1, D = 2, Hp = 0, threads = 0;
  unsigned grid = 0;
  size_t smem = 0;
};

template <typename T>
PersistentPlan plan_persistent(RnnCell cell, const Dims& d, bool backward) {
  PersistentPlan p;
  const int64_t H = d.H, G = d.G, GH = G * H, Hp = (H + 3) / 4 * 4;
  int kc = 0;
  if (H <= 16) kc = 16;
  else if (H <= 32) kc = 32;
  else if (std::is_same_v<T, float> && H <= 64) kc = 64;
  const int64_t S = cell == RnnCell::tanh ? 2 : cell == RnnCell::lstm ? 7 : 6;  // backward ring values per unit
  auto elems = [&](int64_t R, int64_t D) {
    int64_t n = kc > 0 ? 0 : Hp * GH;
    if (backward) n += R * G * Hp + R * GH + D * S * R * H;
    else n += 2 * R * Hp + (cell == RnnCell::tanh ? 0 : R * 4 * H) + D * R * GH;
    return n;
  };
  const DeviceLimits lim = device_limits();
  const int64_t max_threads = kc > 0 ? 256 : 1024;  // the kernels' launch bounds
  // Enough rows per block that the blocks fit on the SMs at once, at most kMaxRows.
  const int64_t R0 = std::clamp<int64_t>((d.B + lim.sms - 1) / lim.sms, 1, kMaxRows);
  for (int64_t R = std::min<int64_t>(R0, d.B); R >= 1; --R) {
    const int64_t threads = (std::max(GH, R * H) + 31) / 32 * 32;
    if (threads > max_threads) continue;
    for (int64_t D : {8, 4, 2}) {
      const int64_t bytes = elems(R, D) * static_cast<int64_t>(sizeof(T));
      if (bytes > lim.smem_optin) continue;
      p.kc = kc;
      p.R = static_cast<int>(R);
      p.D = static_cast<int>(D);
      p.Hp = static_cast<int>(Hp);
      p.threads = static_cast<int>(threads);
      p.grid = static_cast<unsigned>((d.B + R - 1) / R);
      p.smem = static_cast<size_t>(bytes);
      return p;
    }
  }
  return p;
}

// Calls f.template operator()<KC>() for the plan's kc (double: no 64).
template <typename T, typename F>
void dispatch_kc(int kc, F&& f) {
  switch (kc) {
    case 16: f.template operator()<16>(); break;
    case 32: f.template operator()<32>(); break;
    case 64:
      if constexpr (std::is_same_v<T, float>) f.template operator()<64>();
      break;
    default: f.template operator()<0>(); break;
  }
}

// Lets `kernel` use the plan's dynamic shared memory (beyond 48 KB needs the opt-in).
template <typename K>
void allow_smem(K kernel, size_t bytes, const char* what) {
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), what);
}

template <typename T>
void forward_impl(RnnCell cell, const Dims& d, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                  const Tensor& b_ih, const Tensor& b_hh, const Tensor& h0, const Tensor& c0, RnnForward& f) {
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, GH = d.G * d.H;
  const DType dt = x.dtype();
  T* y = ptr<T>(f.y);
  T* gates = f.gates.defined() ? ptr<T>(f.gates) : nullptr;
  T* c = f.c.defined() ? ptr<T>(f.c) : nullptr;
  const T* wih = ptr<T>(w_ih);
  const T* whh = ptr<T>(w_hh);
  const T* bih = opt_ptr<T>(b_ih);
  const T* bhh = opt_ptr<T>(b_hh);
  const T* h0p = opt_ptr<T>(h0);
  const T* c0p = opt_ptr<T>(c0);
  // The input projection lands where the step kernel reads it: in y (tanh) or in the gate buffer.
  T* proj = cell == RnnCell::tanh ? y : gates;
  const int64_t ldp = cell == RnnCell::tanh ? H : 4 * H;
  gemm<T>(false, true, B * T_, GH, I, T(1), ptr<T>(x), I, wih, I, T(0), proj, ldp, "rnn_forward: input GEMM");
  add_bias_kernel<T><<<blocks_for(B * T_ * GH, kThreads), kThreads, 0, stream()>>>(
      proj, B * T_, GH, ldp, bih, bhh, cell == RnnCell::gru ? 2 * H : GH);
  check_launch("rnn_forward: add_bias_kernel");
  const PersistentPlan plan = plan_persistent<T>(cell, d, false);
  if (plan.kc >= 0) {
    dispatch_kc<T>(plan.kc, [&]<int KC>() {
      auto kernel = forward_persistent_kernel<T, KC>;
      allow_smem(kernel, plan.smem, "rnn_forward: cudaFuncSetAttribute");
      kernel<<<plan.grid, plan.threads, plan.smem, stream()>>>(
          cell, static_cast<int>(B), static_cast<int>(T_), static_cast<int>(H), static_cast<int>(d.G), plan.R,
          plan.D, plan.Hp, whh, proj, static_cast<int>(ldp), h0p, c0p, bhh, y, gates, c);
      check_launch("rnn_forward: forward_persistent_kernel");
    });
  } else {  // the per-step path: W_hh too large for one block
    Tensor hg_t = empty({B, GH}, dt);  // W_hh h_{t-1} of one step
    T* hg = ptr<T>(hg_t);
    for (int64_t t = 0; t < T_; ++t) {
      // h_{t-1} of batch row b is hp[b * ldh]; null when it is zero
      const T* hp = t > 0 ? y + (t - 1) * H : h0p;
      const int64_t ldh = t > 0 ? T_ * H : H;
      if (hp) gemm<T>(false, true, B, GH, H, T(1), hp, ldh, whh, H, T(0), hg, GH, "rnn_forward: recurrent GEMM");
      forward_step_kernel<T><<<blocks_for(B * H, kThreads), kThreads, 0, stream()>>>(
          cell, B, T_, H, t, hp ? hg : nullptr, h0p, c0p, bhh, y, gates, c);
      check_launch("rnn_forward: forward_step_kernel");
    }
  }
  f.h_last = empty({B, H}, dt);
  last_step_kernel<T><<<blocks_for(B * H, kThreads), kThreads, 0, stream()>>>(y, ptr<T>(f.h_last), B, T_, H);
  check_launch("rnn_forward: last_step_kernel");
  if (cell == RnnCell::lstm) {
    f.c_last = empty({B, H}, dt);
    last_step_kernel<T><<<blocks_for(B * H, kThreads), kThreads, 0, stream()>>>(c, ptr<T>(f.c_last), B, T_, H);
    check_launch("rnn_forward: last_step_kernel");
  }
}

template <typename T>
void backward_impl(RnnCell cell, const Dims& d, const Tensor& dy_t, const Tensor& x_t, const Tensor& w_ih_t,
                   const Tensor& w_hh_t, const RnnForward& f, const Tensor& dgx_t, const Tensor& dgh_t,
                   const Tensor& xs_t, const Tensor& hs_t, const Tensor& dh_t, const Tensor& dc_t, RnnGrads& g,
                   const Tensor& db_x_t, const Tensor& db_h_t, int64_t Tc) {
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, GH = d.G * d.H;
  const T* dy = ptr<T>(dy_t);
  const T* x = ptr<T>(x_t);
  const T* w_ih = ptr<T>(w_ih_t);
  const T* w_hh = ptr<T>(w_hh_t);
  const T* y = ptr<T>(f.y);
  const T* gates = cell == RnnCell::tanh ? nullptr : ptr<T>(f.gates);
  const T* c = cell == RnnCell::lstm ? ptr<T>(f.c) : nullptr;
  T* dgx = ptr<T>(dgx_t);
  T* dgh = ptr<T>(dgh_t);
  T* dh = ptr<T>(dh_t);
  T* dc = dc_t.defined() ? ptr<T>(dc_t) : nullptr;
  T* dx = g.dx.defined() ? ptr<T>(g.dx) : nullptr;
  T* dw_ih = g.dw_ih.defined() ? ptr<T>(g.dw_ih) : nullptr;
  T* dw_hh = g.dw_hh.defined() ? ptr<T>(g.dw_hh) : nullptr;
  double* db_x = db_x_t.defined() ? ptr<double>(db_x_t) : nullptr;
  double* db_h = db_h_t.defined() ? ptr<double>(db_h_t) : nullptr;
  const PersistentPlan plan = plan_persistent<T>(cell, d, true);
  const int64_t n_tchunks = (T_ + Tc - 1) / Tc;
  // Row-tile partials of the bias gradients, max_tiles rows per time chunk (core/cuda/column_reduce.cuh)
  const int64_t max_tiles = column_tiles(B * std::min(T_, Tc));
  const Tensor pb_x = db_x ? zeros({n_tchunks * max_tiles, GH}, DType::f64) : Tensor();
  const Tensor pb_h = db_h ? zeros({n_tchunks * max_tiles, GH}, DType::f64) : Tensor();
  for (int64_t tc = n_tchunks - 1; tc >= 0; --tc) {
    const int64_t t0 = tc * Tc, t1 = std::min(T_, t0 + Tc), L = t1 - t0;
    if (plan.kc >= 0) {
      dispatch_kc<T>(plan.kc, [&]<int KC>() {
        auto kernel = backward_persistent_kernel<T, KC>;
        allow_smem(kernel, plan.smem, "rnn_backward: cudaFuncSetAttribute");
        kernel<<<plan.grid, plan.threads, plan.smem, stream()>>>(
            cell, static_cast<int>(B), static_cast<int>(T_), static_cast<int>(H), static_cast<int>(d.G), plan.R,
            plan.D, plan.Hp, static_cast<int>(t0), static_cast<int>(L), w_hh, dy, y, gates, c, dh, dc, dgx, dgh);
        check_launch("rnn_backward: backward_persistent_kernel");
      });
    } else {
      for (int64_t t = t1 - 1; t >= t0; --t) {
        backward_step_kernel<T><<<blocks_for(B * H, kThreads), kThreads, 0, stream()>>>(
            cell, B, T_, H, t, t0, L, dy, y, gates, c, dh, dc, dgx, dgh);
        check_launch("rnn_backward: backward_step_kernel");
        // dh_{t-1} (+)= da_h (B, GH; row stride L*GH) @ W_hh (GH, H); nothing flows into the zero state
        if (t > 0)
          gemm<T>(false, false, B, H, GH, T(1), dgh + (t - t0) * GH, L * GH, w_hh, H,
                  cell == RnnCell::gru ? T(1) : T(0), dh, H, "rnn_backward: recurrent GEMM");
      }
    }
    // dx rows (b, t0..t1) = da_x (L, GH) @ W_ih (GH, I) for every b
    if (dx) {
      if (L == T_)
        gemm<T>(false, false, B * T_, I, GH, T(1), dgx, GH, w_ih, I, T(0), dx, I, "rnn_backward: dx GEMM");
      else
        gemm_batched<T>(false, false, L, I, GH, T(1), dgx, GH, L * GH, w_ih, I, 0, T(0), dx + t0 * I, I, T_ * I, B,
                        "rnn_backward: dx GEMM");
    }
    // over the chunk's B * L rows: dW_ih += da_x^T x, dW_hh += da_h^T h_prev (chunks in order)
    const int64_t R = B * L;
    const T beta = tc == n_tchunks - 1 ? T(0) : T(1);
    if (dw_ih) {
      const T* xs = x;  // the whole sequence is one chunk: x's rows as they are
      if (L != T_) {
        T* xg = ptr<T>(xs_t);
        gather_rows_kernel<T><<<blocks_for(R * I, kThreads), kThreads, 0, stream()>>>(x, xg, B, T_, L, I, t0, 0);
        check_launch("rnn_backward: gather_rows_kernel");
        xs = xg;
      }
      gemm<T>(true, false, GH, I, R, T(1), dgx, GH, xs, I, beta, dw_ih, I, "rnn_backward: dW_ih GEMM");
    }
    if (dw_hh) {
      T* hs = ptr<T>(hs_t);
      gather_rows_kernel<T><<<blocks_for(R * H, kThreads), kThreads, 0, stream()>>>(y, hs, B, T_, L, H, t0, -1);
      check_launch("rnn_backward: gather_rows_kernel");
      gemm<T>(true, false, GH, H, R, T(1), dgh, GH, hs, H, beta, dw_hh, H, "rnn_backward: dW_hh GEMM");
    }
    // bias gradients: this chunk's row tiles of the gate gradients' column sums, added once below
    if (db_x) column_partials_into<T>(dgx, R, GH, ptr<double>(pb_x) + tc * max_tiles * GH, "rnn_backward: db_ih");
    if (db_h) column_partials_into<T>(dgh, R, GH, ptr<double>(pb_h) + tc * max_tiles * GH, "rnn_backward: db_hh");
  }
  // += the tiles of every chunk in order (a short last chunk leaves zero rows: exact)
  if (db_x) sum_partials_into<double, true>(pb_x, n_tchunks * max_tiles, GH, db_x, "rnn_backward: db_ih");
  if (db_h) sum_partials_into<double, true>(pb_h, n_tchunks * max_tiles, GH, db_h, "rnn_backward: db_hh");
}

template <typename T>
Tensor to_dtype(const Tensor& acc, DType dt) {
  Tensor out = empty(acc.shape(), dt);
  from_double_kernel<T><<<blocks_for(acc.numel(), kThreads), kThreads, 0, stream()>>>(ptr<double>(acc), ptr<T>(out),
                                                                                      acc.numel());
  check_launch("rnn_backward: from_double_kernel");
  return out;
}

}  // namespace

RnnForward rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                       const Tensor& b_hh, const Tensor& h0, const Tensor& c0) {
  Dims d = kernels::check_rnn_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0);
  const char* name = kernels::rnn_cell_name(cell);
  RnnForward f;
  const DType dt = x.dtype();
  dispatch_float(dt, name, [&]<typename T>() {
    f.y = empty({d.B, d.T, d.H}, dt);
    if (cell != RnnCell::tanh) f.gates = empty({d.B, d.T, 4 * d.H}, dt);
    if (cell == RnnCell::lstm) f.c = empty({d.B, d.T, d.H}, dt);
    forward_impl<T>(cell, d, x, w_ih, w_hh, b_ih, b_hh, h0, c0, f);
  });
  return f;
}

RnnGrads rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                      const RnnForward& f, bool need_dx, bool need_dw_ih, bool need_dw_hh, bool need_db_ih,
                      bool need_db_hh, int64_t time_chunk) {
  Dims d = kernels::check_rnn_backward(cell, dy, x, w_ih, w_hh, f);
  const char* name = kernels::rnn_cell_name(cell);
  const int64_t GH = d.G * d.H;
  const DType dt = x.dtype();
  RnnGrads g;
  // Time chunk as the CPU: about kChunkRows rows of gate gradients at once (Tc = T when B * T is small).
  constexpr int64_t kChunkRows = 8192;
  const int64_t Tc = std::min(d.T, time_chunk > 0 ? time_chunk : std::max<int64_t>(1, (kChunkRows + d.B - 1) / d.B));
  const int64_t R = d.B * Tc;
  dispatch_float(dt, name, [&]<typename T>() {
    // Gate pre-activation gradients of one time chunk, (B, L, GH): the input side (da_x) and, for the
    // gru, a separate recurrent side (da_h); the tanh rnn and lstm share one.
    Tensor dgx = empty({R, GH}, dt);
    Tensor dgh = cell == RnnCell::gru ? empty({R, GH}, dt) : dgx;
    Tensor xs = need_dw_ih && Tc < d.T ? empty({R, d.I}, dt) : Tensor();
    Tensor hs = need_dw_hh ? empty({R, d.H}, dt) : Tensor();
    Tensor dh = zeros({d.B, d.H}, dt);
    Tensor dc = cell == RnnCell::lstm ? zeros({d.B, d.H}, dt) : Tensor();
    if (need_dx) g.dx = empty(x.shape(), dt);
    if (need_dw_ih) g.dw_ih = empty(w_ih.shape(), dt);
    if (need_dw_hh) g.dw_hh = empty(w_hh.shape(), dt);
    const bool shared = cell != RnnCell::gru;  // db_hh = db_ih when da_h = da_x
    Tensor db_x = need_db_ih || (shared && need_db_hh) ? zeros({GH}, DType::f64) : Tensor();
    Tensor db_h = !shared && need_db_hh ? zeros({GH}, DType::f64) : Tensor();
    backward_impl<T>(cell, d, dy, x, w_ih, w_hh, f, dgx, dgh, xs, hs, dh, dc, g, db_x, db_h, Tc);
    if (need_db_ih) g.db_ih = to_dtype<T>(db_x, dt);
    if (need_db_hh) g.db_hh = to_dtype<T>(shared ? db_x : db_h, dt);
  });
  return g;
}

}  // namespace seqlab::cuda
