// Selective scan kernels (Mamba-1, Gu & Dao 2023): the fused chunk-checkpointed forward/backward,
// a plain-loop reference that stores every state, and the one-token step. Equations in scan.h.
// The fused kernels put W channels side by side in one vector (one register of the ISA path this
// copy is compiled for: W = 16 / 8 / 4 floats on AVX-512 / AVX2 / SSE2, half as many doubles) and
// keep the N state vectors of that channel block in registers / L1 while the loop runs over T.
// Along channels everything is lane-wise (exp(delta A) included, W at a time), so only the
// backward's dB, dC (sums over channels) need cross-lane sums: a fixed tree of shuffles, so results
// are bit-identical at any thread count.
#include "core/kernels/scan.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include <immintrin.h>

#include "core/kernels/vmath.h"
#include "core/parallel.h"
#include "core/kernels/isa_target.h"  // last: the ISA of everything below

#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte vectors without AVX-512: internal functions only

namespace seqlab::kernels::SEQLAB_ISA_NS {
namespace {

constexpr int64_t kMaxN = 256;  // largest d_state with on-stack per-channel arrays
constexpr int kLanes = 8;

// exp for the scalar loops (step mode). float: Cephes expf (range reduction by ln 2, degree-5
// polynomial, about 1 ulp), written with plain arithmetic so the loop over N vectorises. Inputs
// below -87 return 2^-126 instead of a denormal: a decay that small is zero for every purpose here.
// Not vmath::exp_of, on purpose: it clamps to [-87, 88] (exp_of selects 0 / inf outside
// [-87.3, 88.7]) and its last step is p (r r) where exp_core takes (p r) r, another rounding; the
// step mode's results depend on both. double keeps std::exp (gradcheck and reference runs).
inline float vexp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  // k = round(x / ln 2) by the 1.5 * 2^23 trick: std::floor would block vectorisation.
  float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}
inline double vexp(double x) { return std::exp(x); }

template <typename T> inline T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
template <typename T> inline T sigmoid(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}
// d softplus / dx, with PyTorch's threshold rule.
template <typename T> inline T softplus_grad(T x) { return x > T(20) ? T(1) : sigmoid(x); }

// ---- W channels in one vector: IsaVec<T>, one register of this path (isa_target.h) -----------

template <typename T>
using Vec = IsaVec<T>;
template <typename T>
inline constexpr int kW = vmath::lanes_of<Vec<T>>;

// Lane-wise maths: float through vmath's vector forms (about 1 ulp), double through libm lane by
// lane (the gradcheck and reference paths stay exact).
// The decay exp(delta A) is computed as 2^(delta A log2 e), A log2 e precomputed: k = round(t),
// f = t - k, 2^f by Cephes' exp2f polynomial on [-1/2, 1/2] (relative error 2e-9 before rounding),
// times 2^k. With AVX-512 the rounding and the scaling are one instruction each (vrndscaleps,
// vscalefps, which also gives 0 / inf for huge k); elsewhere the 1.5 * 2^23 rounding trick and an
// exponent built from bits, with t clamped to [-126, 127] (so a decay never goes below 2^-126).
[[gnu::always_inline]] inline Vec<float> exp2_poly(Vec<float> f) {
  Vec<float> p = f * 1.535336188319500e-4f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  return p * f + 1.0f;
}
[[gnu::always_inline]] inline Vec<float> exp2_v(Vec<float> t) {
#if SEQLAB_ISA_LEVEL == 2
  // No clamp needed: vscalefps turns any finite k into 0 or inf (only t = +-inf gives NaN, from
  // delta or A already infinite). The masked forms with an all-ones mask: the plain ones pass
  // GCC 12 an "undefined" source operand that -Wmaybe-uninitialized flags.
  const __m512 x = (__m512)t;
  const __m512 k = _mm512_mask_roundscale_ps(x, 0xffff, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 p = (__m512)exp2_poly((Vec<float>)x - (Vec<float>)k);
  return (Vec<float>)_mm512_mask_scalef_ps(p, 0xffff, p, k);
#else
  Vec<float> x = t > splat_lanes(-126.0f) ? t : splat_lanes(-126.0f);
  x = x < splat_lanes(127.0f) ? x : splat_lanes(127.0f);
  const Vec<float> k = (x + 12582912.0f) - 12582912.0f;
  return exp2_poly(x - k) * (Vec<float>)((__builtin_convertvector(k, vmath::IntVec<Vec<float>>) + 127) << 23);
#endif
}
// exp(dl a) from dl and al = a log2 e (float) or a (double).
[[gnu::always_inline]] inline Vec<float> decay_v(Vec<float> dl, Vec<float> al) { return exp2_v(dl * al); }
inline Vec<double> decay_v(Vec<double> dl, Vec<double> a) {
  Vec<double> x = dl * a;
  for (int l = 0; l < kW<double>; ++l) x[l] = std::exp(x[l]);
  return x;
}
[[gnu::always_inline]] inline Vec<float> softplus_v(Vec<float> x) { return vmath::softplus_of(x); }
inline Vec<double> softplus_v(Vec<double> x) {
  for (int l = 0; l < kW<double>; ++l) x[l] = softplus(x[l]);
  return x;
}
[[gnu::always_inline]] inline Vec<float> sigmoid_v(Vec<float> x) { return vmath::sigmoid_of(x); }
inline Vec<double> sigmoid_v(Vec<double> x) {
  for (int l = 0; l < kW<double>; ++l) x[l] = sigmoid(x[l]);
  return x;
}

// Cross-lane sums of W vectors at once: lane j of the result is the sum of the lanes of x[j].
// A tree of halving steps: combining a and b at group width g adds the two halves of each g-lane
// group of a into the group's first half and those of b into its second half. After log2(W) steps
// every lane holds one full sum; feeding the vectors in bit-reversed order puts x[j]'s in lane j.
constexpr int lo_lane(int W, int g, int i) {
  return i % g < g / 2 ? (i / g) * g + i % g : W + (i / g) * g + i % g - g / 2;
}
template <typename V, int W, int G, int... I>
[[gnu::always_inline]] inline V combine(V a, V b, std::integer_sequence<int, I...>) {
  return __builtin_shufflevector(a, b, lo_lane(W, G, I)...) +
         __builtin_shufflevector(a, b, (lo_lane(W, G, I) + G / 2)...);
}
constexpr int bit_reverse(int i, int W) {
  int r = 0;
  for (int b = 1; b < W; b <<= 1, i >>= 1) r = (r << 1) | (i & 1);
  return r;
}
template <typename V, int W, int G>
[[gnu::always_inline]] inline void reduce_level(V* v, int count) {
  for (int q = 0; q < count / 2; ++q)
    v[q] = combine<V, W, G>(v[2 * q], v[2 * q + 1], std::make_integer_sequence<int, W>{});
  if constexpr (G > 2) reduce_level<V, W, G / 2>(v, count / 2);
}
template <typename T>
[[gnu::always_inline]] inline Vec<T> lane_sums(const Vec<T>* x) {
  constexpr int W = kW<T>;
  Vec<T> v[W];
  for (int p = 0; p < W; ++p) v[p] = x[bit_reverse(p, W)];
  reduce_level<Vec<T>, W, W>(v, W);
  return v[0];
}

// Calls f.template operator()<NS>() with NS the compile-time state size when it is a common one
// (so loops over N have fixed trip counts), else NS = 0 (runtime N).
template <typename F>
void with_state_size(int64_t N, F&& f) {
  switch (N) {
    case 8: f.template operator()<8>(); break;
    case 16: f.template operator()<16>(); break;
    case 32: f.template operator()<32>(); break;
    case 64: f.template operator()<64>(); break;
    default: f.template operator()<0>(); break;
  }
}

// Channel groups per batch row: enough tasks (about 16) for the pool at small batches, but at most
// one per W-channel vector block and at most E / N groups, so that the backward's per-group dB, dC
// partials (groups * B*T*N) never outgrow one (B, T, E) tensor. Depends only on the shapes, never
// on the thread count, so every reduction below has a fixed order.
int64_t channel_groups(int64_t B, int64_t E, int64_t N, int W) {
  int64_t want = (16 + B - 1) / B;
  int64_t blocks = (E + W - 1) / W;
  return std::clamp<int64_t>(want, 1, std::max<int64_t>(1, std::min(blocks, E / N)));
}

// a . b over N with 8 fixed lanes summed in a fixed order.
template <typename T, int NS>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t Nrt) {
  const int64_t N = NS ? NS : Nrt;
  const int64_t N8 = N - N % kLanes;
  T acc[kLanes] = {};
  for (int64_t n0 = 0; n0 < N8; n0 += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[n0 + l] * b[n0 + l];
  for (int64_t n = N8; n < N; ++n) acc[n - N8] += a[n] * b[n];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// In place: h = exp(dl a) h + dl u B_t.
template <typename T, int NS>
inline void state_update_inplace(int64_t Nrt, T dl, T uu, const T* __restrict a, const T* __restrict Bt,
                                 T* __restrict h) {
  const int64_t N = NS ? NS : Nrt;
  const T du = dl * uu;
  for (int64_t n = 0; n < N; ++n) h[n] = vexp(dl * a[n]) * h[n] + du * Bt[n];
}

// Typed views of the inputs, shared by every kernel here.
template <typename T>
struct ScanArgs {
  const T *u, *delta, *A, *Bm, *Cm, *D, *z, *bias;
  bool softplus;
  int64_t B, T_, E, N;

  ScanArgs(const Tensor& u_, const Tensor& delta_, const Tensor& A_, const Tensor& Bm_, const Tensor& Cm_,
           const Tensor& D_, const ScanExtras& ex)
      : u(u_.data<T>()), delta(delta_.data<T>()), A(A_.data<T>()), Bm(Bm_.data<T>()), Cm(Cm_.data<T>()),
        D(D_.data<T>()), z(ex.z.defined() ? ex.z.data<T>() : nullptr),
        bias(ex.delta_bias.defined() ? ex.delta_bias.data<T>() : nullptr), softplus(ex.delta_softplus),
        B(u_.size(0)), T_(u_.size(1)), E(u_.size(2)), N(A_.size(1)) {}

  T delta_pre(int64_t idx, int64_t c) const { return bias ? delta[idx] + bias[c] : delta[idx]; }
  T delta_at(int64_t idx, int64_t c) const {
    T d = delta_pre(idx, c);
    return softplus ? SEQLAB_ISA_NS::softplus(d) : d;
  }
  // Output before the gate -> gated output.
  T gate(T out, int64_t idx) const { return z ? out * z[idx] * sigmoid(z[idx]) : out; }
};

// dL/d(pre-gate output) and dz from dL/dy.
template <typename T>
inline T gate_backward(const ScanArgs<T>& s, T dy, T opre, int64_t idx, T* dz) {
  if (!s.z) return dy;
  T zz = s.z[idx], sg = sigmoid(zz);
  dz[idx] = dy * opre * sg * (T(1) + zz * (T(1) - sg));  // silu'(z) = s (1 + z (1 - s))
  return dy * zz * sg;
}

void check_shapes(const Tensor& u, const Tensor& A) {
  SEQLAB_CHECK(A.size(1) <= kMaxN, "selective_scan: d_state N = ", A.size(1), " exceeds the supported ", kMaxN);
  (void)u;
}

// One channel block [c0, c0 + cnt) of one batch row: the per-block constants in vector form.
template <typename T, int NS>
struct BlockConsts {
  static constexpr int64_t NA = NS ? NS : kMaxN;
  Vec<T> A[NA];   // A[n] over the block's channels (zero in unused lanes)
  Vec<T> Al[NA];  // what decay_v takes: A log2 e for float, A for double
  Vec<T> D, bias;

  BlockConsts(const ScanArgs<T>& s, int64_t c0, int cnt) {
    const int64_t N = NS ? NS : s.N;
    for (int64_t n = 0; n < N; ++n) {
      A[n] = Vec<T>{};
      for (int l = 0; l < cnt; ++l) A[n][l] = s.A[(c0 + l) * N + n];
      Al[n] = std::is_same_v<T, float> ? A[n] * T(1.44269504088896341) : A[n];
    }
    D = load_lanes_upto(s.D + c0, cnt);
    bias = s.bias ? load_lanes_upto(s.bias + c0, cnt) : Vec<T>{};
  }
};

// delta after the bias and the softplus, for W channels at one (b, t).
template <typename T, int NS>
[[gnu::always_inline]] inline Vec<T> delta_v(const ScanArgs<T>& s, const BlockConsts<T, NS>& k, int64_t idx,
                                             int cnt) {
  Vec<T> d = load_lanes_upto(s.delta + idx, cnt) + k.bias;
  return s.softplus ? softplus_v(d) : d;
}

// One time step for W channels: h = exp(dl A) h + dl u B_t; returns C_t . h + D u (4 partial sums
// over n, added in a fixed order). h may be hp (in place). kDecays: the decays are written to e.
template <typename T, int NS, bool kDecays>
[[gnu::always_inline]] inline Vec<T> scan_step(int64_t N, const BlockConsts<T, NS>& k, Vec<T> dl, Vec<T> uu,
                                              const T* __restrict Bt, const T* __restrict Ct,
                                              const Vec<T>* hp, Vec<T>* h, Vec<T>* __restrict e) {
  const Vec<T> du = dl * uu;
  Vec<T> acc[4] = {k.D * uu, Vec<T>{}, Vec<T>{}, Vec<T>{}};
#pragma GCC unroll 16
  for (int64_t n = 0; n < N; ++n) {
    const Vec<T> en = decay_v(dl, k.Al[n]);
    if constexpr (kDecays) e[n] = en;
    const Vec<T> hn = en * hp[n] + du * Bt[n];
    h[n] = hn;
    acc[n & 3] += hn * Ct[n];
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

template <typename T>
[[gnu::always_inline]] inline Vec<T> gate_v(Vec<T> out, Vec<T> zz) {
  return out * zz * sigmoid_v(zz);
}

// Forward of one channel block over the whole sequence.
template <typename T, int NS>
void forward_block(const ScanArgs<T>& s, int64_t b, int64_t c0, int cnt, int64_t L, T* __restrict y,
                   T* __restrict ck) {
  const int64_t N = NS ? NS : s.N, T_ = s.T_, E = s.E, nc = (T_ + L - 1) / L;
  const BlockConsts<T, NS> k(s, c0, cnt);
  alignas(64) Vec<T> h[BlockConsts<T, NS>::NA];
  for (int64_t n = 0; n < N; ++n) h[n] = Vec<T>{};
  for (int64_t t = 0; t < T_; ++t) {
    if (ck && t > 0 && t % L == 0)
      for (int64_t n = 0; n < N; ++n) store_lanes(ck + ((b * (nc - 1) + t / L - 1) * N + n) * E + c0, h[n], cnt);
    const int64_t idx = (b * T_ + t) * E + c0, row = (b * T_ + t) * N;
    const Vec<T> uu = load_lanes_upto(s.u + idx, cnt);
    const Vec<T> dl = delta_v(s, k, idx, cnt);
    const Vec<T> du = dl * uu;
    const T *Bt = s.Bm + row, *Ct = s.Cm + row;
    Vec<T> acc[4] = {k.D * uu, Vec<T>{}, Vec<T>{}, Vec<T>{}};
#pragma GCC unroll 16
    for (int64_t n = 0; n < N; ++n) {
      h[n] = decay_v(dl, k.Al[n]) * h[n] + du * Bt[n];
      acc[n & 3] += h[n] * Ct[n];
    }
    Vec<T> out = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    if (s.z) out = gate_v<T>(out, load_lanes_upto(s.z + idx, cnt));
    store_lanes(y + idx, out, cnt);
  }
}

// Per-task workspace of the backward: for one chunk of the block being processed, the states
// (h[0] the checkpoint, h[i + 1] the state at t0 + i), the decays, delta and the pre-gate outputs;
// across chunks, each of the task's blocks' dL/dh and dA, dD, dbias accumulators.
template <typename T>
struct BackwardWork {
  VecArray<Vec<T>> h, e, dl, out, dh, dA, dD, dbias;
  BackwardWork(int64_t L, int64_t N, int64_t blocks)
      : h((L + 1) * N), e(L * N), dl(L), out(L), dh(blocks * N), dA(blocks * N), dD(blocks), dbias(blocks) {}
};

// Outputs of the backward (pointers into the gradient tensors and per-batch-row partials).
template <typename T>
struct BackwardOut {
  const T* dy;
  const T* ck;
  T *du, *ddelta, *dz, *dA, *dD, *dbias;  // dA, dD, dbias: per-batch-row partials (B, E, N), (B, E)
};

// Adds the lane sums of x[0 .. N rounded up to W) (groups of W vectors) to out[0 .. N).
template <typename T>
[[gnu::always_inline]] inline void add_lane_sums(const Vec<T>* x, int64_t N, T* __restrict out) {
  constexpr int W = kW<T>;
  for (int64_t n0 = 0; n0 < N; n0 += W) {
    const Vec<T> r = lane_sums<T>(x + n0);
    const int cnt = static_cast<int>(std::min<int64_t>(W, N - n0));
    store_lanes(out + n0, load_lanes_upto(out + n0, cnt) + r, cnt);
  }
}

// Backward of chunk [t0, t0 + len) of one channel block: recompute the states from the checkpoint
// (ck: null for the first chunk), then the reverse recurrence. dh, dA, dD, dbias: this block's
// accumulators. dB, dC (rows of this batch row's partial) get the block's sums over channels: the
// per-(t, n) products sit in 16 vectors that one shuffle tree sums across lanes (an accumulation
// over the task's blocks in memory before one tree per chunk measured slower: more L2 traffic).
template <typename T, int NS>
void backward_chunk(const ScanArgs<T>& s, const BackwardOut<T>& o, int64_t b, int64_t c0, int cnt, int64_t t0,
                    int64_t len, const T* ck, BackwardWork<T>& w, Vec<T>* __restrict dh, Vec<T>* __restrict dA,
                    Vec<T>& dD, Vec<T>& dbias, T* __restrict dB, T* __restrict dC) {
  using V = Vec<T>;
  constexpr int64_t NP = (BlockConsts<T, NS>::NA + kW<T> - 1) / kW<T> * kW<T>;
  const int64_t N = NS ? NS : s.N, T_ = s.T_, E = s.E;
  const BlockConsts<T, NS> k(s, c0, cnt);
  V *hb = w.h.data(), *eb = w.e.data();
  for (int64_t n = 0; n < N; ++n) hb[n] = ck ? load_lanes_upto(ck + n * E + c0, cnt) : V{};
  for (int64_t i = 0; i < len; ++i) {
    const int64_t idx = (b * T_ + t0 + i) * E + c0, row = (b * T_ + t0 + i) * N;
    const V dl = delta_v(s, k, idx, cnt);
    w.dl[static_cast<size_t>(i)] = dl;
    w.out[static_cast<size_t>(i)] = scan_step<T, NS, true>(N, k, dl, load_lanes_upto(s.u + idx, cnt), s.Bm + row,
                                                          s.Cm + row, hb + i * N, hb + (i + 1) * N, eb + i * N);
  }
  for (int64_t i = len - 1; i >= 0; --i) {
    const int64_t idx = (b * T_ + t0 + i) * E + c0, row = (b * T_ + t0 + i) * N;
    const T *Bt = s.Bm + row, *Ct = s.Cm + row;
    const V uu = load_lanes_upto(s.u + idx, cnt), dyv = load_lanes_upto(o.dy + idx, cnt), dl = w.dl[static_cast<size_t>(i)];
    V dout = dyv;
    if (s.z) {
      const V zz = load_lanes_upto(s.z + idx, cnt), sg = sigmoid_v(zz);
      store_lanes(o.dz + idx, dyv * w.out[static_cast<size_t>(i)] * sg * (T(1) + zz * (T(1) - sg)), cnt);  // silu'
      dout = dyv * zz * sg;
    }
    dD += dout * uu;
    const V du = dl * uu;
    const V *ht = hb + (i + 1) * N, *hp = hb + i * N, *et = eb + i * N;
    alignas(64) V pb[NP], pc[NP];  // dB_t, dC_t before the sums over lanes
    V ga[4] = {}, sb[4] = {};
#pragma GCC unroll 16
    for (int64_t n = 0; n < N; ++n) {
      const V dhn = dh[n] + dout * Ct[n];  // dy_t/dh_t = C_t
      const V q = dhn * et[n];             // dh_t/dh_{t-1} = exp(dl a)
      const V g = q * hp[n];               // d/d(dl a) of exp(dl a) h_{t-1}
      ga[n & 3] += g * k.A[n];
      dA[n] += g * dl;
      sb[n & 3] += dhn * Bt[n];
      dh[n] = q;
      pb[n] = dhn * du;
      pc[n] = dout * ht[n];
    }
    for (int64_t n = N; n < (N + kW<T> - 1) / kW<T> * kW<T>; ++n) pb[n] = pc[n] = V{};
    add_lane_sums<T>(pb, N, dB + row);
    add_lane_sums<T>(pc, N, dC + row);
    const V sbs = (sb[0] + sb[1]) + (sb[2] + sb[3]);
    V ddl = ((ga[0] + ga[1]) + (ga[2] + ga[3])) + sbs * uu;
    store_lanes(o.du + idx, dout * k.D + sbs * dl, cnt);
    if (s.softplus) {
      const V pre = load_lanes_upto(s.delta + idx, cnt) + k.bias;
      ddl *= pre > splat_lanes(T(20)) ? splat_lanes(T(1)) : sigmoid_v(pre);  // PyTorch's threshold rule
    }
    store_lanes(o.ddelta + idx, ddl, cnt);
    dbias += ddl;
  }
}

// Backward of channel blocks [vb0, vb1) of batch row b: chunks last to first, within a chunk every
// block (so one chunk's checkpoint rows and B, C rows are reused while hot).
template <typename T, int NS>
void backward_task(const ScanArgs<T>& s, const BackwardOut<T>& o, int64_t b, int64_t vb0, int64_t vb1, int64_t L,
                   BackwardWork<T>& w, T* __restrict dB, T* __restrict dC) {
  constexpr int W = kW<T>;
  const int64_t N = NS ? NS : s.N, T_ = s.T_, E = s.E, nc = (T_ + L - 1) / L;
  w.dh.zero();
  w.dA.zero();
  w.dD.zero();
  w.dbias.zero();
  for (int64_t kc = nc - 1; kc >= 0; --kc) {
    const int64_t t0 = kc * L, len = std::min(T_, t0 + L) - t0;
    const T* ck = kc == 0 ? nullptr : o.ck + (b * (nc - 1) + kc - 1) * N * E;
    for (int64_t vb = vb0; vb < vb1; ++vb) {
      const int64_t j = vb - vb0, c0 = vb * W;
      const int cnt = static_cast<int>(std::min<int64_t>(W, E - c0));
      backward_chunk<T, NS>(s, o, b, c0, cnt, t0, len, ck, w, w.dh.data() + j * N, w.dA.data() + j * N, w.dD[j],
                            w.dbias[j], dB, dC);
    }
  }
  for (int64_t vb = vb0; vb < vb1; ++vb) {
    const int64_t j = vb - vb0, c0 = vb * W;
    const int cnt = static_cast<int>(std::min<int64_t>(W, E - c0));
    for (int l = 0; l < cnt; ++l) {
      for (int64_t n = 0; n < N; ++n) o.dA[(b * E + c0 + l) * N + n] = w.dA[static_cast<size_t>(j * N + n)][l];
      o.dD[b * E + c0 + l] = w.dD[static_cast<size_t>(j)][l];
      o.dbias[b * E + c0 + l] = w.dbias[static_cast<size_t>(j)][l];
    }
  }
}

}  // namespace

ScanForwardResult selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                         const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                         int64_t chunk, bool save_checkpoints) {
  check_shapes(u, A);
  const int64_t B = u.size(0), T_ = u.size(1), E = u.size(2), N = A.size(1), L = chunk;
  const int64_t nc = (T_ + L - 1) / L;
  ScanForwardResult r;
  r.y = Tensor::empty({B, T_, E}, u.dtype());
  if (save_checkpoints && nc > 1) r.checkpoints = Tensor::empty({B, nc - 1, N, E}, u.dtype());
  dispatch_float(u.dtype(), "selective_scan", [&]<typename T>() {
    constexpr int W = kW<T>;
    const int64_t nvb = (E + W - 1) / W, ng = channel_groups(B, E, N, W);
    ScanArgs<T> s(u, delta, A, Bm, Cm, Dskip, ex);
    T* y = r.y.data<T>();
    T* ck = r.checkpoints.defined() ? r.checkpoints.data<T>() : nullptr;
    with_state_size(N, [&]<int NS>() {
      parallel_for(0, B * ng, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t task = lo; task < hi; ++task) {
          const int64_t b = task / ng, j = task % ng;
          for (int64_t vb = nvb * j / ng; vb < nvb * (j + 1) / ng; ++vb) {
            const int cnt = static_cast<int>(std::min<int64_t>(W, E - vb * W));
            forward_block<T, NS>(s, b, vb * W, cnt, L, y, ck);
          }
        }
      });
    });
  });
  return r;
}

ScanGrads selective_scan_backward(const Tensor& dy_, const Tensor& u, const Tensor& delta, const Tensor& A,
                                  const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                  const Tensor& checkpoints, int64_t chunk) {
  check_shapes(u, A);
  const int64_t B = u.size(0), T_ = u.size(1), E = u.size(2), N = A.size(1), L = chunk;
  const int64_t nc = (T_ + L - 1) / L;
  SEQLAB_CHECK(nc <= 1 || checkpoints.defined(), "selective_scan_backward: missing state checkpoints");
  const DType dt = u.dtype();
  const int W = dt == DType::f64 ? kW<double> : kW<float>;
  const int64_t nvb = (E + W - 1) / W, ng = channel_groups(B, E, N, W);
  ScanGrads g;
  g.du = Tensor::empty({B, T_, E}, dt);
  g.ddelta = Tensor::empty({B, T_, E}, dt);
  if (ex.z.defined()) g.dz = Tensor::empty({B, T_, E}, dt);
  g.dB = Tensor::zeros({B, T_, N}, dt);
  g.dC = Tensor::zeros({B, T_, N}, dt);
  // dB, dC are shared by the channel groups of one batch row, dA, dD, ddelta_bias by the batch:
  // each task writes its own partial, summed below in a fixed order.
  Tensor dB_part = ng > 1 ? Tensor::zeros({ng, B, T_, N}, dt) : g.dB;
  Tensor dC_part = ng > 1 ? Tensor::zeros({ng, B, T_, N}, dt) : g.dC;
  Tensor dA_part = Tensor::empty({B, E, N}, dt);
  Tensor dD_part = Tensor::empty({B, E}, dt);
  Tensor dbias_part = Tensor::empty({B, E}, dt);
  dispatch_float(dt, "selective_scan_backward", [&]<typename T>() {
    ScanArgs<T> s(u, delta, A, Bm, Cm, Dskip, ex);
    BackwardOut<T> o{dy_.data<T>(), checkpoints.defined() ? checkpoints.data<T>() : nullptr,
                     g.du.data<T>(), g.ddelta.data<T>(), g.dz.defined() ? g.dz.data<T>() : nullptr,
                     dA_part.data<T>(), dD_part.data<T>(), dbias_part.data<T>()};
    T *dBp = dB_part.data<T>(), *dCp = dC_part.data<T>();
    with_state_size(N, [&]<int NS>() {
      parallel_for(0, B * ng, 1, [&](int64_t lo, int64_t hi) {
        BackwardWork<T> w(std::min(L, T_), N, (nvb + ng - 1) / ng);
        for (int64_t task = lo; task < hi; ++task) {
          const int64_t b = task / ng, j = task % ng;
          backward_task<T, NS>(s, o, b, nvb * j / ng, nvb * (j + 1) / ng, L, w, dBp + j * B * T_ * N,
                               dCp + j * B * T_ * N);
        }
      });
    });
    // Fixed-order reductions of the partials.
    if (ng > 1) {
      T *dB = g.dB.data<T>(), *dC = g.dC.data<T>();
      const int64_t M = B * T_ * N;
      parallel_for(0, M, 16384, [&](int64_t lo, int64_t hi) {
        for (int64_t j = 0; j < ng; ++j)
          for (int64_t i = lo; i < hi; ++i) {
            dB[i] += dBp[j * M + i];
            dC[i] += dCp[j * M + i];
          }
      });
    }
    g.dA = Tensor::zeros({E, N}, dt);
    g.dD = Tensor::zeros({E}, dt);
    T *dA = g.dA.data<T>(), *dD = g.dD.data<T>();
    const T *dAp = dA_part.data<T>(), *dDp = dD_part.data<T>(), *dbp = dbias_part.data<T>();
    T* db = nullptr;
    if (ex.delta_bias.defined()) {
      g.ddelta_bias = Tensor::zeros({E}, dt);
      db = g.ddelta_bias.data<T>();
    }
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < E * N; ++i) dA[i] += dAp[b * E * N + i];
      for (int64_t c = 0; c < E; ++c) {
        dD[c] += dDp[b * E + c];
        if (db) db[c] += dbp[b * E + c];
      }
    }
  });
  return g;
}

ScanForwardResult selective_scan_loop_forward(const Tensor& u, const Tensor& delta, const Tensor& A,
                                              const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                              const ScanExtras& ex, Tensor* states) {
  const int64_t B = u.size(0), T_ = u.size(1), E = u.size(2), N = A.size(1);
  ScanForwardResult r;
  r.y = Tensor::empty({B, T_, E}, u.dtype());
  *states = Tensor::empty({B, T_, E, N}, u.dtype());
  dispatch_float(u.dtype(), "selective_scan_loop", [&]<typename T>() {
    ScanArgs<T> s(u, delta, A, Bm, Cm, Dskip, ex);
    T* y = r.y.data<T>();
    T* H = states->data<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T_; ++t)
        for (int64_t c = 0; c < E; ++c) {
          const int64_t idx = (b * T_ + t) * E + c;
          const T dl = s.delta_at(idx, c), uu = s.u[idx];
          T out = s.D[c] * uu;
          for (int64_t n = 0; n < N; ++n) {
            T prev = t > 0 ? H[(idx - E) * N + n] : T(0);
            T h = std::exp(dl * s.A[c * N + n]) * prev + dl * s.Bm[(b * T_ + t) * N + n] * uu;
            H[idx * N + n] = h;
            out += s.Cm[(b * T_ + t) * N + n] * h;
          }
          y[idx] = s.gate(out, idx);
        }
  });
  return r;
}

ScanGrads selective_scan_loop_backward(const Tensor& dy_, const Tensor& u, const Tensor& delta, const Tensor& A,
                                       const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                       const ScanExtras& ex, const Tensor& states) {
  const int64_t B = u.size(0), T_ = u.size(1), E = u.size(2), N = A.size(1);
  const DType dt = u.dtype();
  ScanGrads g;
  g.du = Tensor::zeros({B, T_, E}, dt);
  g.ddelta = Tensor::zeros({B, T_, E}, dt);
  g.dA = Tensor::zeros({E, N}, dt);
  g.dB = Tensor::zeros({B, T_, N}, dt);
  g.dC = Tensor::zeros({B, T_, N}, dt);
  g.dD = Tensor::zeros({E}, dt);
  if (ex.z.defined()) g.dz = Tensor::zeros({B, T_, E}, dt);
  if (ex.delta_bias.defined()) g.ddelta_bias = Tensor::zeros({E}, dt);
  dispatch_float(dt, "selective_scan_loop_backward", [&]<typename T>() {
    ScanArgs<T> s(u, delta, A, Bm, Cm, Dskip, ex);
    const T* dy = dy_.data<T>();
    const T* H = states.data<T>();
    T *du = g.du.data<T>(), *ddelta = g.ddelta.data<T>(), *dA = g.dA.data<T>(), *dB = g.dB.data<T>();
    T *dC = g.dC.data<T>(), *dD = g.dD.data<T>();
    T* dz = g.dz.defined() ? g.dz.data<T>() : nullptr;
    T* db = g.ddelta_bias.defined() ? g.ddelta_bias.data<T>() : nullptr;
    std::vector<T> dh(static_cast<size_t>(E * N));
    for (int64_t b = 0; b < B; ++b) {
      std::fill(dh.begin(), dh.end(), T(0));
      for (int64_t t = T_ - 1; t >= 0; --t)
        for (int64_t c = 0; c < E; ++c) {
          const int64_t idx = (b * T_ + t) * E + c, row = (b * T_ + t) * N;
          const T dl = s.delta_at(idx, c), uu = s.u[idx];
          T opre = s.D[c] * uu;
          for (int64_t n = 0; n < N; ++n) opre += s.Cm[row + n] * H[idx * N + n];
          const T dout = gate_backward(s, dy[idx], opre, idx, dz);
          dD[c] += dout * uu;
          du[idx] += dout * s.D[c];
          T ddl = 0;
          for (int64_t n = 0; n < N; ++n) {
            T& dhn = dh[c * N + n];
            dhn += dout * s.Cm[row + n];
            dC[row + n] += dout * H[idx * N + n];
            T prev = t > 0 ? H[(idx - E) * N + n] : T(0);
            T e = std::exp(dl * s.A[c * N + n]);
            ddl += dhn * (s.A[c * N + n] * e * prev + s.Bm[row + n] * uu);
            dA[c * N + n] += dhn * dl * e * prev;
            dB[row + n] += dhn * dl * uu;
            du[idx] += dhn * dl * s.Bm[row + n];
            dhn *= e;
          }
          if (s.softplus) ddl *= softplus_grad(s.delta_pre(idx, c));
          ddelta[idx] = ddl;
          if (db) db[c] += ddl;
        }
    }
  });
  return g;
}

// Step mode with d_state 16 in float: per batch row the step sizes of 16 channels at a time
// (vector softplus), then per channel its state as one vector: exp(delta A), the update, C . h.
// The same formulas as the scalar loop below, but exp(delta A) by vmath::exp_of, which rounds
// slightly differently from the scalar loop's vexp (see vexp).
namespace {
void step_n16(const ScanArgs<float>& s, float* h, float* y) {
  using vmath::f32x16;
  const int64_t B = s.B, E = s.E;
  parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> dls(E);
    for (int64_t b = lo; b < hi; ++b) {
      const float* d = s.delta + b * E;
      int64_t c = 0;
      for (; c + 16 <= E; c += 16) {
        f32x16 v = vmath::load<f32x16>(d + c);
        if (s.bias) v += vmath::load<f32x16>(s.bias + c);
        if (s.softplus) v = vmath::softplus_of(v);
        vmath::store(dls.data() + c, v);
      }
      for (; c < E; ++c) dls[c] = s.softplus ? vmath::softplus_of(s.delta_pre(b * E + c, c)) : s.delta_pre(b * E + c, c);
      const f32x16 Bt = vmath::load<f32x16>(s.Bm + b * 16), Ct = vmath::load<f32x16>(s.Cm + b * 16);
      for (c = 0; c < E; ++c) {
        const int64_t idx = b * E + c;
        const float dl = dls[c], uu = s.u[idx];
        const f32x16 a = vmath::load<f32x16>(s.A + c * 16);
        const f32x16 hv = vmath::exp_of(dl * a) * vmath::load<f32x16>(h + idx * 16) + (dl * uu) * Bt;
        vmath::store(h + idx * 16, hv);
        const float acc = vmath::reduce_add(Ct * hv);
        y[idx] = s.gate(acc + s.D[c] * uu, idx);
      }
    }
  });
}
}  // namespace

Tensor selective_scan_step(Tensor& h_, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex) {
  const int64_t B = u.size(0), E = u.size(1), N = A.size(1);
  Tensor y_ = Tensor::empty({B, E}, u.dtype());
  dispatch_float(u.dtype(), "selective_scan_step", [&]<typename T>() {
    // A step is a length-1 scan from state h: reuse the sequence kernel's views with T = 1.
    ScanArgs<T> s(u.view({B, 1, E}), delta.view({B, 1, E}), A, Bm, Cm, Dskip, ex);
    T* h = h_.data<T>();
    T* y = y_.data<T>();
    if constexpr (std::is_same_v<T, float>) {
      if (N == 16) {  // Mamba's default d_state: a channel's state is one 16-lane vector
        step_n16(s, h, y);
        return;
      }
    }
    parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b)
        for (int64_t c = 0; c < E; ++c) {
          const int64_t idx = b * E + c;
          const T dl = s.delta_at(idx, c), uu = s.u[idx];
          T* hc = h + idx * N;
          state_update_inplace<T, 0>(N, dl, uu, s.A + c * N, s.Bm + b * N, hc);
          y[idx] = s.gate(dot<T, 0>(s.Cm + b * N, hc, N) + s.D[c] * uu, idx);
        }
    });
  });
  return y_;
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
