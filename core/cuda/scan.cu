// Selective scan of Mamba-1 on the device (equations in core/kernels/scan.h, layout notes in
// core/cuda/scan.h).
//
// Forward: float32 / float64 with N <= 64 (and no every-state output) takes the tiled kernel
// (scan_fwd_tiled_kernel: a block per (b, 32 channels), T walked in tiles staged through shared
// memory with coalesced cp.async copies, double-buffered); the step, the every-state reference and
// N > 64 take scan_fwd_kernel below.
//
// Thread layout of scan_fwd_kernel and the backward: a group of G lanes (G = 4, 8, 16 or 32, a power of two >= N up to
// 32) of one warp holds one channel (b, e); lane l holds the states n = l + p G, p < PER (PER = 1, 2,
// 4, 8 for N up to 32, 64, 128, 256). Lanes with n >= N hold a zero state (A = B = C = 0 there) and
// take part in the shuffles only. Sums over n: the PER values of a lane in order, then an xor
// butterfly over the group (every lane ends with the same bits).
//
// Backward of one block (Cb channels of batch row b, channel group j): for each chunk of L steps,
// last to first, from its checkpoint (or zero): a forward pass storing a sub-checkpoint every S
// steps (S ~ sqrt(L)), then per sub-chunk, last to first, a forward pass storing each state into
// shared memory and the reverse recurrence over it. Each sub-chunk's inputs (u, delta, dy, z of the
// block's channels, B, C) are staged in shared memory with coalesced loads and its du, ddelta, dz
// written back with coalesced stores. The per-(t, n) products of dB, dC are staged in
// shared memory and summed over the block's channels in channel order into the block's partial row
// of (ng, B, T, N); dA, dD, ddelta_bias accumulate in registers over T and go to (B, E, N) / (B, E)
// partials. A second kernel sums the partials over their first axis in index order.
#include <algorithm>
#include <cmath>

#include "core/cuda/common.cuh"
#include "core/cuda/scan.h"
#include "core/dtype.h"

namespace seqlab::cuda {
namespace {

constexpr int64_t kMaxN = 256;  // as the CPU kernels
constexpr int kThreads = 256;

__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog1p(float x) { return log1pf(x); }
__device__ __forceinline__ double dlog1p(double x) { return log1p(x); }

template <typename T>
__device__ __forceinline__ T softplus(T x) {
  return x > T(20) ? x : dlog1p(dexp(x));
}
template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + dexp(-x));
  const T e = dexp(x);
  return e / (T(1) + e);
}

// Sum over the G lanes of a group (xor butterfly: a fixed order, the same bits in every lane).
template <int G, typename T>
__device__ __forceinline__ T group_sum(T v) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
struct ScanPtrs {
  const T *u, *delta, *A, *Bm, *Cm, *D, *z, *bias;
  bool softplus;
  int64_t B, T_, E, N;
};

template <typename T>
ScanPtrs<T> make_ptrs(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                      const Tensor& D, const ScanExtras& ex, int64_t B, int64_t T_, int64_t E, int64_t N) {
  return ScanPtrs<T>{ptr<T>(u),  ptr<T>(delta), ptr<T>(A), ptr<T>(Bm), ptr<T>(Cm), ptr<T>(D),
                     ex.z.defined() ? ptr<T>(ex.z) : nullptr,
                     ex.delta_bias.defined() ? ptr<T>(ex.delta_bias) : nullptr,
                     ex.delta_softplus, B, T_, E, N};
}

// Where the state at the start of chunk kc >= 1 lives: base[b sb + (kc-1) sk + n sn + e se].
template <typename T>
struct CkView {
  const T* base;
  int64_t sb, sk, sn, se;
  __device__ T at(int64_t b, int64_t kc, int64_t n, int64_t e) const {
    return base[b * sb + (kc - 1) * sk + n * sn + e * se];
  }
};

// ---- forward -------------------------------------------------------------------------------------

// One group per channel bc = b E + e (flattened), kThreads / G channels per block. ck: checkpoints
// (B, nc - 1, N, E) or null; states: every state (B, T, E, N) or null; h0: initial state (B, E, N)
// or null (zero); hT: final state (B, E, N) or null (h0 == hT: the step, in place).
template <typename T, int G, int PER>
__global__ void __launch_bounds__(kThreads) scan_fwd_kernel(ScanPtrs<T> s, int64_t L, T* y, T* ck, T* states,
                                                            const T* h0, T* hT) {
  const int lane = threadIdx.x % G;
  const int64_t chan = static_cast<int64_t>(blockIdx.x) * (blockDim.x / G) + threadIdx.x / G;
  const bool valid = chan < s.B * s.E;
  const int64_t bc = valid ? chan : 0;
  const int64_t E = s.E, N = s.N, T_ = s.T_, b = bc / E, e = bc % E, nc = (T_ + L - 1) / L;
  T a[PER], h[PER];
  bool has[PER];
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    const int64_t n = lane + p * G;
    has[p] = valid && n < N;
    a[p] = has[p] ? s.A[e * N + n] : T(0);
    h[p] = has[p] && h0 ? h0[bc * N + n] : T(0);
  }
  const T Dc = s.D[e], bias_c = s.bias ? s.bias[e] : T(0);
  for (int64_t t = 0; t < T_; ++t) {
    if (ck && t > 0 && t % L == 0) {
#pragma unroll
      for (int p = 0; p < PER; ++p)
        if (has[p]) ck[((b * (nc - 1) + t / L - 1) * N + lane + p * G) * E + e] = h[p];
    }
    const int64_t idx = (b * T_ + t) * E + e, row = (b * T_ + t) * N;
    const T uu = s.u[idx], pre = s.delta[idx] + bias_c;
    const T dl = s.softplus ? softplus(pre) : pre;
    const T du = dl * uu;
    T acc = T(0);
#pragma unroll
    for (int p = 0; p < PER; ++p)
      if (has[p]) {
        const int64_t n = lane + p * G;
        h[p] = dexp(dl * a[p]) * h[p] + du * s.Bm[row + n];
        acc += h[p] * s.Cm[row + n];
        if (states) states[idx * N + n] = h[p];
      }
    acc = group_sum<G>(acc);
    T out = Dc * uu + acc;
    if (s.z) {
      const T zz = s.z[idx];
      out = out * zz * sigmoid(zz);
    }
    if (valid && lane == 0) y[idx] = out;
  }
  if (hT) {
#pragma unroll
    for (int p = 0; p < PER; ++p)
      if (has[p]) hT[bc * N + lane + p * G] = h[p];
  }
}

// ---- forward, tiled fast path ------------------------------------------------------------------
//
// One block per (batch row b, tile of kCT consecutive channels e0 .. e0 + kCT - 1); G lanes per
// channel, lane l holds the states n = l PER .. l PER + PER - 1 (contiguous: vector loads of B, C);
// kCT G threads. T is walked in tiles of TT steps: u, delta, z (TT x kCT, rows of kCT contiguous
// channels: coalesced) and B, C (TT x NP, once per block, shared by its channels) are copied into
// shared memory with cp.async, double-buffered (tile k + 1 loads while tile k is scanned). Per tile:
// a prep pass (delta <- softplus(delta + bias), du = delta u, one element per thread), the scan
// (registers; the sum over n: the PER values of a lane in order, then the xor butterfly over the
// group), an epilogue writing y = (C.h + D u) silu(z) with coalesced stores. Same outputs and
// checkpoints as scan_fwd_kernel. Fixed order everywhere: bit-identical reruns.
constexpr int kCT = 32;  // channels per block

template <typename T>
constexpr int fast_tt() {
  return sizeof(T) == 4 ? 64 : 32;  // time steps per tile
}

template <int BYTES>
__device__ __forceinline__ void cp_async(void* dst, const void* src, bool pred) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int n = pred ? BYTES : 0;  // 0: zero-fill, nothing read
  if constexpr (BYTES == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(d), "l"(src), "n"(BYTES), "r"(n)
                 : "memory");
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int K>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(K) : "memory");
}

template <typename T, int NP>
struct FastTile {
  static constexpr int TT = fast_tt<T>();
  static constexpr int kU = 0, kD = TT * kCT, kZ = 2 * TT * kCT, kB = 3 * TT * kCT, kC = kB + TT * NP;
  static constexpr int kBuf = kC + TT * NP;       // one buffer: u, delta, z [TT][kCT], B, C [TT][NP]
  static constexpr int kElems = 2 * kBuf + 2 * TT * kCT;  // two buffers, du and acc [TT][kCT]
  static constexpr size_t kBytes = static_cast<size_t>(kElems) * sizeof(T);
};

// Copies (b, t0 .. t0 + TT - 1, e0 .. e0 + kCT - 1) of u, delta, z and (b, t0 .., 0 .. NP - 1) of
// B, C into buf; out-of-range elements are zero. vec: 16-byte copies (E a multiple of 16 / sizeof(T)
// and the pointers 16-byte aligned).
template <typename T, int NP>
__device__ __forceinline__ void fast_load_tile(const ScanPtrs<T>& s, int64_t b, int64_t t0, int64_t e0, T* buf,
                                               bool vec, int tid, int nthreads) {
  using F = FastTile<T, NP>;
  constexpr int TT = F::TT;
  const int len = static_cast<int>(min(static_cast<int64_t>(TT), s.T_ - t0));
  const int ce = static_cast<int>(min(static_cast<int64_t>(kCT), s.E - e0));
  const int64_t base = (b * s.T_ + t0) * s.E + e0;
  const int nsrc = s.z ? 3 : 2;
  if (vec) {
    constexpr int V = 16 / sizeof(T), RV = kCT / V;
    for (int q = tid; q < nsrc * TT * RV; q += nthreads) {
      const int w = q / (TT * RV), r = q % (TT * RV), i = r / RV, c = (r % RV) * V;
      const bool ok = i < len && c < ce;
      const T* src = (w == 0 ? s.u : w == 1 ? s.delta : s.z) + (ok ? base + i * s.E + c : 0);
      cp_async<16>(buf + w * TT * kCT + i * kCT + c, src, ok);
    }
  } else {
    for (int q = tid; q < nsrc * TT * kCT; q += nthreads) {
      const int w = q / (TT * kCT), r = q % (TT * kCT), i = r / kCT, c = r % kCT;
      const bool ok = i < len && c < ce;
      const T* src = (w == 0 ? s.u : w == 1 ? s.delta : s.z) + (ok ? base + i * s.E + c : 0);
      cp_async<sizeof(T)>(buf + w * TT * kCT + r, src, ok);
    }
  }
  const int Ni = static_cast<int>(s.N);
  const int64_t rb = (b * s.T_ + t0) * s.N;
  for (int q = tid; q < 2 * TT * NP; q += nthreads) {
    const int w = q / (TT * NP), r = q % (TT * NP), i = r / NP, n = r % NP;
    const bool ok = i < len && n < Ni;
    const T* src = (w ? s.Cm : s.Bm) + (ok ? rb + i * s.N + n : 0);
    cp_async<sizeof(T)>(buf + F::kB + w * TT * NP + r, src, ok);
  }
}

template <typename T, int PER>
struct alignas(sizeof(T) * PER) VecT {
  T v[PER];
};

template <typename T, int G, int PER>
__global__ void __launch_bounds__(kCT * G) scan_fwd_tiled_kernel(ScanPtrs<T> s, int64_t L, T* y, T* ck, bool vec,
                                                                  int nblk_e) {
  constexpr int NP = G * PER, NT = kCT * G;
  using F = FastTile<T, NP>;
  constexpr int TT = F::TT;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const sm = reinterpret_cast<T*>(smem_raw);
  T* const s_du = sm + 2 * F::kBuf;
  T* const s_acc = s_du + TT * kCT;

  const int tid = threadIdx.x, c = tid / G, lane = tid % G, cc = tid % kCT;  // cc: prep/epilogue channel
  const int64_t b = blockIdx.x / nblk_e, e0 = static_cast<int64_t>(blockIdx.x % nblk_e) * kCT;
  const int64_t E = s.E, N = s.N, T_ = s.T_, nc = (T_ + L - 1) / L;
  const int64_t e = e0 + c, ecc = e0 + cc;
  const bool ve = e < E, vcc = ecc < E;
  T a[PER], h[PER];
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    const int64_t n = lane * PER + p;
    a[p] = ve && n < N ? s.A[e * N + n] : T(0);
    if constexpr (sizeof(T) == 4) a[p] *= 1.4426950408889634f;  // exp(x) = exp2(x log2 e)
    h[p] = T(0);
  }
  const T Dc = vcc ? s.D[ecc] : T(0), bias_c = s.bias && vcc ? s.bias[ecc] : T(0);
  const int ntiles = static_cast<int>((T_ + TT - 1) / TT);
  int64_t next_ck = ck ? L : T_;  // the next step before which the state is checkpointed

  fast_load_tile<T, NP>(s, b, 0, e0, sm, vec, tid, NT);
  cp_async_commit();
  for (int k = 0; k < ntiles; ++k) {
    T* const buf = sm + (k & 1) * F::kBuf;
    if (k + 1 < ntiles) fast_load_tile<T, NP>(s, b, static_cast<int64_t>(k + 1) * TT, e0, sm + ((k + 1) & 1) * F::kBuf, vec, tid, NT);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int64_t t0 = static_cast<int64_t>(k) * TT;
    const int len = static_cast<int>(min(static_cast<int64_t>(TT), T_ - t0));
    T* const su = buf + F::kU;
    T* const sd = buf + F::kD;
    T* const sz = buf + F::kZ;
    const T* const sB = buf + F::kB;
    const T* const sC = buf + F::kC;
    // prep: delta <- softplus(delta + bias), du = delta u
    for (int q = tid; q < len * kCT; q += NT) {
      const T pre = sd[q] + bias_c;
      const T dl = s.softplus ? softplus(pre) : pre;
      sd[q] = dl;
      s_du[q] = dl * su[q];
    }
    __syncthreads();
    // scan
#pragma unroll(sizeof(T) == 4 ? 4 : 2)
    for (int i = 0; i < len; ++i) {
      if (t0 + i == next_ck) {
        if (ve) {
#pragma unroll
          for (int p = 0; p < PER; ++p)
            if (lane * PER + p < N) ck[((b * (nc - 1) + next_ck / L - 1) * N + lane * PER + p) * E + e] = h[p];
        }
        next_ck += L;
      }
      const T dl = sd[i * kCT + c], du = s_du[i * kCT + c];
      const VecT<T, PER> bv = *reinterpret_cast<const VecT<T, PER>*>(sB + i * NP + lane * PER);
      const VecT<T, PER> cv = *reinterpret_cast<const VecT<T, PER>*>(sC + i * NP + lane * PER);
      T acc = T(0);
#pragma unroll
      for (int p = 0; p < PER; ++p) {
        T da;
        if constexpr (sizeof(T) == 4) {
          da = exp2f(dl * a[p]);
        } else {
          da = dexp(dl * a[p]);
        }
        h[p] = da * h[p] + du * bv.v[p];
        acc += h[p] * cv.v[p];
      }
      acc = group_sum<G>(acc);
      if (lane == 0) s_acc[i * kCT + c] = acc;
    }
    __syncthreads();
    // epilogue: y = (C.h + D u) silu(z), coalesced
    if (vcc) {
      for (int q = tid; q < len * kCT; q += NT) {
        T out = s_acc[q] + Dc * su[q];
        if (s.z) {
          const T zz = sz[q];
          out = out * zz * sigmoid(zz);
        }
        y[(b * T_ + t0 + q / kCT) * E + ecc] = out;
      }
    }
    __syncthreads();  // buf is refilled by the next iteration's copies
  }
}

// ---- backward ------------------------------------------------------------------------------------

template <typename T>
struct BwdArgs {
  const T* dy;
  CkView<T> ck;
  int64_t L, ng;
  int S, nsub, Cb;
  T *du, *ddelta, *dz;                // (B, T, E); dz null without the gate
  T *dA_part, *dD_part, *dbias_part;  // (B, E, N), (B, E), (B, E)
  T *dB_part, *dC_part;               // (ng, B, T, N), zero on entry
};

template <typename T, int G, int PER>
__global__ void __launch_bounds__(kThreads) scan_bwd_kernel(ScanPtrs<T> s, BwdArgs<T> o) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int NP = G * PER;
  const int Cb = o.Cb, S = o.S;
  const size_t SC = static_cast<size_t>(S) * Cb;
  T* const subck = reinterpret_cast<T*>(smem_raw);                 // [nsub][Cb][NP]
  T* const hist = subck + static_cast<size_t>(o.nsub) * Cb * NP;  // [S + 1][Cb][NP]: states of a sub-chunk
  T* const pbs = hist + static_cast<size_t>(S + 1) * Cb * NP;     // [S][Cb][NP]: dh_t dl_t u_t (dB terms)
  T* const opre_s = pbs + SC * NP;                                // [S][Cb]: output before the gate
  T* const dout_s = opre_s + SC;                                  // [S][Cb]: dL/d(output before the gate)
  // The sub-chunk's inputs [S][Cb] (u, softplus'd delta, delta + bias, dy, z) and B, C [S][NP], staged
  // with coalesced loads (consecutive threads: consecutive channels), and its outputs du, ddelta, dz
  // [S][Cb], written back with coalesced stores.
  T* const st_u = dout_s + SC;
  T* const st_dl = st_u + SC;
  T* const st_pre = st_dl + SC;
  T* const st_dy = st_pre + SC;
  T* const st_z = st_dy + SC;
  T* const st_du = st_z + SC;
  T* const st_dd = st_du + SC;
  T* const st_dz = st_dd + SC;
  T* const st_B = st_dz + SC;
  T* const st_C = st_B + static_cast<size_t>(S) * NP;

  const int chl = threadIdx.x / G, lane = threadIdx.x % G;
  const int64_t j = blockIdx.x, b = blockIdx.y;
  const int64_t E = s.E, N = s.N, T_ = s.T_, L = o.L, nc = (T_ + L - 1) / L;
  const int64_t e_lo = E * j / o.ng, e_hi = E * (j + 1) / o.ng;
  T* const dBp = o.dB_part + j * s.B * T_ * N;
  T* const dCp = o.dC_part + j * s.B * T_ * N;
  const int Ni = static_cast<int>(N);
  auto has = [&](int p) { return lane + p * G < Ni; };  // lane's p-th state is a real one

  for (int64_t c0 = e_lo; c0 < e_hi; c0 += Cb) {  // the block's channels, Cb at a time
    const int cvalid = static_cast<int>(min(static_cast<int64_t>(Cb), e_hi - c0));
    const bool valid = chl < cvalid;
    const int64_t e = valid ? c0 + chl : c0;  // idle groups shadow a real channel and write nothing
    // Stages steps tb .. tb + lens - 1 (full: also dy, z, C); the whole block calls it.
    auto stage = [&](int64_t tb, int lens, bool full) {
      __syncthreads();
      for (int q = threadIdx.x; q < lens * Cb; q += blockDim.x) {
        const int i = q / Cb, ch = q % Cb;
        const int64_t ee = c0 + min(ch, cvalid - 1);
        const int64_t idx = (b * T_ + tb + i) * E + ee;
        const T pre = s.delta[idx] + (s.bias ? s.bias[ee] : T(0));
        st_u[q] = s.u[idx];
        st_dl[q] = s.softplus ? softplus(pre) : pre;
        if (full) {
          st_pre[q] = pre;
          st_dy[q] = o.dy[idx];
          if (s.z) st_z[q] = s.z[idx];
        }
      }
      for (int q = threadIdx.x; q < lens * Ni; q += blockDim.x) {
        const int i = q / Ni, n = q % Ni;
        const int64_t r = (b * T_ + tb + i) * N + n;
        st_B[i * NP + n] = s.Bm[r];
        if (full) st_C[i * NP + n] = s.Cm[r];
      }
      __syncthreads();
    };
    T a[PER], dh[PER], dAacc[PER];
#pragma unroll
    for (int p = 0; p < PER; ++p) {
      const int64_t n = lane + p * G;
      a[p] = has(p) ? s.A[e * N + n] : T(0);
      dh[p] = T(0);
      dAacc[p] = T(0);
    }
    const T Dc = s.D[e];
    T dD = T(0), dbias = T(0);

    for (int64_t kc = nc - 1; kc >= 0; --kc) {
      const int64_t t0 = kc * L;
      const int len = static_cast<int>(min(T_, t0 + L) - t0);
      const int ns = (len + S - 1) / S;
      T h[PER];
#pragma unroll
      for (int p = 0; p < PER; ++p) h[p] = kc > 0 && has(p) ? o.ck.at(b, kc, lane + p * G, e) : T(0);
      // Sub-checkpoints: the state before steps 0, S, 2S, ... of the chunk.
      for (int si = 0; si < ns - 1; ++si) {
#pragma unroll
        for (int p = 0; p < PER; ++p) subck[(static_cast<size_t>(si) * Cb + chl) * NP + p * G + lane] = h[p];
        stage(t0 + static_cast<int64_t>(si) * S, S, false);
        for (int i = 0; i < S; ++i) {
          const T dl = st_dl[i * Cb + chl];
          const T du = dl * st_u[i * Cb + chl];
#pragma unroll
          for (int p = 0; p < PER; ++p)
            if (has(p)) h[p] = dexp(dl * a[p]) * h[p] + du * st_B[i * NP + lane + p * G];
        }
      }
#pragma unroll
      for (int p = 0; p < PER; ++p) subck[(static_cast<size_t>(ns - 1) * Cb + chl) * NP + p * G + lane] = h[p];

      for (int si = ns - 1; si >= 0; --si) {
        const int ts = si * S, lens = min(S, len - ts);
        stage(t0 + ts, lens, true);
        // Recompute the sub-chunk's states into shared memory (slot i + 1: the state after step i).
#pragma unroll
        for (int p = 0; p < PER; ++p) {
          h[p] = subck[(static_cast<size_t>(si) * Cb + chl) * NP + p * G + lane];
          hist[static_cast<size_t>(chl) * NP + p * G + lane] = h[p];
        }
        for (int i = 0; i < lens; ++i) {
          const T uu = st_u[i * Cb + chl], dl = st_dl[i * Cb + chl];
          const T du = dl * uu;
          T acc = T(0);
#pragma unroll
          for (int p = 0; p < PER; ++p) {
            if (has(p)) {
              const int n = lane + p * G;
              h[p] = dexp(dl * a[p]) * h[p] + du * st_B[i * NP + n];
              acc += h[p] * st_C[i * NP + n];
            }
            hist[(static_cast<size_t>(i + 1) * Cb + chl) * NP + p * G + lane] = h[p];
          }
          acc = group_sum<G>(acc);
          if (lane == 0) opre_s[i * Cb + chl] = Dc * uu + acc;
        }
        __syncthreads();
        // The reverse recurrence over the sub-chunk.
        for (int i = lens - 1; i >= 0; --i) {
          const int q0 = i * Cb + chl;
          const T uu = st_u[q0], dyv = st_dy[q0], pre = st_pre[q0], dl = st_dl[q0];
          T dout = dyv;
          if (s.z) {
            const T zz = st_z[q0], sg = sigmoid(zz);
            if (lane == 0) st_dz[q0] = dyv * opre_s[q0] * sg * (T(1) + zz * (T(1) - sg));  // silu'
            dout = dyv * zz * sg;
          }
          dD += dout * uu;
          const T du = dl * uu;
          T ga = T(0), sb = T(0);
#pragma unroll
          for (int p = 0; p < PER; ++p)
            if (has(p)) {
              const int n = lane + p * G;
              const size_t off = (static_cast<size_t>(i) * Cb + chl) * NP + p * G + lane;
              const T hp = hist[off];                    // h_{t-1}
              const T dhn = dh[p] + dout * st_C[i * NP + n];  // dy_t/dh_t = C_t
              const T q = dhn * dexp(dl * a[p]);           // dh_t/dh_{t-1} = exp(dl a)
              const T g = q * hp;                          // d/d(dl a) of exp(dl a) h_{t-1}
              ga += g * a[p];
              dAacc[p] += g * dl;
              sb += dhn * st_B[i * NP + n];
              dh[p] = q;
              pbs[off] = dhn * du;
            }
          ga = group_sum<G>(ga);
          sb = group_sum<G>(sb);
          T ddl = ga + sb * uu;
          if (s.softplus) ddl *= pre > T(20) ? T(1) : sigmoid(pre);  // PyTorch's threshold rule
          if (lane == 0) {
            st_du[q0] = dout * Dc + sb * dl;
            st_dd[q0] = ddl;
            dout_s[q0] = dout;
          }
          dbias += ddl;
        }
        __syncthreads();
        // dB_t[n] += sum over the block's channels of dh dl u, dC_t[n] += of dout h_t (channel order).
        for (int q = threadIdx.x; q < lens * Ni; q += blockDim.x) {
          const int i = q / Ni, n = q % Ni;
          T sB = T(0), sC = T(0);
          for (int ch = 0; ch < cvalid; ++ch) {
            sB += pbs[(static_cast<size_t>(i) * Cb + ch) * NP + n];
            sC += dout_s[i * Cb + ch] * hist[(static_cast<size_t>(i + 1) * Cb + ch) * NP + n];
          }
          const int64_t r = (b * T_ + t0 + ts + i) * N + n;
          dBp[r] += sB;
          dCp[r] += sC;
        }
        // du, ddelta, dz of the sub-chunk (coalesced).
        for (int q = threadIdx.x; q < lens * cvalid; q += blockDim.x) {
          const int i = q / cvalid, ch = q % cvalid;
          const int64_t idx = (b * T_ + t0 + ts + i) * E + c0 + ch;
          o.du[idx] = st_du[i * Cb + ch];
          o.ddelta[idx] = st_dd[i * Cb + ch];
          if (s.z) o.dz[idx] = st_dz[i * Cb + ch];
        }
        __syncthreads();
      }
    }
    if (valid) {
#pragma unroll
      for (int p = 0; p < PER; ++p)
        if (has(p)) o.dA_part[(b * E + e) * N + lane + p * G] = dAacc[p];
      if (lane == 0) {
        o.dD_part[b * E + e] = dD;
        o.dbias_part[b * E + e] = dbias;
      }
    }
  }
}

// out[i] = sum over r < R, in order, of in[r M + i].
template <typename T>
__global__ void sum_rows_kernel(const T* in, int64_t R, int64_t M, T* out) {
  SEQLAB_CUDA_LOOP(i, M) {
    T acc = T(0);
    for (int64_t r = 0; r < R; ++r) acc += in[r * M + i];
    out[i] = acc;
  }
}

template <typename T>
void sum_rows(const Tensor& in, int64_t R, int64_t M, const Tensor& out) {
  if (M == 0) return;
  sum_rows_kernel<T><<<blocks_for(M), 256, 0, stream()>>>(ptr<T>(in), R, M, ptr<T>(out));
  check_launch("selective_scan_backward: sum of partials");
}

// ---- launch configuration ----------------------------------------------------------------------

// Lanes per channel and states per lane for d_state N.
struct LaneConfig {
  int G, PER;
};
LaneConfig lane_config(int64_t N) {
  if (N <= 4) return {4, 1};
  if (N <= 8) return {8, 1};
  if (N <= 16) return {16, 1};
  if (N <= 32) return {32, 1};
  if (N <= 64) return {32, 2};
  if (N <= 128) return {32, 4};
  return {32, 8};
}

// Calls f.template operator()<G, PER>() for the configuration of N.
template <typename F>
void with_lanes(int64_t N, F&& f) {
  const LaneConfig c = lane_config(N);
  switch (c.G * 16 + c.PER) {
    case 4 * 16 + 1: f.template operator()<4, 1>(); break;
    case 8 * 16 + 1: f.template operator()<8, 1>(); break;
    case 16 * 16 + 1: f.template operator()<16, 1>(); break;
    case 32 * 16 + 1: f.template operator()<32, 1>(); break;
    case 32 * 16 + 2: f.template operator()<32, 2>(); break;
    case 32 * 16 + 4: f.template operator()<32, 4>(); break;
    default: f.template operator()<32, 8>(); break;
  }
}

int sm_count() {
  static const int v = [] {
    int dev = 0, n = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    return n;
  }();
  return v;
}

// The tiled forward's lanes: NP = the power of two >= max(N, 2) states per channel over G lanes of
// PER states each: PER = 4 when that still gives ~32 warps per SM (fewer redundant per-lane steps),
// else PER = 2 (more lanes, more warps); PER = 4 for NP = 64 (512 threads per block).
constexpr int64_t kFastMaxN = 64;
template <typename F>
void with_fast_lanes(int64_t N, int64_t channels, F&& f) {
  int64_t NP = 2;
  while (NP < N) NP *= 2;
  const bool per4 = NP >= 64 || (NP >= 4 && channels * (NP / 4) >= static_cast<int64_t>(sm_count()) * 1024);
  switch (NP * 8 + (per4 ? 4 : 2)) {
    case 2 * 8 + 2: f.template operator()<1, 2>(); break;
    case 4 * 8 + 2: f.template operator()<2, 2>(); break;
    case 4 * 8 + 4: f.template operator()<1, 4>(); break;
    case 8 * 8 + 2: f.template operator()<4, 2>(); break;
    case 8 * 8 + 4: f.template operator()<2, 4>(); break;
    case 16 * 8 + 2: f.template operator()<8, 2>(); break;
    case 16 * 8 + 4: f.template operator()<4, 4>(); break;
    case 32 * 8 + 2: f.template operator()<16, 2>(); break;
    case 32 * 8 + 4: f.template operator()<8, 4>(); break;
    default: f.template operator()<16, 4>(); break;
  }
}

int max_shared_optin() {
  int dev = 0, v = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute");
  return v;
}

// The backward's blocks: Cb channels at a time, ng channel groups per batch row (at most E / N, so
// that the dB, dC partials (ng, B, T, N) never outgrow one (B, T, E) tensor), S steps per
// sub-chunk, nsub sub-checkpoints per chunk, smem bytes of shared memory.
struct BwdPlan {
  int G, PER, Cb, S, nsub;
  int64_t ng;
  size_t smem;
};
BwdPlan plan_backward(int64_t E, int64_t N, int64_t T_, int64_t L, size_t elt) {
  const LaneConfig lc = lane_config(N);
  BwdPlan p{};
  p.G = lc.G;
  p.PER = lc.PER;
  const int64_t NP = lc.G * lc.PER, Leff = std::max<int64_t>(1, std::min(L, T_));
  int64_t S = 1;
  while (S * S < Leff) ++S;
  p.S = static_cast<int>(S);
  p.nsub = static_cast<int>((Leff + S - 1) / S);
  // Per channel: sub-checkpoints, history, dB terms ([nsub + 2 S + 1][NP]), 2 + 8 rows of S (outputs
  // before the gate, their gradients, the staged inputs and outputs); per block: B, C [S][NP].
  const size_t per_ch = (static_cast<size_t>(p.nsub + 2 * S + 1) * NP + 10 * S) * elt;
  const size_t fixed = static_cast<size_t>(2 * S * NP) * elt;
  const int unit = 32 / lc.G;  // channels of one warp: blocks hold whole warps
  int Cb = kThreads / lc.G;
  const size_t budget = 64 * 1024;
  while (Cb > unit && Cb * per_ch + fixed > budget) Cb -= unit;
  p.ng = std::clamp<int64_t>((E + Cb - 1) / Cb, 1, std::max<int64_t>(1, E / N));
  const int64_t per_group = (E + p.ng - 1) / p.ng;
  Cb = static_cast<int>(std::min<int64_t>(Cb, (per_group + unit - 1) / unit * unit));
  p.Cb = Cb;
  p.smem = Cb * per_ch + fixed;
  return p;
}

template <typename T>
ScanForwardResult forward_impl(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                               const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex, int64_t L,
                               bool save_checkpoints, Tensor* states) {
  const int64_t B = u.size(0), T_ = u.size(1), E = u.size(2), N = A.size(1);
  const int64_t nc = (T_ + L - 1) / L;
  ScanForwardResult r;
  r.y = empty({B, T_, E}, u.dtype());
  if (save_checkpoints && nc > 1) r.checkpoints = empty({B, nc - 1, N, E}, u.dtype());
  if (states) *states = empty({B, T_, E, N}, u.dtype());
  if (B * E == 0 || T_ == 0) return r;
  const ScanPtrs<T> s = make_ptrs<T>(u, delta, A, Bm, Cm, Dskip, ex, B, T_, E, N);
  T* y = ptr<T>(r.y);
  T* ck = r.checkpoints.defined() ? ptr<T>(r.checkpoints) : nullptr;
  T* H = states ? ptr<T>(*states) : nullptr;
  if (!H && N <= kFastMaxN) {  // the tiled path
    const int nblk_e = static_cast<int>((E + kCT - 1) / kCT);
    const int64_t blocks = B * nblk_e;
    SEQLAB_CHECK(blocks <= 0x7fffffff, "selective_scan_forward: too many blocks");
    constexpr int V = 16 / sizeof(T);
    auto al = [](const T* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
    const bool vec = E % V == 0 && al(s.u) && al(s.delta) && (!s.z || al(s.z));
    with_fast_lanes(N, B * E, [&]<int G, int PER>() {
      auto* kernel = scan_fwd_tiled_kernel<T, G, PER>;
      const size_t smem = FastTile<T, G * PER>::kBytes;
      if (smem > 48 * 1024) {
        SEQLAB_CHECK(smem <= static_cast<size_t>(max_shared_optin()), "selective_scan_forward: needs ", smem,
                     " bytes of shared memory per block");
        check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
              "cudaFuncSetAttribute (selective_scan_forward)");
      }
      kernel<<<static_cast<unsigned>(blocks), kCT * G, smem, stream()>>>(s, L, y, ck, vec, nblk_e);
      check_launch("selective_scan_forward (tiled)");
    });
    return r;
  }
  with_lanes(N, [&]<int G, int PER>() {
    const int64_t blocks = (B * E + kThreads / G - 1) / (kThreads / G);
    scan_fwd_kernel<T, G, PER><<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(s, L, y, ck, H, nullptr,
                                                                                          nullptr);
    check_launch("selective_scan_forward");
  });
  return r;
}

template <typename T>
ScanGrads backward_impl(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                        const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex, const CkView<T>& ck,
                        int64_t L) {
  const int64_t B = u.size(0), T_ = u.size(1), E = u.size(2), N = A.size(1);
  const DType dt = u.dtype();
  ScanGrads g;
  g.du = empty({B, T_, E}, dt);
  g.ddelta = empty({B, T_, E}, dt);
  if (ex.z.defined()) g.dz = empty({B, T_, E}, dt);
  g.dB = zeros({B, T_, N}, dt);
  g.dC = zeros({B, T_, N}, dt);
  g.dA = empty({E, N}, dt);
  g.dD = empty({E}, dt);
  if (ex.delta_bias.defined()) g.ddelta_bias = empty({E}, dt);
  if (B == 0 || T_ == 0 || E == 0) {  // nothing flows: the shared gradients are zero
    g.dA = zeros({E, N}, dt);
    g.dD = zeros({E}, dt);
    if (ex.delta_bias.defined()) g.ddelta_bias = zeros({E}, dt);
    return g;
  }
  const BwdPlan plan = plan_backward(E, N, T_, L, sizeof(T));
  const Tensor dB_part = plan.ng > 1 ? zeros({plan.ng, B, T_, N}, dt) : g.dB;
  const Tensor dC_part = plan.ng > 1 ? zeros({plan.ng, B, T_, N}, dt) : g.dC;
  const Tensor dA_part = empty({B, E, N}, dt), dD_part = empty({B, E}, dt), dbias_part = empty({B, E}, dt);
  const ScanPtrs<T> s = make_ptrs<T>(u, delta, A, Bm, Cm, Dskip, ex, B, T_, E, N);
  BwdArgs<T> o{ptr<T>(dy),         ck,
               L,                  plan.ng,
               plan.S,             plan.nsub,
               plan.Cb,            ptr<T>(g.du),
               ptr<T>(g.ddelta),   g.dz.defined() ? ptr<T>(g.dz) : nullptr,
               ptr<T>(dA_part),    ptr<T>(dD_part),
               ptr<T>(dbias_part), ptr<T>(dB_part),
               ptr<T>(dC_part)};
  with_lanes(N, [&]<int G, int PER>() {
    auto* kernel = scan_bwd_kernel<T, G, PER>;
    if (plan.smem > 48 * 1024) {
      const int most = max_shared_optin();
      SEQLAB_CHECK(plan.smem <= static_cast<size_t>(most), "selective_scan_backward: chunk ", L, " with d_state ", N,
                   " needs ", plan.smem, " bytes of shared memory per block, the device allows ", most,
                   "; use a smaller chunk");
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(plan.smem)),
            "cudaFuncSetAttribute (selective_scan_backward)");
    }
    const dim3 grid(static_cast<unsigned>(plan.ng), static_cast<unsigned>(B));
    kernel<<<grid, plan.Cb * G, plan.smem, stream()>>>(s, o);
    check_launch("selective_scan_backward");
  });
  if (plan.ng > 1) {
    sum_rows<T>(dB_part, plan.ng, B * T_ * N, g.dB);
    sum_rows<T>(dC_part, plan.ng, B * T_ * N, g.dC);
  }
  sum_rows<T>(dA_part, B, E * N, g.dA);
  sum_rows<T>(dD_part, B, E, g.dD);
  if (ex.delta_bias.defined()) sum_rows<T>(dbias_part, B, E, g.ddelta_bias);
  return g;
}

void check_shapes(const Tensor& A) {
  SEQLAB_CHECK(A.size(1) <= kMaxN, "selective_scan: d_state N = ", A.size(1), " exceeds the supported ", kMaxN);
}
void check_chunk(int64_t chunk) { SEQLAB_CHECK(chunk >= 1, "selective_scan: chunk must be positive, got ", chunk); }

}  // namespace

ScanForwardResult selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                         const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                         int64_t chunk, bool save_checkpoints) {
  check_shapes(A);
  check_chunk(chunk);
  return dispatch_float(u.dtype(), "selective_scan", [&]<typename T>() {
    return forward_impl<T>(u, delta, A, Bm, Cm, Dskip, ex, chunk, save_checkpoints, nullptr);
  });
}

ScanGrads selective_scan_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                  const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                  const Tensor& checkpoints, int64_t chunk) {
  check_shapes(A);
  check_chunk(chunk);
  const int64_t T_ = u.size(1), E = u.size(2), N = A.size(1), L = chunk;
  const int64_t nc = (T_ + L - 1) / L;
  SEQLAB_CHECK(nc <= 1 || checkpoints.defined(), "selective_scan_backward: missing state checkpoints");
  return dispatch_float(u.dtype(), "selective_scan_backward", [&]<typename T>() {
    // checkpoints (B, nc - 1, N, E)
    const CkView<T> ck{nc > 1 ? ptr<T>(checkpoints) : nullptr, (nc - 1) * N * E, N * E, E, 1};
    return backward_impl<T>(dy, u, delta, A, Bm, Cm, Dskip, ex, ck, L);
  });
}

ScanForwardResult selective_scan_loop_forward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                              const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                              const ScanExtras& ex, Tensor* states) {
  check_shapes(A);
  return dispatch_float(u.dtype(), "selective_scan_loop", [&]<typename T>() {
    return forward_impl<T>(u, delta, A, Bm, Cm, Dskip, ex, kernels::kScanChunk, false, states);
  });
}

ScanGrads selective_scan_loop_backward(const Tensor& dy, const Tensor& u, const Tensor& delta, const Tensor& A,
                                       const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                       const ScanExtras& ex, const Tensor& states) {
  check_shapes(A);
  const int64_t T_ = u.size(1), E = u.size(2), N = A.size(1), L = kernels::kScanChunk;
  return dispatch_float(u.dtype(), "selective_scan_loop_backward", [&]<typename T>() {
    // The state before chunk kc is the stored state at t = kc L - 1: H[((b T + kc L - 1) E + e) N + n].
    const T* H = ptr<T>(states);
    const CkView<T> ck{T_ > L ? H + (L - 1) * E * N : H, T_ * E * N, L * E * N, 1, N};
    return backward_impl<T>(dy, u, delta, A, Bm, Cm, Dskip, ex, ck, L);
  });
}

Tensor selective_scan_step(Tensor& h, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex) {
  const int64_t B = u.size(0), E = u.size(1), N = A.size(1);
  check_shapes(A);
  Tensor y = empty({B, E}, u.dtype());
  if (B * E == 0) return y;
  dispatch_float(u.dtype(), "selective_scan_step", [&]<typename T>() {
    // A step is a length-1 scan from state h: the sequence kernel with T = 1, h read and written.
    const ScanPtrs<T> s = make_ptrs<T>(u, delta, A, Bm, Cm, Dskip, ex, B, 1, E, N);
    T* hp = ptr<T>(h);
    T* yp = ptr<T>(y);
    with_lanes(N, [&]<int G, int PER>() {
      const int64_t blocks = (B * E + kThreads / G - 1) / (kThreads / G);
      scan_fwd_kernel<T, G, PER>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream()>>>(s, 1, yp, nullptr, nullptr, hp, hp);
      check_launch("selective_scan_step");
    });
  });
  return y;
}

}  // namespace seqlab::cuda
