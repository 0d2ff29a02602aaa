// Selective scan kernels (Mamba-1, Gu & Dao 2023): the fused chunk-checkpointed forward/backward,
// a plain-loop reference that stores every state, and the one-token step. Equations in scan.h.
// Work is split into tasks (b, channel block); each channel's N states live in a local array
// (registers / L1) while the loop runs over T. The inner loops over N are blocked by 8 lanes with
// fixed-order lane sums, so the compiler vectorises them and results stay bit-identical.
#include "core/kernels/scan.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/parallel.h"

namespace seqlab::kernels {
namespace {

constexpr int64_t kMaxN = 256;  // largest d_state with on-stack per-channel arrays
constexpr int kLanes = 8;

// exp for the inner loops. float: Cephes expf (range reduction by ln 2, degree-5 polynomial,
// about 1 ulp), written with plain arithmetic so the loop over N vectorises (std::exp is a libm
// call per element). Inputs below -87 return 2^-126 instead of a denormal: a decay that small is
// zero for every purpose here. double keeps std::exp (gradcheck and reference runs).
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

// Channel blocks per batch row: enough tasks (about 16) for the pool at small batches, but at most
// E / N blocks, so that the backward's per-block dB, dC partials (blocks * B*T*N) never outgrow one
// (B, T, E) tensor. Depends only on the shapes, never on the thread count, so every reduction
// below has a fixed order.
int64_t channel_blocks(int64_t B, int64_t E, int64_t N) {
  int64_t want = (16 + B - 1) / B;
  return std::clamp<int64_t>(want, 1, std::max<int64_t>(1, std::min(E / 8, E / N)));
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

// h_t = exp(dl a) h_{t-1} + dl u B_t; also writes the decays exp(dl a) to e.
template <typename T, int NS>
inline void state_update(int64_t Nrt, T dl, T uu, const T* __restrict a, const T* __restrict Bt,
                         const T* __restrict hp, T* __restrict h, T* __restrict e) {
  const int64_t N = NS ? NS : Nrt;
  const T du = dl * uu;
  for (int64_t n = 0; n < N; ++n) {
    T en = vexp(dl * a[n]);
    e[n] = en;
    h[n] = en * hp[n] + du * Bt[n];
  }
}

// In place: h = exp(dl a) h + dl u B_t.
template <typename T, int NS>
inline void state_update_inplace(int64_t Nrt, T dl, T uu, const T* __restrict a, const T* __restrict Bt,
                                 T* __restrict h) {
  const int64_t N = NS ? NS : Nrt;
  const T du = dl * uu;
  for (int64_t n = 0; n < N; ++n) h[n] = vexp(dl * a[n]) * h[n] + du * Bt[n];
}

// One reverse step at time t. dh holds dL/dh_t from the future on entry, dL/dh_{t-1} on exit.
template <typename T, int NS>
inline void reverse_step(int64_t Nrt, T dout, T uu, T dl, const T* __restrict a, const T* __restrict Bt,
                         const T* __restrict Ct, const T* __restrict ht, const T* __restrict hp,
                         const T* __restrict et, T* __restrict dh, T* __restrict dA, T* __restrict dBt,
                         T* __restrict dCt, T& ddl, T& du) {
  const int64_t N = NS ? NS : Nrt;
  const int64_t N8 = N - N % kLanes;
  const T dlu = dl * uu;
  T ddl_l[kLanes] = {}, du_l[kLanes] = {};
  auto body = [&](int64_t n, int l) {
    T dhn = dh[n] + dout * Ct[n];   // dy_t/dh_t = C_t
    dCt[n] += dout * ht[n];         // dy_t/dC_t = h_t
    T g = dhn * et[n] * hp[n];      // d/d(dl a) of exp(dl a) h_{t-1}
    ddl_l[l] += g * a[n] + dhn * Bt[n] * uu;
    dA[n] += g * dl;
    dBt[n] += dhn * dlu;
    du_l[l] += dhn * dl * Bt[n];
    dh[n] = dhn * et[n];           // dh_t/dh_{t-1} = exp(dl a)
  };
  for (int64_t n0 = 0; n0 < N8; n0 += kLanes)
    for (int l = 0; l < kLanes; ++l) body(n0 + l, l);
  for (int64_t n = N8; n < N; ++n) body(n, static_cast<int>(n - N8));
  ddl = ((ddl_l[0] + ddl_l[1]) + (ddl_l[2] + ddl_l[3])) + ((ddl_l[4] + ddl_l[5]) + (ddl_l[6] + ddl_l[7]));
  du = ((du_l[0] + du_l[1]) + (du_l[2] + du_l[3])) + ((du_l[4] + du_l[5]) + (du_l[6] + du_l[7]));
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
    return softplus ? kernels::softplus(d) : d;
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

}  // namespace

ScanForwardResult selective_scan_forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                         const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex,
                                         int64_t chunk, bool save_checkpoints) {
  check_shapes(u, A);
  const int64_t B = u.size(0), T_ = u.size(1), E = u.size(2), N = A.size(1), L = chunk;
  const int64_t nc = (T_ + L - 1) / L;
  ScanForwardResult r;
  r.y = Tensor::empty({B, T_, E}, u.dtype());
  if (save_checkpoints && nc > 1) r.checkpoints = Tensor::empty({B, nc - 1, E, N}, u.dtype());
  const int64_t nb = channel_blocks(B, E, N);
  dispatch_float(u.dtype(), "selective_scan", [&]<typename T>() {
    ScanArgs<T> s(u, delta, A, Bm, Cm, Dskip, ex);
    T* y = r.y.data<T>();
    T* ck = r.checkpoints.defined() ? r.checkpoints.data<T>() : nullptr;
    with_state_size(N, [&]<int NS>() {
      parallel_for(0, B * nb, 1, [&](int64_t lo, int64_t hi) {
        alignas(64) T h[kMaxN];
        for (int64_t task = lo; task < hi; ++task) {
          const int64_t b = task / nb, j = task % nb;
          for (int64_t c = E * j / nb; c < E * (j + 1) / nb; ++c) {
            const T* a = s.A + c * N;
            std::fill(h, h + N, T(0));
            for (int64_t t = 0; t < T_; ++t) {
              if (ck && t > 0 && t % L == 0) std::copy(h, h + N, ck + ((b * (nc - 1) + t / L - 1) * E + c) * N);
              const int64_t idx = (b * T_ + t) * E + c, row = (b * T_ + t) * N;
              const T dl = s.delta_at(idx, c), uu = s.u[idx];
              state_update_inplace<T, NS>(N, dl, uu, a, s.Bm + row, h);
              y[idx] = s.gate(dot<T, NS>(s.Cm + row, h, N) + s.D[c] * uu, idx);
            }
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
  const int64_t nb = channel_blocks(B, E, N);
  const DType dt = u.dtype();
  ScanGrads g;
  g.du = Tensor::empty({B, T_, E}, dt);
  g.ddelta = Tensor::empty({B, T_, E}, dt);
  if (ex.z.defined()) g.dz = Tensor::empty({B, T_, E}, dt);
  g.dB = Tensor::zeros({B, T_, N}, dt);
  g.dC = Tensor::zeros({B, T_, N}, dt);
  // dB, dC are shared by the channel blocks of one batch row, dA, dD, ddelta_bias by the batch:
  // each task writes its own partial, summed below in a fixed order.
  Tensor dB_part = nb > 1 ? Tensor::zeros({nb, B, T_, N}, dt) : g.dB;
  Tensor dC_part = nb > 1 ? Tensor::zeros({nb, B, T_, N}, dt) : g.dC;
  Tensor dA_part = Tensor::empty({B, E, N}, dt);
  Tensor dD_part = Tensor::empty({B, E}, dt);
  Tensor dbias_part = Tensor::empty({B, E}, dt);
  dispatch_float(dt, "selective_scan_backward", [&]<typename T>() {
    ScanArgs<T> s(u, delta, A, Bm, Cm, Dskip, ex);
    const T* dy = dy_.data<T>();
    const T* ck = checkpoints.defined() ? checkpoints.data<T>() : nullptr;
    T* du = g.du.data<T>();
    T* ddelta = g.ddelta.data<T>();
    T* dz = g.dz.defined() ? g.dz.data<T>() : nullptr;
    T *dBp = dB_part.data<T>(), *dCp = dC_part.data<T>();
    T *dAp = dA_part.data<T>(), *dDp = dD_part.data<T>(), *dbp = dbias_part.data<T>();
    with_state_size(N, [&]<int NS>() {
      parallel_for(0, B * nb, 1, [&](int64_t lo, int64_t hi) {
        alignas(64) T dh[kMaxN], dAacc[kMaxN], zero[kMaxN];
        std::fill(zero, zero + N, T(0));
        // Per-task chunk workspace: states and decays of one chunk, delta and pre-gate outputs.
        std::vector<T> hbuf(static_cast<size_t>(L * N)), ebuf(static_cast<size_t>(L * N));
        std::vector<T> dlbuf(static_cast<size_t>(L)), obuf(static_cast<size_t>(L));
        for (int64_t task = lo; task < hi; ++task) {
          const int64_t b = task / nb, j = task % nb;
          T* dBj = dBp + j * B * T_ * N;
          T* dCj = dCp + j * B * T_ * N;
          for (int64_t c = E * j / nb; c < E * (j + 1) / nb; ++c) {
            const T* a = s.A + c * N;
            std::fill(dh, dh + N, T(0));
            std::fill(dAacc, dAacc + N, T(0));
            T dDacc = 0, dbacc = 0;
            for (int64_t k = nc - 1; k >= 0; --k) {
              const int64_t t0 = k * L, t1 = std::min(T_, t0 + L);
              const T* h0 = k == 0 ? zero : ck + ((b * (nc - 1) + k - 1) * E + c) * N;
              // Recompute the chunk's states from its checkpoint.
              const T* hp = h0;
              for (int64_t t = t0; t < t1; ++t) {
                const int64_t idx = (b * T_ + t) * E + c, row = (b * T_ + t) * N, i = t - t0;
                const T dl = s.delta_at(idx, c), uu = s.u[idx];
                T* ht = hbuf.data() + i * N;
                state_update<T, NS>(N, dl, uu, a, s.Bm + row, hp, ht, ebuf.data() + i * N);
                dlbuf[i] = dl;
                if (s.z) obuf[i] = dot<T, NS>(s.Cm + row, ht, N) + s.D[c] * uu;
                hp = ht;
              }
              // Reverse scan over the chunk.
              for (int64_t t = t1 - 1; t >= t0; --t) {
                const int64_t idx = (b * T_ + t) * E + c, row = (b * T_ + t) * N, i = t - t0;
                const T uu = s.u[idx], dl = dlbuf[i];
                const T dout = gate_backward(s, dy[idx], obuf[i], idx, dz);
                dDacc += dout * uu;
                T ddl, dus;
                reverse_step<T, NS>(N, dout, uu, dl, a, s.Bm + row, s.Cm + row, hbuf.data() + i * N,
                                    i > 0 ? hbuf.data() + (i - 1) * N : h0, ebuf.data() + i * N, dh, dAacc,
                                    dBj + row, dCj + row, ddl, dus);
                du[idx] = dout * s.D[c] + dus;
                if (s.softplus) ddl *= softplus_grad(s.delta_pre(idx, c));
                ddelta[idx] = ddl;
                dbacc += ddl;
              }
            }
            std::copy(dAacc, dAacc + N, dAp + (b * E + c) * N);
            dDp[b * E + c] = dDacc;
            dbp[b * E + c] = dbacc;
          }
        }
      });
    });
    // Fixed-order reductions of the partials.
    if (nb > 1) {
      T *dB = g.dB.data<T>(), *dC = g.dC.data<T>();
      const int64_t M = B * T_ * N;
      parallel_for(0, M, 16384, [&](int64_t lo, int64_t hi) {
        for (int64_t j = 0; j < nb; ++j)
          for (int64_t i = lo; i < hi; ++i) {
            dB[i] += dBp[j * M + i];
            dC[i] += dCp[j * M + i];
          }
      });
    }
    g.dA = Tensor::zeros({E, N}, dt);
    g.dD = Tensor::zeros({E}, dt);
    T *dA = g.dA.data<T>(), *dD = g.dD.data<T>();
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

Tensor selective_scan_step(Tensor& h_, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const ScanExtras& ex) {
  const int64_t B = u.size(0), E = u.size(1), N = A.size(1);
  Tensor y_ = Tensor::empty({B, E}, u.dtype());
  dispatch_float(u.dtype(), "selective_scan_step", [&]<typename T>() {
    // A step is a length-1 scan from state h: reuse the sequence kernel's views with T = 1.
    ScanArgs<T> s(u.view({B, 1, E}), delta.view({B, 1, E}), A, Bm, Cm, Dskip, ex);
    T* h = h_.data<T>();
    T* y = y_.data<T>();
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

}  // namespace seqlab::kernels
