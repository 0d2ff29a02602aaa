// Selective scan of Mamba-1 on the device (equations in core/kernels/scan.h, layout notes in
// core/cuda/scan.h).
//
// Forward: float32 / float64 with N <= 64 (and no every-state output) takes the tiled kernel
// (scan_fwd_tiled_kernel: a block per (b, 32 channels), T walked in tiles staged through shared
// memory with coalesced cp.async copies, double-buffered); the step, the every-state reference and
// N > 64 take scan_fwd_kernel below. By default (the environment variable SEQLAB_SCAN_FWD unset or
// "chunked", read once; "tiled" turns it off) the tiled cases run chunk-parallel over T (forward_fast):
// each chunk's end state from zero, the chunk start states chained by a thread per (b, e, n), then
// every (b, chunk, channel tile) rescanned from its start state by the same kernel.
//
// Backward: N <= 64 with min(chunk, T) <= kChunkedMaxL (128) takes the chunk-parallel backward (the
// default; "backward, chunk-parallel" below): the reverse recurrence dL/dh_t = C_t dout_t + exp(dl_{t+1} A)
// dL/dh_{t+1} needs no states, so (1) each chunk k >= 1 sums its part of dL/dh at the step before it
// (scan_bwd_carry_kernel), (2) a thread per (b, e, n) chains those sums over the chunks, last to first
// (scan_bwd_carry_combine_kernel), (3) every chunk recomputes its states from its checkpoint and walks
// backward from its carry (scan_bwd_chunk_kernel): B nc channel-tile blocks instead of B E sequential
// channels. Otherwise, or with the environment variable SEQLAB_SCAN_BWD=sequential (read once;
// "chunked" or unset: the default), scan_bwd_kernel: sequential over T per channel.
//
// Thread layout of scan_fwd_kernel and scan_bwd_kernel: a group of G lanes (G = 4, 8, 16 or 32, a
// power of two >= N up to 32) of one warp holds one channel (b, e); lane l holds the states n = l + p G,
// p < PER (PER = 1, 2, 4, 8 for N up to 32, 64, 128, 256). Lanes with n >= N hold a zero state
// (A = B = C = 0 there) and take part in the shuffles only. Sums over n: the PER values of a lane in
// order, then an xor butterfly over the group (every lane ends with the same bits).
//
// scan_bwd_kernel, one block (Cb channels of batch row b, channel group j): for each chunk of L steps,
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
#include <cstdlib>
#include <initializer_list>
#include <string_view>
#include <vector>

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
// B, C into buf; elements at or after step tend or channel E are zero. vec: 16-byte copies (E a
// multiple of 16 / sizeof(T) and the pointers 16-byte aligned). full = false: u, delta, B only.
template <typename T, int NP>
__device__ __forceinline__ void fast_load_tile(const ScanPtrs<T>& s, int64_t b, int64_t t0, int64_t tend, int64_t e0,
                                               T* buf, bool vec, int tid, int nthreads, bool full = true) {
  using F = FastTile<T, NP>;
  constexpr int TT = F::TT;
  const int len = static_cast<int>(min(static_cast<int64_t>(TT), tend - t0));
  const int ce = static_cast<int>(min(static_cast<int64_t>(kCT), s.E - e0));
  const int64_t base = (b * s.T_ + t0) * s.E + e0;
  const int nsrc = full && s.z ? 3 : 2;
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
  for (int q = tid; q < (full ? 2 : 1) * TT * NP; q += nthreads) {
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

// What a block of scan_fwd_tiled_kernel does: whole: all of T from a zero state (the tiled path);
// local (chunked phase 1): its chunk from a zero state, storing only the end state and the chunk's sum
// of delta; rescan (chunked phase 3): its chunk from the state phase 2 left, writing y and the
// checkpoints that fall in it.
enum class FwdPass { whole, local, rescan };

// The chunked passes' arguments: ncf chunks of Lf steps; hs (B, ncf, E, N): slot k + 1 the local end
// state of chunk k (phase 1), then the state before chunk k + 1 (phase 2); sumdl (B, ncf, E): slot
// k + 1 the sum of delta over chunk k. Slot 0 is never touched.
template <typename T>
struct FwdChunks {
  int64_t Lf, ncf;
  T *hs, *sumdl;
};

template <typename T, int G, int PER, FwdPass PASS = FwdPass::whole>
__global__ void __launch_bounds__(kCT * G) scan_fwd_tiled_kernel(ScanPtrs<T> s, int64_t L, T* y, T* ck, bool vec,
                                                                  int nblk_e, FwdChunks<T> fc) {
  constexpr int NP = G * PER, NT = kCT * G;
  constexpr bool kLocal = PASS == FwdPass::local, kWhole = PASS == FwdPass::whole;
  using F = FastTile<T, NP>;
  constexpr int TT = F::TT;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const sm = reinterpret_cast<T*>(smem_raw);
  T* const s_du = sm + 2 * F::kBuf;
  T* const s_acc = s_du + TT * kCT;

  const int tid = threadIdx.x, c = tid / G, lane = tid % G, cc = tid % kCT;  // cc: prep/epilogue channel
  // block (b, chunk kf, channel tile); phase 1 takes the chunks 0 .. ncf - 2 (the last one's end state
  // is not needed)
  const int64_t nck = kWhole ? 1 : kLocal ? fc.ncf - 1 : fc.ncf, bk = blockIdx.x / nblk_e;
  const int64_t b = bk / nck, kf = bk % nck, e0 = static_cast<int64_t>(blockIdx.x % nblk_e) * kCT;
  const int64_t E = s.E, N = s.N, T_ = s.T_, nc = (T_ + L - 1) / L;
  const int64_t tb = kWhole ? 0 : kf * fc.Lf, te = kWhole ? T_ : min(T_, tb + fc.Lf);  // the block's steps
  const int64_t e = e0 + c, ecc = e0 + cc;
  const bool ve = e < E, vcc = ecc < E;
  T a[PER], h[PER];
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    const int64_t n = lane * PER + p;
    a[p] = ve && n < N ? s.A[e * N + n] : T(0);
    if constexpr (sizeof(T) == 4) a[p] *= 1.4426950408889634f;  // exp(x) = exp2(x log2 e)
    h[p] = PASS == FwdPass::rescan && kf > 0 && ve && n < N ? fc.hs[((b * fc.ncf + kf) * E + e) * N + n] : T(0);
  }
  const T Dc = vcc ? s.D[ecc] : T(0), bias_c = s.bias && vcc ? s.bias[ecc] : T(0);
  const int ntiles = static_cast<int>((te - tb + TT - 1) / TT);
  // the next step before which the state is checkpointed: the first multiple of L >= max(tb, 1)
  int64_t next_ck = !kLocal && ck ? (kWhole ? L : max(L, (tb + L - 1) / L * L)) : T_;
  // rescan: where that checkpoint's first state of the thread goes (no division in the loop)
  T* ckp = !kWhole && ck && next_ck < T_ ? ck + ((b * (nc - 1) + next_ck / L - 1) * N + lane * PER) * E + e : nullptr;
  T sdl = T(0);  // phase 1: the sum of delta over the chunk

  fast_load_tile<T, NP>(s, b, tb, te, e0, sm, vec, tid, NT, !kLocal);
  cp_async_commit();
  for (int k = 0; k < ntiles; ++k) {
    T* const buf = sm + (k & 1) * F::kBuf;
    if (k + 1 < ntiles)
      fast_load_tile<T, NP>(s, b, tb + static_cast<int64_t>(k + 1) * TT, te, e0, sm + ((k + 1) & 1) * F::kBuf, vec,
                            tid, NT, !kLocal);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int64_t t0 = tb + static_cast<int64_t>(k) * TT;
    const int len = static_cast<int>(min(static_cast<int64_t>(TT), te - t0));
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
      if constexpr (!kLocal) {
        if (t0 + i == next_ck) {
          if (ve) {
#pragma unroll
            for (int p = 0; p < PER; ++p) {
              if (lane * PER + p < N) {
                if constexpr (kWhole) {
                  ck[((b * (nc - 1) + next_ck / L - 1) * N + lane * PER + p) * E + e] = h[p];
                } else {
                  ckp[p * E] = h[p];
                }
              }
            }
          }
          next_ck += L;
          if constexpr (!kWhole) ckp += N * E;
        }
      }
      const T dl = sd[i * kCT + c], du = s_du[i * kCT + c];
      const VecT<T, PER> bv = *reinterpret_cast<const VecT<T, PER>*>(sB + i * NP + lane * PER);
      if constexpr (kLocal) {
#pragma unroll
        for (int p = 0; p < PER; ++p) {
          T da;
          if constexpr (sizeof(T) == 4) {
            da = exp2f(dl * a[p]);
          } else {
            da = dexp(dl * a[p]);
          }
          h[p] = da * h[p] + du * bv.v[p];
        }
        sdl += dl;
      } else {
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
    }
    if constexpr (!kLocal) {
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
    }
    __syncthreads();  // buf and s_du are refilled by the next iteration
  }
  if constexpr (kLocal) {
    if (ve) {
      const int64_t row = (b * fc.ncf + kf + 1) * E + e;
#pragma unroll
      for (int p = 0; p < PER; ++p)
        if (lane * PER + p < N) fc.hs[row * N + lane * PER + p] = h[p];
      if (lane == 0) fc.sumdl[row] = sdl;
    }
  }
}

// Chunked phase 2: a thread per (b, e, n), chunks first to last, in place over hs: slot k >= 1 holds
// the local end state of chunk k - 1 on entry and the state before chunk k on exit,
// h_k = P_{k-1} h_{k-1} + local_{k-1} (h_0 = 0), P = exp(a sum delta) as the tiled kernel's float
// decays, 2^(sum delta a log2 e). The loads of KB chunks are issued before their chain.
template <typename T>
__global__ void scan_fwd_carry_kernel(ScanPtrs<T> s, FwdChunks<T> fc) {
  constexpr int KB = 8;
  const int64_t E = s.E, N = s.N, ncf = fc.ncf;
  SEQLAB_CUDA_LOOP(q, s.B * E * N) {
    const int64_t n = q % N, e = q / N % E, b = q / (E * N);
    T a = s.A[e * N + n];
    if constexpr (sizeof(T) == 4) a *= 1.4426950408889634f;
    T* const hb = fc.hs + (b * ncf * E + e) * N + n;   // (b, k, e, n) at hb[k E N]
    const T* const sd = fc.sumdl + b * ncf * E + e;  // (b, k, e) at sd[k E]
    T h = T(0);
    for (int64_t k0 = 1; k0 < ncf; k0 += KB) {
      T r[KB], sdl[KB];
#pragma unroll
      for (int i = 0; i < KB; ++i) {
        const int64_t k = k0 + i;
        r[i] = k < ncf ? hb[k * E * N] : T(0);
        sdl[i] = k < ncf ? sd[k * E] : T(0);
      }
#pragma unroll
      for (int i = 0; i < KB; ++i) {
        const int64_t k = k0 + i;
        if (k < ncf) {
          T P;
          if constexpr (sizeof(T) == 4) {
            P = exp2f(sdl[i] * a);
          } else {
            P = dexp(sdl[i] * a);
          }
          h = k == 1 ? r[i] : P * h + r[i];  // (no inf * 0 from the zero first state)
          hb[k * E * N] = h;
        }
      }
    }
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

// The backward's sums of partials (dB, dC over channel groups; dA, dD, d(delta_bias) over rows), all
// in one launch (two when some have more than kTallRows rows): out[i] = sum over r < R, in order, of
// in[r M + i]. A job with R > kTallRows is first summed in blocks of kTallRows rows (in order, many
// threads), then the block sums in order. The tree depends on R and M only: the same bits on every
// device. Session 15: the T = 96 Mamba step spent 10 launches a step here (5 per layer), now 2.
constexpr int64_t kTallRows = 64;
constexpr int kMaxRowSumJobs = 5;

template <typename T>
struct RowSumJobs {
  const T* in[kMaxRowSumJobs];
  T* out[kMaxRowSumJobs];
  int64_t R[kMaxRowSumJobs], M[kMaxRowSumJobs], RB[kMaxRowSumJobs], n_out[kMaxRowSumJobs];
  int n = 0;
};

// job j: out_j[r1 M_j + i] = sum over rows r1 RB_j .. min(R_j, r1 RB_j + RB_j) - 1, in order, of in_j[r M_j + i]
template <typename T>
__global__ void sum_row_blocks_kernel(RowSumJobs<T> jobs, int64_t total) {
  SEQLAB_CUDA_LOOP(q0, total) {
    int64_t q = q0;
    int j = 0;
    while (q >= jobs.n_out[j]) q -= jobs.n_out[j++];
    const int64_t M = jobs.M[j], RB = jobs.RB[j], r1 = q / M, i = q - r1 * M;
    const int64_t r_end = min(jobs.R[j], (r1 + 1) * RB);
    const T* in = jobs.in[j];
    T acc = T(0);
    for (int64_t r = r1 * RB; r < r_end; ++r) acc += in[r * M + i];
    jobs.out[j][q] = acc;
  }
}

template <typename T>
struct RowSum {
  Tensor in;
  int64_t R, M;
  Tensor out;
};

template <typename T>
void launch_row_sums(const RowSumJobs<T>& jobs) {
  int64_t total = 0;
  for (int j = 0; j < jobs.n; ++j) total += jobs.n_out[j];
  if (total == 0) return;
  sum_row_blocks_kernel<T><<<blocks_for(total), 256, 0, stream()>>>(jobs, total);
  check_launch("selective_scan_backward: sums of partials");
}

template <typename T>
void sum_rows_batch(std::initializer_list<RowSum<T>> list) {
  SEQLAB_CHECK(list.size() <= kMaxRowSumJobs, "selective_scan_backward: too many sums in one launch");
  RowSumJobs<T> first, last;
  std::vector<Tensor> parts;  // keeps the block sums alive until the last launch is queued
  for (const RowSum<T>& rs : list) {
    if (rs.M == 0) continue;
    const T* in = ptr<T>(rs.in);
    int64_t R = rs.R;
    if (R > kTallRows) {
      const int64_t R1 = (R + kTallRows - 1) / kTallRows;
      parts.push_back(empty({R1, rs.M}, dtype_of<T>()));
      const int k = first.n++;
      first.in[k] = in;
      first.out[k] = ptr<T>(parts.back());
      first.R[k] = R;
      first.M[k] = rs.M;
      first.RB[k] = kTallRows;
      first.n_out[k] = R1 * rs.M;
      in = ptr<T>(parts.back());
      R = R1;
    }
    const int k = last.n++;
    last.in[k] = in;
    last.out[k] = ptr<T>(rs.out);
    last.R[k] = R;
    last.M[k] = rs.M;
    last.RB[k] = std::max<int64_t>(R, 1);
    last.n_out[k] = rs.M;
  }
  launch_row_sums(first);
  launch_row_sums(last);
}

// ---- backward, chunk-parallel ------------------------------------------------------------------
//
// The reverse recurrence g_t = dL/dh_t = C_t dout_t + exp(dl_{t+1} a) g_{t+1} does not involve the
// states, so the chunks of L steps need not wait for each other (dout: dL/d(output before the gate)):
//   phase 1 (block: b, chunk k >= 1, CT channels): R_k = the part of dL/dh at the step before chunk k
//     that chunk k's outputs make: r = 0; for t = last .. first of the chunk: r = (r + C_t dout_t) dA_t;
//     and the chunk's sum of dl, so that P_k = prod over the chunk of dA_t = exp(a sum dl);
//   phase 2 (a thread per (b, e, n), chunks last to first): carry_{k-1} = R_k + P_k carry_k, carry_{nc-1}
//     = 0, in place over R: carry_k = dL/dh at chunk k's last step from the steps after it;
//   phase 3 (block: b, chunk k, channel group j): from the chunk's checkpoint, a forward pass keeping a
//     sub-checkpoint every S steps (shared memory, each thread its own), then per sub-chunk, last to
//     first: its S states recomputed into registers (fully unrolled: compile-time indices) and the
//     reverse walk from carry_k, writing du, ddelta, dz and the partials of dA, dD, dbias (per (b, k, e))
//     and of dB, dC (per channel group: sums over the block's channels).
// Thread layout as the tiled forward: G lanes per channel, lane l holds n = l PER .. l PER + PER - 1
// (lanes with n >= N: zero states); sums over n: the PER values of a lane in order, then the xor
// butterfly. The inputs of S steps of the block's CT channels (rows of CT consecutive channels:
// coalesced) and B, C are copied with cp.async into a raw area, turned by a prep pass (a thread per
// (step, channel)) into delta (softplus'd), dout, softplus' and dy silu'(z), and the next tile's copies
// run while this one is scanned. No float atomics anywhere: every partial element has one writer and
// is summed in a fixed order (bit-reproducible). Memory: the carries (B, nc, E, N) and the dA partials
// (B nc, E, N), the size of the forward's checkpoints; no (B, T, E, N) tensor.
constexpr int kSub = 8;                // steps per sub-chunk of phase 3 (its states live in registers)
constexpr int kCarryTile = 16;         // steps per staged tile of phase 1
constexpr int64_t kChunkedMaxL = 128;  // longer chunks: more sub-checkpoints than fit -> scan_bwd_kernel

// A value the compiler must treat as new: the staging and epilogue code recomputes its indices from
// it at each sub-chunk instead of hoisting them out of the loops, where they would stay live in
// registers across the scan.
__device__ __forceinline__ int opaque(int v) {
  asm volatile("" : "+r"(v));
  return v;
}

// Channels per block: 128 threads of G lanes; 32 channels when G < 4 (32 or 64 threads).
template <int G>
constexpr int chunked_channels() {
  return G >= 4 ? 128 / G : 32;
}

// Phase 3's blocks of 128 threads per SM that its registers must allow (launch bounds): 4 in float (128
// registers), 3 in double (168); with the lanes of with_chunked_lanes, neither spills.
template <typename T, int G>
constexpr int chunk_min_blocks() {
  return (sizeof(T) == 4 ? 4 : 3) * 128 / (chunked_channels<G>() * G);
}

// exp(dl a) as the tiled forward computes it in float, 2^(dl log2(e) a); dl is scaled once per step.
template <typename T>
__host__ __device__ constexpr T decay_scale() {
  return sizeof(T) == 4 ? T(1.4426950408889634) : T(1);
}
__device__ __forceinline__ float decay(float dls, float a) { return exp2f(dls * a); }
__device__ __forceinline__ double decay(double dls, double a) { return exp(dls * a); }

// Shared memory of the chunk-parallel backward, in elements; S steps per staged tile. Every array is a
// multiple of 16 bytes (S CT, S NP are multiples of 4), so the PER-vectors of B, C are aligned.
template <typename T, int G, int PER, int S>
struct ChunkedSmem {
  static constexpr int NP = G * PER, CT = chunked_channels<G>(), NT = CT * G, NW = NT / 32;
  static constexpr int SC = S * CT, SN = S * NP;
  // cp.async targets: u, delta, dy, z [S][CT], B, C [S][NP]
  static constexpr int kRawU = 0, kRawDelta = SC, kRawDy = 2 * SC, kRawZ = 3 * SC, kRawB = 4 * SC, kRawC = kRawB + SN;
  // prepared: delta (bias, softplus), u, dout, softplus'(delta + bias), dy silu'(z) [S][CT]; B, C [S][NP]
  static constexpr int kDl = kRawC + SN, kU = kDl + SC, kDout = kU + SC, kDsp = kDout + SC, kDyz = kDsp + SC;
  static constexpr int kB = kDyz + SC, kC = kB + SN, kPrepEnd = kC + SN;  // phase 1 ends here
  // outputs du, ddelta, dz [S][CT]; the dB, dC terms summed over each warp's channels [NW][S][NP]
  static constexpr int kOutDu = kPrepEnd, kOutDd = kOutDu + SC, kOutDz = kOutDd + SC;
  static constexpr int kRedB = kOutDz + SC, kRedC = kRedB + NW * SN;
  static constexpr int kSubck = kRedC + NW * SN;  // then the sub-checkpoints [nsub - 1][PER][NT]
  static_assert(NT % 32 == 0 && SC % 4 == 0 && SN % 4 == 0, "whole warps, 16-byte arrays");
  static_assert(kOutDu == kPrepEnd && kOutDz == kOutDd + SC && kRedB == kOutDz + SC && kSubck == kRedC + NW * SN,
                "the arrays in order (phase 1 stops at kPrepEnd)");
  static constexpr size_t carry_bytes() { return static_cast<size_t>(kPrepEnd) * sizeof(T); }
  static constexpr size_t chunk_bytes(int nsub) {
    return (static_cast<size_t>(kSubck) + static_cast<size_t>(nsub - 1) * PER * NT) * sizeof(T);
  }
};

template <typename T>
struct ChunkedArgs {
  const T* dy;
  CkView<T> ck;
  int64_t L, nc, ng;                  // chunk, chunks, channel groups per (b, chunk) in phase 3
  T* carry;                           // (B, nc, E, N): R_k from phase 1 (k >= 1), carry_k after phase 2
  T* sumdl;                           // (B, nc, E): sum of delta over chunk k >= 1
  T *du, *ddelta, *dz;                // (B, T, E); dz null without the gate
  T *dA_part, *dD_part, *dbias_part;  // (B nc, E, N), (B nc, E), (B nc, E)
  T *dB_part, *dC_part;               // (ng, B, T, N)
};

// What a staged tile holds: forward (phase 3's sub-checkpoint pass): u, delta, B; carry (phase 1):
// delta, dy, z, C; full (phase 3's reverse): all.
enum class Stage { forward, carry, full };

// Starts the copies of steps t .. t + lens - 1 (lens <= S) of channels e0 .. e0 + ce - 1 into the raw
// area (consecutive threads: consecutive channels); the rest of the arrays is zero-filled.
template <typename T, int G, int PER, int S>
__device__ __forceinline__ void chunked_load(const ScanPtrs<T>& s, const T* dy, Stage st, int b, int t, int lens,
                                             int e0, int ce, T* sm, int tid) {
  using Y = ChunkedSmem<T, G, PER, S>;
  constexpr int CT = Y::CT, NP = Y::NP, NT = Y::NT;
  const bool fw = st != Stage::carry, bw = st != Stage::forward;
  const int64_t row = static_cast<int64_t>(b) * s.T_ + t, base = row * s.E + e0, rb = row * s.N;
  const int Ni = static_cast<int>(s.N);
  const T* const src[4] = {fw ? s.u : nullptr, s.delta, bw ? dy : nullptr, bw ? s.z : nullptr};
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    if (!src[w]) continue;
    for (int q = tid; q < Y::SC; q += NT) {
      const int i = q / CT, ch = q % CT;
      const bool ok = i < lens && ch < ce;
      cp_async<sizeof(T)>(sm + Y::kRawU + w * Y::SC + q, src[w] + (ok ? base + i * s.E + ch : 0), ok);
    }
  }
  for (int q = tid; q < Y::SN; q += NT) {
    const int i = q / NP, n = q % NP;
    const bool ok = i < lens && n < Ni;
    const int64_t off = ok ? rb + i * s.N + n : 0;
    if (fw) cp_async<sizeof(T)>(sm + Y::kRawB + q, s.Bm + off, ok);
    if (bw) cp_async<sizeof(T)>(sm + Y::kRawC + q, s.Cm + off, ok);
  }
}

// Prepares rows 0 .. lens - 1 of a landed tile: a thread per (step, channel), its channel tid % CT
// (NT is a multiple of CT); channels >= ce get zeros, so they carry zero states and gradients.
template <typename T, int G, int PER, int S>
__device__ __forceinline__ void chunked_prep(const ScanPtrs<T>& s, Stage st, int lens, int ce, T bias_c, T* sm,
                                             int tid) {
  using Y = ChunkedSmem<T, G, PER, S>;
  constexpr int CT = Y::CT, NP = Y::NP, NT = Y::NT;
  const bool fw = st != Stage::carry, bw = st != Stage::forward, full = st == Stage::full;
  const bool ok = tid % CT < ce;
  for (int q = tid; q < lens * CT; q += NT) {
    const T pre = sm[Y::kRawDelta + q] + bias_c;
    const T dl = s.softplus ? softplus(pre) : pre;
    sm[Y::kDl + q] = ok ? dl : T(0);
    if (fw) sm[Y::kU + q] = ok ? sm[Y::kRawU + q] : T(0);
    if (bw) {
      const T dyv = sm[Y::kRawDy + q];
      T dout = dyv, dyz = T(0);
      if (s.z) {
        const T zz = sm[Y::kRawZ + q], sg = sigmoid(zz);
        dout = dyv * zz * sg;
        dyz = dyv * sg * (T(1) + zz * (T(1) - sg));  // dz = dy silu'(z) (output before the gate)
      }
      sm[Y::kDout + q] = ok ? dout : T(0);
      if (full) {
        sm[Y::kDyz + q] = ok ? dyz : T(0);
        sm[Y::kDsp + q] = s.softplus ? (pre > T(20) ? T(1) : sigmoid(pre)) : T(1);  // PyTorch's threshold rule
      }
    }
  }
  for (int q = tid; q < lens * NP; q += NT) {
    if (fw) sm[Y::kB + q] = sm[Y::kRawB + q];
    if (bw) sm[Y::kC + q] = sm[Y::kRawC + q];
  }
}

// Phase 1: block (b, chunk k >= 1, channel tile) of B (nc - 1) ntile; the chunk walked last step to
// first in staged tiles of kCarryTile steps.
template <typename T, int G, int PER>
__global__ void __launch_bounds__(ChunkedSmem<T, G, PER, kCarryTile>::NT)
    scan_bwd_carry_kernel(ScanPtrs<T> s, ChunkedArgs<T> o, int ntile) {
  using Y = ChunkedSmem<T, G, PER, kCarryTile>;
  constexpr int S = kCarryTile, CT = Y::CT, NP = Y::NP;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const sm = reinterpret_cast<T*>(smem_raw);
  const int tid = threadIdx.x, c = tid / G, lane = tid % G, cc = tid % CT;
  const int E = static_cast<int>(s.E), N = static_cast<int>(s.N), T_ = static_cast<int>(s.T_);
  const int nc = static_cast<int>(o.nc), blk = static_cast<int>(blockIdx.x);
  const int tile = blk % ntile, bk = blk / ntile, b = bk / (nc - 1), k = bk % (nc - 1) + 1;
  const int e0 = tile * CT, e = e0 + c, t0 = k * static_cast<int>(o.L);  // k >= 1: L < T
  const int ce = min(CT, E - e0), len = min(T_ - t0, static_cast<int>(o.L)), ns = (len + S - 1) / S;
  const bool ve = c < ce;
  T a[PER], r[PER];
#pragma unroll
  for (int p = 0; p < PER; ++p) {
    const int n = lane * PER + p;
    a[p] = ve && n < N ? s.A[static_cast<int64_t>(e) * N + n] : T(0);
    r[p] = T(0);
  }
  const T bias_c = s.bias && cc < ce ? s.bias[e0 + cc] : T(0);
  T sdl = T(0);
  chunked_load<T, G, PER, S>(s, o.dy, Stage::carry, b, t0 + (ns - 1) * S, len - (ns - 1) * S, e0, ce, sm, tid);
  cp_async_commit();
  for (int si = ns - 1; si >= 0; --si) {
    const int lens = min(S, len - si * S), tq = opaque(tid);
    cp_async_wait<0>();
    __syncthreads();  // the tile has landed, and every thread is done with the previous one
    chunked_prep<T, G, PER, S>(s, Stage::carry, lens, ce, bias_c, sm, tq);
    __syncthreads();  // prepared; the raw area is free for the next tile
    if (si > 0) chunked_load<T, G, PER, S>(s, o.dy, Stage::carry, opaque(b), t0 + (si - 1) * S, S, e0, ce, sm, tq);
    cp_async_commit();
    for (int i = lens - 1; i >= 0; --i) {
      const T dl = sm[Y::kDl + i * CT + c], dout = sm[Y::kDout + i * CT + c], dls = dl * decay_scale<T>();
      const VecT<T, PER> cv = *reinterpret_cast<const VecT<T, PER>*>(sm + Y::kC + i * NP + lane * PER);
#pragma unroll
      for (int p = 0; p < PER; ++p) r[p] = (r[p] + cv.v[p] * dout) * decay(dls, a[p]);
      sdl += dl;
    }
  }
  if (ve) {
    const int64_t row = (static_cast<int64_t>(b) * nc + k) * E + e;
#pragma unroll
    for (int p = 0; p < PER; ++p)
      if (lane * PER + p < N) o.carry[row * N + lane * PER + p] = r[p];
    if (lane == 0) o.sumdl[row] = sdl;
  }
}

// Phase 2: a thread per (b, e, n), chunks last to first, in place (slot k: R_k in, carry_k out; slot 0
// is written only here); the loads of KB chunks are issued before their chain.
template <typename T>
__global__ void scan_bwd_carry_combine_kernel(ScanPtrs<T> s, ChunkedArgs<T> o) {
  constexpr int KB = 8;
  const int64_t E = s.E, N = s.N, nc = o.nc;
  SEQLAB_CUDA_LOOP(q, s.B * E * N) {
    const int64_t n = q % N, e = q / N % E, b = q / (E * N);
    const T a = s.A[e * N + n];
    T* const cb = o.carry + (b * nc * E + e) * N + n;  // (b, k, e, n) at cb[k E N]
    const T* const sd = o.sumdl + b * nc * E + e;      // (b, k, e) at sd[k E]
    T c = T(0);
    for (int64_t k0 = nc - 1; k0 >= 1; k0 -= KB) {
      T r[KB], sdl[KB];
#pragma unroll
      for (int i = 0; i < KB; ++i) {
        const int64_t k = k0 - i;
        r[i] = k >= 1 ? cb[k * E * N] : T(0);
        sdl[i] = k >= 1 ? sd[k * E] : T(0);
      }
#pragma unroll
      for (int i = 0; i < KB; ++i) {
        const int64_t k = k0 - i;
        if (k >= 1) {
          cb[k * E * N] = c;
          c = k == nc - 1 ? r[i] : r[i] + dexp(a * sdl[i]) * c;  // (no inf * 0 from the zero last carry)
        }
      }
    }
    cb[0] = c;
  }
}

// Sums, over the W = 32 / G channels of a warp, each lane's PER values: a reduce-scatter over the
// channel bits O = 16, 8, .., G of the lane index (xor partners): while a lane carries CNT > 1 values
// it keeps half (the upper half if its bit O is set: p0 += CNT / 2) and adds its partner's copy of
// that half; with one value left, a butterfly (both partners end with the same bits; the one with
// bit O clear stays the writer). A fixed order: the same bits on every run.
template <int O, int G, int CNT, typename T, int PER>
__device__ __forceinline__ void channel_reduce_step(T (&v)[PER], int lw, int& p0, bool& writer) {
  if constexpr (O >= G) {
    const bool hi = (lw & O) != 0;
    if constexpr (CNT > 1) {
      constexpr int H = CNT / 2;
#pragma unroll
      for (int i = 0; i < H; ++i) {
        const T keep = hi ? v[i + H] : v[i], send = hi ? v[i] : v[i + H];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
      }
      if (hi) p0 += H;
      channel_reduce_step<O / 2, G, H>(v, lw, p0, writer);
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], O);
      writer = writer && !hi;
      channel_reduce_step<O / 2, G, 1>(v, lw, p0, writer);
    }
  }
}

// row[n] = sum over the warp's channels of v (n = lane PER + p), for n < NP; every lane of the warp
// must call it. Afterwards each lane holds max(1, PER / W) sums, p0 + i, and exactly one lane
// stores each n.
template <int G, int PER, typename T>
__device__ __forceinline__ void warp_channel_sums(T (&v)[PER], int lw, T* row) {
  constexpr int W = 32 / G, K = PER / W > 0 ? PER / W : 1;
  int p0 = 0;
  bool writer = true;
  channel_reduce_step<16, G, PER>(v, lw, p0, writer);
  if (writer) {
#pragma unroll
    for (int i = 0; i < K; ++i) row[(lw % G) * PER + p0 + i] = v[i];
  }
}

// Phase 3: block (b, chunk k, channel group j) of B nc ng; group j takes the channel tiles
// ntile j / ng .. ntile (j + 1) / ng - 1 in turn. Per tile, the staged tiles q = 0 .. 2 ns - 2: the
// sub-chunks 0 .. ns - 2 forward (storing the state before each), then ns - 1 .. 0 backward (each:
// states recomputed into hs, reverse walk, then the block's dB, dC and du, ddelta, dz written).
template <typename T, int G, int PER>
__global__ void __launch_bounds__(ChunkedSmem<T, G, PER, kSub>::NT, chunk_min_blocks<T, G>())
    scan_bwd_chunk_kernel(ScanPtrs<T> s, ChunkedArgs<T> o, int ntile) {
  using Y = ChunkedSmem<T, G, PER, kSub>;
  constexpr int S = kSub, CT = Y::CT, NP = Y::NP, NT = Y::NT, NW = Y::NW;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const sm = reinterpret_cast<T*>(smem_raw);
  T* const subck = sm + Y::kSubck;  // [si][p][tid]: each thread reads back only what it wrote
  const T* const sB = sm + Y::kB;
  const T* const sC = sm + Y::kC;
  const int tid = threadIdx.x, c = tid / G, lane = tid % G, cc = tid % CT, warp = tid / 32, lw = tid % 32;
  const int E = static_cast<int>(s.E), N = static_cast<int>(s.N), T_ = static_cast<int>(s.T_);
  const int nc = static_cast<int>(o.nc), ng = static_cast<int>(o.ng), blk = static_cast<int>(blockIdx.x);
  const int j = blk % ng, bk = blk / ng, b = bk / nc, k = bk % nc;
  const int t0 = k * static_cast<int>(min(o.L, s.T_));  // k >= 1 only when L < T
  const int len = static_cast<int>(min(static_cast<int64_t>(T_ - t0), o.L)), ns = (len + S - 1) / S, nq = 2 * ns - 1;
  auto stage_of = [&](int q) { return q < ns - 1 ? Stage::forward : Stage::full; };
  auto sub_of = [&](int q) { return q < ns - 1 ? q : nq - 1 - q; };
  const int tl0 = static_cast<int>(static_cast<int64_t>(ntile) * j / ng);
  const int tl1 = static_cast<int>(static_cast<int64_t>(ntile) * (j + 1) / ng);
  for (int tl = tl0; tl < tl1; ++tl) {
    const int e0 = tl * CT, e = e0 + c, ce = min(CT, E - e0);
    const bool ve = c < ce;
    const int64_t row = (static_cast<int64_t>(b) * nc + k) * E + e;  // of the (B nc, E[, N]) buffers
    T a[PER], h[PER], gc[PER], dAacc[PER];  // gc: dL/dh_t from the steps after t
#pragma unroll
    for (int p = 0; p < PER; ++p) {
      const int n = lane * PER + p;
      const bool has = ve && n < N;
      a[p] = has ? s.A[static_cast<int64_t>(e) * N + n] : T(0);
      h[p] = has && k > 0 ? o.ck.at(b, k, n, e) : T(0);
      gc[p] = has && nc > 1 ? o.carry[row * N + n] : T(0);
      dAacc[p] = T(0);
    }
    const T Dc = ve ? s.D[e] : T(0), bias_c = s.bias && cc < ce ? s.bias[e0 + cc] : T(0);
    T dD = T(0), dbias = T(0);
    chunked_load<T, G, PER, S>(s, o.dy, stage_of(0), b, t0 + sub_of(0) * S, min(S, len - sub_of(0) * S), e0, ce,
                               sm, tid);
    cp_async_commit();
    for (int q = 0; q < nq; ++q) {
      const Stage st = stage_of(q);
      const int si = sub_of(q), ts = si * S, lens = min(S, len - ts), tq = opaque(tid);
      cp_async_wait<0>();
      __syncthreads();  // the tile has landed, and every thread is done with the previous one
      chunked_prep<T, G, PER, S>(s, st, lens, ce, bias_c, sm, tq);
      __syncthreads();  // prepared; the raw area is free for the next tile
      if (q + 1 < nq) {
        const int s1 = sub_of(q + 1);
        chunked_load<T, G, PER, S>(s, o.dy, stage_of(q + 1), opaque(b), t0 + s1 * S, min(S, len - s1 * S), e0, ce, sm,
                                   tq);
      }
      cp_async_commit();
      if (st == Stage::forward) {  // lens == S here: only the last sub-chunk is short
#pragma unroll
        for (int p = 0; p < PER; ++p) subck[(si * PER + p) * NT + tid] = h[p];
        for (int i = 0; i < lens; ++i) {
          const T dl = sm[Y::kDl + i * CT + c], x = dl * sm[Y::kU + i * CT + c], dls = dl * decay_scale<T>();
          const VecT<T, PER> bv = *reinterpret_cast<const VecT<T, PER>*>(sB + i * NP + lane * PER);
#pragma unroll
          for (int p = 0; p < PER; ++p) h[p] = decay(dls, a[p]) * h[p] + x * bv.v[p];
        }
        continue;
      }
      // The state before sub-chunk si: for the last one, where the forward pass stopped.
      if (si < ns - 1) {
#pragma unroll
        for (int p = 0; p < PER; ++p) h[p] = subck[(si * PER + p) * NT + tid];
      }
      // The sub-chunk's states hs[i] (after step ts + i); the output before the gate for dz; the dC
      // terms dout_t h_t summed over the warp's channels.
      T hs[S][PER];
#pragma unroll
      for (int i = 0; i < S; ++i) {
        if (i < lens) {
          const int q0 = i * CT + c;
          const T dl = sm[Y::kDl + q0], uu = sm[Y::kU + q0], x = dl * uu, dls = dl * decay_scale<T>();
          const VecT<T, PER> bv = *reinterpret_cast<const VecT<T, PER>*>(sB + i * NP + lane * PER);
#pragma unroll
          for (int p = 0; p < PER; ++p) hs[i][p] = decay(dls, a[p]) * (i > 0 ? hs[i - 1][p] : h[p]) + x * bv.v[p];
          const VecT<T, PER> cv = *reinterpret_cast<const VecT<T, PER>*>(sC + i * NP + lane * PER);
          if (s.z) {
            T acc = T(0);
#pragma unroll
            for (int p = 0; p < PER; ++p) acc += hs[i][p] * cv.v[p];
            acc = group_sum<G>(acc);
            if (lane == 0) sm[Y::kOutDz + q0] = sm[Y::kDyz + q0] * (acc + Dc * uu);
          }
          const T dout = sm[Y::kDout + q0];
          T vc[PER];
#pragma unroll
          for (int p = 0; p < PER; ++p) vc[p] = dout * hs[i][p];  // dy_t/dC_t = h_t
          warp_channel_sums<G, PER>(vc, lw, sm + Y::kRedC + (warp * S + i) * NP);
        }
      }
      // The reverse walk: g = dL/dh_t, then dL/dh_{t-1} = g dA_t carried on.
#pragma unroll
      for (int i = S - 1; i >= 0; --i) {
        if (i < lens) {
          const int q0 = i * CT + c;
          const T dl = sm[Y::kDl + q0], uu = sm[Y::kU + q0], dout = sm[Y::kDout + q0];
          const T x = dl * uu, dls = dl * decay_scale<T>();
          const VecT<T, PER> bv = *reinterpret_cast<const VecT<T, PER>*>(sB + i * NP + lane * PER);
          const VecT<T, PER> cv = *reinterpret_cast<const VecT<T, PER>*>(sC + i * NP + lane * PER);
          T ga = T(0), sb = T(0), vb[PER];
#pragma unroll
          for (int p = 0; p < PER; ++p) {
            const T g = gc[p] + dout * cv.v[p];                             // dy_t/dh_t = C_t
            const T gd = g * decay(dls, a[p]);                              // dh_t/dh_{t-1} = exp(dl a)
            const T wv = gd * (i > 0 ? hs[i - 1][p] : h[p]);                // d/d(dl a) of exp(dl a) h_{t-1}
            ga += wv * a[p];
            dAacc[p] += wv * dl;
            sb += g * bv.v[p];
            vb[p] = g * x;  // dh_t/dB_t = dl u
            gc[p] = gd;
          }
          ga = group_sum<G>(ga);
          sb = group_sum<G>(sb);
          const T ddl = (ga + sb * uu) * sm[Y::kDsp + q0];
          if (lane == 0) {
            sm[Y::kOutDu + q0] = dout * Dc + sb * dl;
            sm[Y::kOutDd + q0] = ddl;
          }
          dD += dout * uu;
          dbias += ddl;
          warp_channel_sums<G, PER>(vb, lw, sm + Y::kRedB + (warp * S + i) * NP);
        }
      }
      __syncthreads();  // the warps' sums and the outputs are in shared memory
      // dB, dC of the sub-chunk: the warps' sums in warp order, into this group's partial rows (the
      // group's first tile stores, the next ones add: the same thread owns the same elements).
      const int64_t trow = static_cast<int64_t>(opaque(b)) * T_ + t0 + ts;  // (b, first step of the sub-chunk)
      T* const dBp = o.dB_part + (static_cast<int64_t>(j) * s.B * T_ + trow) * N;
      T* const dCp = o.dC_part + (static_cast<int64_t>(j) * s.B * T_ + trow) * N;
      for (int qq = tq; qq < lens * N; qq += NT) {
        const int i = qq / N, n = qq % N;
        T sb = T(0), sc = T(0);
#pragma unroll
        for (int w = 0; w < NW; ++w) {
          sb += sm[Y::kRedB + (w * S + i) * NP + n];
          sc += sm[Y::kRedC + (w * S + i) * NP + n];
        }
        if (tl == tl0) {
          dBp[qq] = sb;
          dCp[qq] = sc;
        } else {
          dBp[qq] += sb;
          dCp[qq] += sc;
        }
      }
      // du, ddelta, dz of the sub-chunk (coalesced).
      for (int qq = tq; qq < lens * CT; qq += NT) {
        const int i = qq / CT, ch = qq % CT;
        if (ch < ce) {
          const int64_t idx = (trow + i) * E + e0 + ch;
          o.du[idx] = sm[Y::kOutDu + qq];
          o.ddelta[idx] = sm[Y::kOutDd + qq];
          if (s.z) o.dz[idx] = sm[Y::kOutDz + qq];
        }
      }
    }
    if (ve) {
#pragma unroll
      for (int p = 0; p < PER; ++p)
        if (lane * PER + p < N) o.dA_part[row * N + lane * PER + p] = dAacc[p];
      if (lane == 0) {
        o.dD_part[row] = dD;
        o.dbias_part[row] = dbias;
      }
    }
  }
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

// The chunk-parallel backward's lanes: NP = the power of two >= max(N, 2) states per channel, G = NP / PER
// lanes of PER states, a sub-chunk's S PER states in registers: PER = 4 in float (2 for N <= 2), 1 in
// double (2 for N > 32). Float with PER = 2 fits 80 registers (6 blocks per SM) but measured ~15%
// slower on the H200 (B 32, E 128, N 16): more shuffles and per-step work per state.
template <typename T, typename F>
void with_chunked_lanes(int64_t N, F&& f) {
  int64_t NP = 2;
  while (NP < N) NP *= 2;
  if constexpr (sizeof(T) == 4) {
    switch (NP) {
      case 2: f.template operator()<1, 2>(); break;
      case 4: f.template operator()<1, 4>(); break;
      case 8: f.template operator()<2, 4>(); break;
      case 16: f.template operator()<4, 4>(); break;
      case 32: f.template operator()<8, 4>(); break;
      default: f.template operator()<16, 4>(); break;
    }
  } else {
    switch (NP) {
      case 2: f.template operator()<2, 1>(); break;
      case 4: f.template operator()<4, 1>(); break;
      case 8: f.template operator()<8, 1>(); break;
      case 16: f.template operator()<16, 1>(); break;
      case 32: f.template operator()<32, 1>(); break;
      default: f.template operator()<32, 2>(); break;
    }
  }
}

// Phase 3 blocks aimed at: channel groups per (b, chunk) are added (each with its own dB, dC partial)
// until B nc ng reaches it. A constant, not the device's size: the same bits on every device.
constexpr int64_t kChunkedBlocks = 4096;

// The chunk-parallel backward (N <= 64, min(L, T) <= kChunkedMaxL): fills g.dA, dB, dC, dD,
// ddelta_bias and writes g.du, ddelta, dz.
template <typename T>
void backward_chunked(const ScanPtrs<T>& s, const T* dy, const CkView<T>& ck, int64_t L, ScanGrads& g) {
  const int64_t B = s.B, T_ = s.T_, E = s.E, N = s.N, nc = (T_ + L - 1) / L;
  const DType dt = dtype_of<T>();
  with_chunked_lanes<T>(N, [&]<int G, int PER>() {
    using Y = ChunkedSmem<T, G, PER, kSub>;
    using Y1 = ChunkedSmem<T, G, PER, kCarryTile>;
    static_assert(Y1::carry_bytes() <= 48 * 1024, "phase 1 fits the default shared memory");
    const int64_t ntile = (E + Y::CT - 1) / Y::CT;
    const int nt = static_cast<int>(ntile);
    // At most E / N groups: the dB, dC partials (ng, B, T, N) never outgrow one (B, T, E) tensor.
    const int64_t ng = std::clamp<int64_t>((kChunkedBlocks + B * nc - 1) / (B * nc), 1,
                                           std::min(ntile, std::max<int64_t>(1, E / std::max<int64_t>(N, 1))));
    const int nsub = static_cast<int>((std::min(L, T_) + kSub - 1) / kSub);
    Tensor carry, sumdl;
    if (nc > 1) {
      carry = empty({B, nc, E, N}, dt);
      sumdl = empty({B, nc, E}, dt);
    }
    g.dB = empty({B, T_, N}, dt);
    g.dC = empty({B, T_, N}, dt);
    const Tensor dB_part = ng > 1 ? empty({ng, B, T_, N}, dt) : g.dB;
    const Tensor dC_part = ng > 1 ? empty({ng, B, T_, N}, dt) : g.dC;
    const Tensor dA_part = empty({B * nc, E, N}, dt), dD_part = empty({B * nc, E}, dt);
    const Tensor dbias_part = empty({B * nc, E}, dt);
    const ChunkedArgs<T> o{dy,
                           ck,
                           L,
                           nc,
                           ng,
                           nc > 1 ? ptr<T>(carry) : nullptr,
                           nc > 1 ? ptr<T>(sumdl) : nullptr,
                           ptr<T>(g.du),
                           ptr<T>(g.ddelta),
                           g.dz.defined() ? ptr<T>(g.dz) : nullptr,
                           ptr<T>(dA_part),
                           ptr<T>(dD_part),
                           ptr<T>(dbias_part),
                           ptr<T>(dB_part),
                           ptr<T>(dC_part)};
    if (nc > 1) {
      const int64_t blocks = B * (nc - 1) * ntile;
      SEQLAB_CHECK(blocks <= 0x7fffffff, "selective_scan_backward: too many blocks");
      auto* carry_kernel = scan_bwd_carry_kernel<T, G, PER>;
      carry_kernel<<<static_cast<unsigned>(blocks), Y1::NT, Y1::carry_bytes(), stream()>>>(s, o, nt);
      check_launch("selective_scan_backward (chunk carries)");
      auto* combine_kernel = scan_bwd_carry_combine_kernel<T>;
      combine_kernel<<<blocks_for(B * E * N), 256, 0, stream()>>>(s, o);
      check_launch("selective_scan_backward (carries across chunks)");
    }
    auto* kernel = scan_bwd_chunk_kernel<T, G, PER>;
    const size_t smem = Y::chunk_bytes(nsub);
    if (smem > 48 * 1024) {
      const int most = max_shared_optin();
      SEQLAB_CHECK(smem <= static_cast<size_t>(most), "selective_scan_backward: chunk ", L, " needs ", smem,
                   " bytes of shared memory per block, the device allows ", most, "; use a smaller chunk");
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
            "cudaFuncSetAttribute (selective_scan_backward)");
    }
    const int64_t blocks = B * nc * ng;
    SEQLAB_CHECK(blocks <= 0x7fffffff, "selective_scan_backward: too many blocks");
    kernel<<<static_cast<unsigned>(blocks), Y::NT, smem, stream()>>>(s, o, nt);
    check_launch("selective_scan_backward (chunks)");
    g.dA = empty({E, N}, dt);
    g.dD = empty({E}, dt);
    const int64_t ngs = ng > 1 ? ng : 0, nb = g.ddelta_bias.defined() ? B * nc : 0;  // M = 0: skipped
    sum_rows_batch<T>({{dB_part, ngs, ngs ? B * T_ * N : 0, g.dB},
                       {dC_part, ngs, ngs ? B * T_ * N : 0, g.dC},
                       {dA_part, B * nc, E * N, g.dA},
                       {dD_part, B * nc, E, g.dD},
                       {dbias_part, nb, nb ? E : 0, g.ddelta_bias}});
  });
}

// The chunked forward's phase 3 blocks aimed at (B nblk_e ncf); a constant, not the device's size: the
// chunks, hence the bits of y and the checkpoints, are the same on every device.
constexpr int64_t kFwdChunkBlocks = 1024;

// Steps per chunk of the chunked forward for B nblk_e = rows blocks per chunk: ncf chunks reaching
// kFwdChunkBlocks blocks, whole tiles of TT steps, at least 2 tiles per chunk (the copies of one
// overlap the scan of the other).
template <typename T>
int64_t forward_chunk_len(int64_t T_, int64_t rows) {
  constexpr int64_t TT = fast_tt<T>();
  const int64_t want = std::max<int64_t>(1, (kFwdChunkBlocks + rows - 1) / rows);
  const int64_t per = (T_ + want - 1) / want;
  return std::max<int64_t>(2 * TT, (per + TT - 1) / TT * TT);
}

// The tiled forward (N <= 64, no every-state output). Lf >= T: one block per (b, channel tile) walks
// all of T (scan_fwd_tiled_kernel, the default). Lf < T (the default unless SEQLAB_SCAN_FWD=tiled), chunk-parallel over
// ncf chunks of Lf steps (h_t = dA_t h_{t-1} + x_t is linear: the state after a chunk is its local end
// state from zero plus the product of its decays times the state before it):
//   phase 1 (block: b, chunk k <= ncf - 2, channel tile): the chunk's end state from a zero state and its
//     sum of delta (P_k = exp(a sum delta));
//   phase 2 (a thread per (b, e, n), chunks first to last): h_{k+1} = P_k h_k + local_k, the state
//     before each chunk;
//   phase 3 (block: b, chunk k, channel tile): the chunk rescanned from h_k, writing y and every
//     checkpoint (a multiple of L) that falls in it, at the same step as the whole pass.
// Phase 3 does the whole pass's per-step arithmetic: y and the checkpoints differ from it only by the
// rounding of the chunk start states. Fixed order everywhere: bit-identical reruns. Memory: (B, ncf,
// E, N) states and (B, ncf, E) sums.
template <typename T, int G, int PER>
void forward_fast(const ScanPtrs<T>& s, int64_t L, T* y, T* ck, bool vec, int64_t Lf) {
  constexpr int NT = kCT * G;
  const size_t smem = FastTile<T, G * PER>::kBytes;
  const int nblk_e = static_cast<int>((s.E + kCT - 1) / kCT);
  const int64_t rows = s.B * nblk_e, ncf = (s.T_ + Lf - 1) / Lf;
  auto prepare = [&](auto* kernel) {
    if (smem > 48 * 1024) {
      SEQLAB_CHECK(smem <= static_cast<size_t>(max_shared_optin()), "selective_scan_forward: needs ", smem,
                   " bytes of shared memory per block");
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
            "cudaFuncSetAttribute (selective_scan_forward)");
    }
    return kernel;
  };
  SEQLAB_CHECK(rows * std::max<int64_t>(ncf, 1) <= 0x7fffffff, "selective_scan_forward: too many blocks");
  if (ncf <= 1) {
    auto* kernel = prepare(scan_fwd_tiled_kernel<T, G, PER>);
    kernel<<<static_cast<unsigned>(rows), NT, smem, stream()>>>(s, L, y, ck, vec, nblk_e, FwdChunks<T>{});
    check_launch("selective_scan_forward (tiled)");
    return;
  }
  const DType dt = dtype_of<T>();
  const Tensor hs = empty({s.B, ncf, s.E, s.N}, dt), sumdl = empty({s.B, ncf, s.E}, dt);
  const FwdChunks<T> fc{Lf, ncf, ptr<T>(hs), ptr<T>(sumdl)};
  auto* local_kernel = prepare(scan_fwd_tiled_kernel<T, G, PER, FwdPass::local>);
  local_kernel<<<static_cast<unsigned>(rows * (ncf - 1)), NT, smem, stream()>>>(s, L, nullptr, nullptr, vec, nblk_e,
                                                                                 fc);
  check_launch("selective_scan_forward (chunk end states)");
  auto* carry_kernel = scan_fwd_carry_kernel<T>;
  carry_kernel<<<blocks_for(s.B * s.E * s.N), 256, 0, stream()>>>(s, fc);
  check_launch("selective_scan_forward (states across chunks)");
  auto* rescan_kernel = prepare(scan_fwd_tiled_kernel<T, G, PER, FwdPass::rescan>);
  rescan_kernel<<<static_cast<unsigned>(rows * ncf), NT, smem, stream()>>>(s, L, y, ck, vec, nblk_e, fc);
  check_launch("selective_scan_forward (chunks)");
}

// SEQLAB_SCAN_FWD (read once): unset, empty or "chunked": the chunk-parallel forward where the tiled
// one applies and T is long enough to split (the default since session 15: the whole cuda suite passes
// with it, and it took 0.76-0.89 of the single-pass time at L = 720 ... 32768 in session 13);
// "tiled": one block per (b, channel tile) over all of T always.
bool chunked_forward_requested() {
  static const bool v = [] {
    const char* env = std::getenv("SEQLAB_SCAN_FWD");
    const std::string_view s = env ? env : "";
    SEQLAB_CHECK(s.empty() || s == "tiled" || s == "chunked", "environment variable SEQLAB_SCAN_FWD = '", s,
                 "': expected 'tiled' or 'chunked'");
    return s != "tiled";
  }();
  return v;
}

// SEQLAB_SCAN_BWD (read once): unset, empty or "chunked": the chunk-parallel backward where it applies
// (N <= 64, min(chunk, T) <= kChunkedMaxL); "sequential": scan_bwd_kernel always (benchmarks, tests).
bool sequential_backward_requested() {
  static const bool v = [] {
    const char* env = std::getenv("SEQLAB_SCAN_BWD");
    const std::string_view s = env ? env : "";
    SEQLAB_CHECK(s.empty() || s == "chunked" || s == "sequential", "environment variable SEQLAB_SCAN_BWD = '", s,
                 "': expected 'chunked' or 'sequential'");
    return s == "sequential";
  }();
  return v;
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
  if (!H && N <= kFastMaxN) {  // the tiled path (chunk-parallel over T unless SEQLAB_SCAN_FWD=tiled)
    const int64_t nblk_e = (E + kCT - 1) / kCT;
    constexpr int V = 16 / sizeof(T);
    auto al = [](const T* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
    const bool vec = E % V == 0 && al(s.u) && al(s.delta) && (!s.z || al(s.z));
    const int64_t Lf = chunked_forward_requested() ? forward_chunk_len<T>(T_, B * nblk_e) : T_;
    with_fast_lanes(N, B * E, [&]<int G, int PER>() { forward_fast<T, G, PER>(s, L, y, ck, vec, Lf); });
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
  if (ex.delta_bias.defined()) g.ddelta_bias = empty({E}, dt);
  if (B == 0 || T_ == 0 || E == 0) {  // nothing flows: the shared gradients are zero
    g.dB = zeros({B, T_, N}, dt);
    g.dC = zeros({B, T_, N}, dt);
    g.dA = zeros({E, N}, dt);
    g.dD = zeros({E}, dt);
    if (ex.delta_bias.defined()) g.ddelta_bias = zeros({E}, dt);
    return g;
  }
  const ScanPtrs<T> s = make_ptrs<T>(u, delta, A, Bm, Cm, Dskip, ex, B, T_, E, N);
  // (the chunk-parallel kernels index steps, channels and blocks with 32-bit integers)
  const bool chunked = N <= kFastMaxN && std::min(L, T_) <= kChunkedMaxL && std::max(T_, E) <= 0x7fffffff &&
                       B * ((T_ + L - 1) / L) <= 0x7fffffff;
  if (chunked && !sequential_backward_requested()) {
    backward_chunked<T>(s, ptr<T>(dy), ck, L, g);
    return g;
  }
  g.dB = zeros({B, T_, N}, dt);
  g.dC = zeros({B, T_, N}, dt);
  g.dA = empty({E, N}, dt);
  g.dD = empty({E}, dt);
  const BwdPlan plan = plan_backward(E, N, T_, L, sizeof(T));
  const Tensor dB_part = plan.ng > 1 ? zeros({plan.ng, B, T_, N}, dt) : g.dB;
  const Tensor dC_part = plan.ng > 1 ? zeros({plan.ng, B, T_, N}, dt) : g.dC;
  const Tensor dA_part = empty({B, E, N}, dt), dD_part = empty({B, E}, dt), dbias_part = empty({B, E}, dt);
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
  // R = B <= kTallRows: one launch; larger B: the tall path (block sums first), a different order than
  // the serial sum this was before session 15 (same bits as the chunk-parallel backward's sums).
  const int64_t ngs = plan.ng > 1 ? plan.ng : 0, nb = ex.delta_bias.defined() ? B : 0;
  sum_rows_batch<T>({{dB_part, ngs, ngs ? B * T_ * N : 0, g.dB},
                     {dC_part, ngs, ngs ? B * T_ * N : 0, g.dC},
                     {dA_part, B, E * N, g.dA},
                     {dD_part, B, E, g.dD},
                     {dbias_part, nb, nb ? E : 0, g.ddelta_bias}});
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
