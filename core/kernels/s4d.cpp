// S4D loops: the Vandermonde kernel (forward and backward, std::complex in double whatever the
// tensor dtype: the powers z^l are built by repeated products, which in float would drift by
// ~T * 1e-7), the long convolution by FFTs (float, core/kernels/fft.h LaneFFT) or direct loops
// (double), the output path (skip + GELU, GLU) fused, and one step.
// Complex products are written out (cmul) because GCC's std::complex operator* calls __muldc3
// (NaN/inf recovery) unless -fcx-limited-range, several times slower in these inner loops.
#include "core/kernels/s4d.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/kernels/fft.h"
#include "core/kernels/activation_vec.h"
#include "core/kernels/vmath.h"
#include "core/parallel.h"

namespace seqlab::kernels {

namespace {

using cd = std::complex<double>;

inline cd cmul(cd a, cd b) {
  return {a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real()};
}
inline cd cdiv(cd a, cd b) {
  double den = b.real() * b.real() + b.imag() * b.imag();
  return cmul(a, std::conj(b)) / den;
}
inline cd cexp(cd x) {
  double r = std::exp(x.real());
  return {r * std::cos(x.imag()), r * std::sin(x.imag())};
}

// Shapes of the kernel parameters: D channels, M pairs, S directions.
struct KernelDims {
  int64_t D, M, S;
};

KernelDims check_kernel_params(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag,
                               const Tensor& C, const char* op) {
  SEQLAB_CHECK(log_dt.dim() == 1, op, ": log_dt must be (D), got ", to_string(log_dt.shape()));
  int64_t D = log_dt.size(0);
  SEQLAB_CHECK(log_A_real.dim() == 2 && log_A_real.size(0) == D, op, ": log_A_real must be (D, M) with D = ", D,
               ", got ", to_string(log_A_real.shape()));
  int64_t M = log_A_real.size(1);
  SEQLAB_CHECK(A_imag.shape() == log_A_real.shape(), op, ": A_imag must be ", to_string(log_A_real.shape()),
               ", got ", to_string(A_imag.shape()));
  bool c_ok = (C.dim() == 3 || (C.dim() == 4 && (C.size(0) == 1 || C.size(0) == 2))) && C.size(-3) == D &&
              C.size(-2) == M && C.size(-1) == 2;
  SEQLAB_CHECK(c_ok, op, ": C must be (D, M, 2) or (S, D, M, 2) with S in {1, 2}, D = ", D, ", M = ", M, ", got ",
               to_string(C.shape()));
  for (const Tensor* t : {&log_A_real, &A_imag, &C})
    SEQLAB_CHECK(t->dtype() == log_dt.dtype(), op, ": parameters must share one dtype");
  return {D, M, C.dim() == 4 ? C.size(0) : 1};
}

// Per (d, m): A, dt, z = exp(dtA), q = (z - 1) / A.
struct Mode {
  cd A, z, q;
  double dt;
};
template <typename T>
Mode mode_of(const T* log_dt, const T* lar, const T* ai, int64_t d, int64_t M, int64_t m) {
  Mode md;
  md.dt = std::exp(static_cast<double>(log_dt[d]));
  md.A = cd(-std::exp(static_cast<double>(lar[d * M + m])), static_cast<double>(ai[d * M + m]));
  md.z = cexp(md.A * md.dt);
  md.q = cdiv(md.z - 1.0, md.A);
  return md;
}

// kModeBlock doubles as one vector (AVX2 ymm): the Vandermonde loops run kModeBlock modes at once.
constexpr int64_t kModeBlock = 4;
typedef double VD __attribute__((vector_size(kModeBlock * sizeof(double))));
inline double hsum(VD a) { return (a[0] + a[1]) + (a[2] + a[3]); }

// Kernel shapes for the convolution: K (D, T) or (S, D, T).
int64_t conv_directions(const Tensor& u, const Tensor& K, const char* op) {
  SEQLAB_CHECK(u.dim() == 3, op, ": u must be (B, T, D), got ", to_string(u.shape()));
  int64_t T = u.size(1), D = u.size(2);
  bool ok = (K.dim() == 2 || (K.dim() == 3 && (K.size(0) == 1 || K.size(0) == 2))) && K.size(-2) == D &&
            K.size(-1) == T;
  SEQLAB_CHECK(ok, op, ": K must be (D, T) or (S, D, T) with S in {1, 2}, D = ", D, ", T = ", T, ", got ",
               to_string(K.shape()));
  SEQLAB_CHECK(K.dtype() == u.dtype(), op, ": u and K must share one dtype, got ", dtype_name(u.dtype()), " and ",
               dtype_name(K.dtype()));
  return K.dim() == 3 ? K.size(0) : 1;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Vandermonde kernel

Tensor s4d_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                          int64_t T) {
  const KernelDims kd = check_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_kernel");
  const int64_t D = kd.D, M = kd.M, S = kd.S;
  SEQLAB_CHECK(T >= 1, "s4d_kernel: expected a length T >= 1, got ", T);
  Shape kshape(C.shape().begin(), C.shape().end() - 2);
  kshape.push_back(T);
  Tensor K = Tensor::empty(kshape, C.dtype());
  dispatch_float(C.dtype(), "s4d_kernel", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *plar = log_A_real.data<T_>(), *pai = A_imag.data<T_>(), *pc = C.data<T_>();
    T_* pk = K.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      // Modes in blocks of kModeBlock lanes (padding lanes have C' = 0): the z^l chains of a block are
      // independent, so the loop over l runs at vector throughput instead of one product's latency.
      const int64_t nv = (M + kModeBlock - 1) / kModeBlock;
      std::vector<VD> zr(nv), zi(nv), cr(S * nv), ci(S * nv), wr(nv), wi(nv);
      for (int64_t d = d0; d < d1; ++d) {
        std::fill(cr.begin(), cr.end(), VD{});
        std::fill(ci.begin(), ci.end(), VD{});
        for (int64_t m = 0; m < M; ++m) {
          Mode md = mode_of(pdt, plar, pai, d, M, m);
          zr[m / kModeBlock][m % kModeBlock] = md.z.real();
          zi[m / kModeBlock][m % kModeBlock] = md.z.imag();
          for (int64_t s = 0; s < S; ++s) {
            const T_* c = pc + ((s * D + d) * M + m) * 2;
            cd cp = 2.0 * cmul(cd(c[0], c[1]), md.q);  // 2 C'
            cr[s * nv + m / kModeBlock][m % kModeBlock] = cp.real();
            ci[s * nv + m / kModeBlock][m % kModeBlock] = cp.imag();
          }
        }
        std::fill(wr.begin(), wr.end(), VD{} + 1.0);  // z^l
        std::fill(wi.begin(), wi.end(), VD{});
        for (int64_t l = 0; l < T; ++l) {
          for (int64_t s = 0; s < S; ++s) {
            VD a{};
            for (int64_t v = 0; v < nv; ++v) a += cr[s * nv + v] * wr[v] - ci[s * nv + v] * wi[v];
            pk[(s * D + d) * T + l] = static_cast<T_>(hsum(a));
          }
          for (int64_t v = 0; v < nv; ++v) {
            const VD nr = wr[v] * zr[v] - wi[v] * zi[v];
            wi[v] = wr[v] * zi[v] + wi[v] * zr[v];
            wr[v] = nr;
          }
        }
      }
    });
  });
  return K;
}

// L = Re F, F = 2 sum_{s,m} c q(A, dt) Sg(z), Sg(z) = sum_l G[l] z^l, P(z) = Sg'(z) = sum_l G[l] l z^(l-1):
//   dF/dc = 2 q Sg; dF/dA = 2 c (dq/dA Sg + q P dt z), dq/dA = (dt z - q) / A; dF/dt = 2 c (z Sg + q P A z).
// For a real part x of a complex variable dL/dx = Re F', for an imaginary part dL/dy = -Im F'.
S4DKernelGrads s4d_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& log_A_real,
                                   const Tensor& A_imag, const Tensor& C) {
  const KernelDims kd = check_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_kernel_backward");
  const int64_t D = kd.D, M = kd.M, S = kd.S;
  int64_t T = dK.size(-1);
  SEQLAB_CHECK(dK.numel() == S * D * T && dK.dtype() == C.dtype(), "s4d_kernel_backward: bad dK ",
               to_string(dK.shape()));
  S4DKernelGrads g{Tensor::empty(log_dt.shape(), C.dtype()), Tensor::empty(log_A_real.shape(), C.dtype()),
                   Tensor::empty(A_imag.shape(), C.dtype()), Tensor::empty(C.shape(), C.dtype())};
  dispatch_float(C.dtype(), "s4d_kernel_backward", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *plar = log_A_real.data<T_>(), *pai = A_imag.data<T_>(), *pc = C.data<T_>();
    const T_* pg = dK.data<T_>();
    T_ *gdt = g.dlog_dt.data<T_>(), *glar = g.dlog_A_real.data<T_>(), *gai = g.dA_imag.data<T_>(),
       *gc = g.dC.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      // Sg and P of all modes at once, in blocks of kModeBlock lanes (as the forward)
      const int64_t nv = (M + kModeBlock - 1) / kModeBlock;
      std::vector<double> G(static_cast<size_t>(S * (T + 1)));
      std::vector<VD> zr(nv), zi(nv), wr(nv), wi(nv), sgr(S * nv), sgi(S * nv), pr(S * nv), pi(S * nv);
      std::vector<cd> Sg(static_cast<size_t>(S)), P(static_cast<size_t>(S));
      for (int64_t d = d0; d < d1; ++d) {
        for (int64_t s = 0; s < S; ++s) {
          for (int64_t l = 0; l < T; ++l) G[s * (T + 1) + l] = static_cast<double>(pg[(s * D + d) * T + l]);
          G[s * (T + 1) + T] = 0.0;  // G[T] = 0: P's term l + 1 = T does not exist
        }
        for (int64_t m = 0; m < M; ++m) {
          Mode md = mode_of(pdt, plar, pai, d, M, m);
          zr[m / kModeBlock][m % kModeBlock] = md.z.real();
          zi[m / kModeBlock][m % kModeBlock] = md.z.imag();
        }
        for (auto* v : {&sgr, &sgi, &pr, &pi}) std::fill(v->begin(), v->end(), VD{});
        std::fill(wr.begin(), wr.end(), VD{} + 1.0);  // z^l
        std::fill(wi.begin(), wi.end(), VD{});
        for (int64_t l = 0; l < T; ++l) {
          for (int64_t s = 0; s < S; ++s) {
            const double gl = G[s * (T + 1) + l], gp = G[s * (T + 1) + l + 1] * static_cast<double>(l + 1);
            for (int64_t v = 0; v < nv; ++v) {
              sgr[s * nv + v] += gl * wr[v];
              sgi[s * nv + v] += gl * wi[v];
              pr[s * nv + v] += gp * wr[v];
              pi[s * nv + v] += gp * wi[v];
            }
          }
          for (int64_t v = 0; v < nv; ++v) {
            const VD nr = wr[v] * zr[v] - wi[v] * zi[v];
            wi[v] = wr[v] * zi[v] + wi[v] * zr[v];
            wr[v] = nr;
          }
        }
        double ddt = 0;  // dL/d(dt), summed over m
        for (int64_t m = 0; m < M; ++m) {
          Mode md = mode_of(pdt, plar, pai, d, M, m);
          for (int64_t s = 0; s < S; ++s) {
            const int64_t v = s * nv + m / kModeBlock, lane = m % kModeBlock;
            Sg[s] = cd(sgr[v][lane], sgi[v][lane]);
            P[s] = cd(pr[v][lane], pi[v][lane]);
          }
          cd dqdA = cdiv(md.dt * md.z - md.q, md.A);
          cd dFdA(0, 0), dFdt(0, 0);
          for (int64_t s = 0; s < S; ++s) {
            const T_* c = pc + ((s * D + d) * M + m) * 2;
            cd cs(c[0], c[1]);
            cd dFdc = 2.0 * cmul(md.q, Sg[s]);
            T_* gcs = gc + ((s * D + d) * M + m) * 2;
            gcs[0] = static_cast<T_>(dFdc.real());
            gcs[1] = static_cast<T_>(-dFdc.imag());
            cd qPz = cmul(cmul(md.q, P[s]), md.z);
            dFdA += 2.0 * cmul(cs, cmul(dqdA, Sg[s]) + md.dt * qPz);
            dFdt += 2.0 * cmul(cs, cmul(md.z, Sg[s]) + cmul(qPz, md.A));
          }
          // A = -exp(log_A_real) + i A_imag
          glar[d * M + m] = static_cast<T_>(dFdA.real() * md.A.real());
          gai[d * M + m] = static_cast<T_>(-dFdA.imag());
          ddt += dFdt.real();
        }
        gdt[d] = static_cast<T_>(ddt * std::exp(static_cast<double>(pdt[d])));  // dt = exp(log_dt)
      }
    });
  });
  return g;
}

// ---------------------------------------------------------------------------------------------
// Direct convolution (double path and reference)

Tensor causal_conv_direct_forward(const Tensor& u, const Tensor& K) {
  int64_t S = conv_directions(u, K, "causal_conv");
  int64_t B = u.size(0), T = u.size(1), D = u.size(2);
  Tensor y = Tensor::empty(u.shape(), u.dtype());
  dispatch_float(u.dtype(), "causal_conv", [&]<typename T_>() {
    const T_ *pu = u.data<T_>(), *pk = K.data<T_>();
    T_* py = y.data<T_>();
    parallel_for(0, B * D, 1, [&](int64_t i0, int64_t i1) {
      std::vector<T_> col(static_cast<size_t>(T));
      for (int64_t i = i0; i < i1; ++i) {
        int64_t b = i / D, d = i % D;
        const T_* k0 = pk + d * T;
        const T_* k1 = pk + (D + d) * T;  // only read when S == 2
        for (int64_t t = 0; t < T; ++t) col[t] = pu[(b * T + t) * D + d];
        for (int64_t t = 0; t < T; ++t) {
          T_ acc = 0;
          for (int64_t j = 0; j <= t; ++j) acc += k0[j] * col[t - j];
          if (S == 2)
            for (int64_t j = 0; t + 1 + j < T; ++j) acc += k1[j] * col[t + 1 + j];
          py[(b * T + t) * D + d] = acc;
        }
      }
    });
  });
  return y;
}

// du[s] = sum_{t>=s} dy[t] K0[t-s] + sum_{t<s} dy[t] K1[s-t-1];
// dK0[j] = sum_b sum_t dy[t] u[t-j]; dK1[j] = sum_b sum_t dy[t] u[t+1+j]
ConvGrads causal_conv_direct_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u,
                                      bool need_K) {
  int64_t S = conv_directions(u, K, "causal_conv_backward");
  int64_t B = u.size(0), T = u.size(1), D = u.size(2);
  ConvGrads g;
  if (need_u) g.du = Tensor::empty(u.shape(), u.dtype());
  if (need_K) g.dK = Tensor::empty(K.shape(), K.dtype());
  dispatch_float(u.dtype(), "causal_conv_backward", [&]<typename T_>() {
    const T_ *pu = u.data<T_>(), *pk = K.data<T_>(), *pdy = dy.data<T_>();
    T_* pdu = need_u ? g.du.data<T_>() : nullptr;
    T_* pdk = need_K ? g.dK.data<T_>() : nullptr;
    // Parallel over channels, batch inside: dK sums over b in a fixed order.
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      std::vector<T_> ucol(static_cast<size_t>(T)), gcol(static_cast<size_t>(T)), acc(static_cast<size_t>(S * T));
      for (int64_t d = d0; d < d1; ++d) {
        const T_* k0 = pk + d * T;
        const T_* k1 = pk + (D + d) * T;
        std::fill(acc.begin(), acc.end(), T_(0));
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t t = 0; t < T; ++t) {
            ucol[t] = pu[(b * T + t) * D + d];
            gcol[t] = pdy[(b * T + t) * D + d];
          }
          if (need_u)
            for (int64_t s = 0; s < T; ++s) {
              T_ a = 0;
              for (int64_t t = s; t < T; ++t) a += gcol[t] * k0[t - s];
              if (S == 2)
                for (int64_t t = 0; t < s; ++t) a += gcol[t] * k1[s - t - 1];
              pdu[(b * T + s) * D + d] = a;
            }
          if (need_K)
            for (int64_t j = 0; j < T; ++j) {
              T_ a = 0;
              for (int64_t t = j; t < T; ++t) a += gcol[t] * ucol[t - j];
              acc[j] += a;
              if (S == 2) {
                T_ a1 = 0;
                for (int64_t t = 0; t + 1 + j < T; ++t) a1 += gcol[t] * ucol[t + 1 + j];
                acc[T + j] += a1;
              }
            }
        }
        if (need_K)
          for (int64_t s = 0; s < S; ++s)
            for (int64_t j = 0; j < T; ++j) pdk[(s * D + d) * T + j] = acc[s * T + j];
      }
    });
  });
  return g;
}

// ---------------------------------------------------------------------------------------------
// FFT convolution (float). A channel's kernel is laid out circularly over n >= 2T - 1 points:
// kb[j] = K0[j] (lag j >= 0), kb[n-1-j] = K1[j] (lag -(j+1)); u and dy are zero-padded to n, so the
// circular products have no wrap-around. y = ifft(U Kb) / n; du = ifft(conj(Kb) DY) / n;
// dkb = ifft(sum_b conj(U) DY) / n, read back at the same positions.
//
// Transforms run on LaneFFT (core/kernels/fft.h): one complex transform of kLanes-wide points carries
// a group of 2 kLanes channels of one batch row, channels d0.. in the real parts ("a") and the next
// kLanes in the imaginary parts ("b"), loaded straight from a (B, T, D) row. With Z the transform of
// a + i b and Z*[k] = conj(Z[n-k]): A = (Z + Z*) / 2, B = -i (Z - Z*) / 2. Filtering a by Ka and b by
// Kb in one product: ifft(A Ka + i B Kb) = a * ka + i b * kb, and A Ka + i B Kb = Z P + Z* Q with
// P = (Ka + Kb) / 2, Q = (Ka - Kb) / 2, so the kernel of a group is kept as the two spectra (P, Q).

namespace {

using kernels::LanePoint;
constexpr int64_t kGroup = 2 * kLanes;  // channels per transform
constexpr int64_t kBatchChunk = 8;      // batch rows per backward task (fixed: dK sums in a fixed order)

[[gnu::always_inline]] inline LanePoint cadd(LanePoint a, LanePoint b) { return {a.re + b.re, a.im + b.im}; }
[[gnu::always_inline]] inline LanePoint csub(LanePoint a, LanePoint b) { return {a.re - b.re, a.im - b.im}; }
[[gnu::always_inline]] inline LanePoint cconj(LanePoint a) { return {a.re, -a.im}; }
[[gnu::always_inline]] inline LanePoint cmulv(LanePoint a, LanePoint b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
[[gnu::always_inline]] inline LanePoint cmul_conj(LanePoint a, LanePoint b) {  // conj(a) b
  return {a.re * b.re + a.im * b.im, a.re * b.im - a.im * b.re};
}
[[gnu::always_inline]] inline LanePoint times_minus_i(LanePoint a) { return {a.im, -a.re}; }

// x[t] = channels d0 .. d0 + nch - 1 of src rows t < T (row stride ld), zero for t in [T, n).
void gather_group(LanePoint* x, const float* src, int64_t ld, int64_t T, int64_t n, int64_t nch) {
  if (nch == kGroup) {
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(&x[t].re, src + t * ld, sizeof(LaneVec));
      std::memcpy(&x[t].im, src + t * ld + kLanes, sizeof(LaneVec));
    }
  } else {
    float v[kGroup] = {};  // channel c is float c of a point (re lanes, then im lanes)
    for (int64_t t = 0; t < T; ++t) {
      std::copy(src + t * ld, src + t * ld + nch, v);
      std::memcpy(static_cast<void*>(x + t), v, sizeof(LanePoint));
    }
  }
  std::memset(static_cast<void*>(x + T), 0, sizeof(LanePoint) * static_cast<size_t>(n - T));
}

// dst rows t < T, channels 0 .. nch - 1 = scale * x[t]
void scatter_group(float* dst, int64_t ld, const LanePoint* x, int64_t T, int64_t nch, float scale) {
  if (nch == kGroup) {
    for (int64_t t = 0; t < T; ++t) {
      const LaneVec re = x[t].re * scale, im = x[t].im * scale;
      std::memcpy(dst + t * ld, &re, sizeof(LaneVec));
      std::memcpy(dst + t * ld + kLanes, &im, sizeof(LaneVec));
    }
  } else {
    float v[kGroup];
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(v, static_cast<const void*>(x + t), sizeof(LanePoint));
      for (int64_t c = 0; c < nch; ++c) dst[t * ld + c] = scale * v[c];
    }
  }
}

// The (P, Q) spectra (n points each) of the group of channels d0 .. d0 + nch - 1 (see above).
void group_kernel_spectra(LanePoint* pq, LanePoint* work, const kernels::LaneFFT& fft, const float* K, int64_t S,
                          int64_t D, int64_t T, int64_t d0, int64_t nch) {
  const int64_t n = fft.size();
  LanePoint* z = pq + n;  // the transform lands in the Q half first
  for (int64_t t = 0; t < n; ++t) {  // kb[t] = K0[t] for t < T, K1[n-1-t] for t > n - T
    float v[kGroup] = {};
    for (int64_t c = 0; c < nch; ++c) {
      if (t < T) v[c] = K[(d0 + c) * T + t];
      else if (S == 2 && t > n - T) v[c] = K[(D + d0 + c) * T + (n - 1 - t)];
    }
    std::memcpy(static_cast<void*>(z + t), v, sizeof(LanePoint));
  }
  fft.forward(z, work);
  for (int64_t k = 0; k < n; ++k) {  // reads z, writes P into pq[0, n) (disjoint)
    const LanePoint zk = z[k], zm = cconj(z[(n - k) % n]);
    const LanePoint ka = cadd(zk, zm), kb = times_minus_i(csub(zk, zm));  // 2 Ka, 2 Kb
    pq[k] = {0.25f * (ka.re + kb.re), 0.25f * (ka.im + kb.im)};
    work[k] = {0.25f * (ka.re - kb.re), 0.25f * (ka.im - kb.im)};
  }
  std::memcpy(static_cast<void*>(z), work, sizeof(LanePoint) * static_cast<size_t>(n));
}

// x <- x P + x* Q (Conj: conj(P), conj(Q)), pairing k with n - k so it can run in place.
template <bool Conj>
void apply_group_kernel(LanePoint* x, const LanePoint* P, const LanePoint* Q, int64_t n) {
  auto pk = [&](int64_t k) { return Conj ? cconj(P[k]) : P[k]; };
  auto qk = [&](int64_t k) { return Conj ? cconj(Q[k]) : Q[k]; };
  for (int64_t k = 0; 2 * k <= n; ++k) {
    const int64_t km = (n - k) % n;
    const LanePoint xk = x[k], xm = x[km];
    x[k] = cadd(cmulv(xk, pk(k)), cmulv(cconj(xm), qk(k)));
    if (km != k) x[km] = cadd(cmulv(xm, pk(km)), cmulv(cconj(xk), qk(km)));
  }
}

// Per-thread scratch of LanePoints, grown on demand and kept (no allocation per call once warm).
LanePoint* lane_scratch(int slot, int64_t points) {
  thread_local std::vector<LanePoint> buf[3];
  auto& b = buf[slot];
  if (static_cast<int64_t>(b.size()) < points) b.resize(static_cast<size_t>(points));
  return b.data();
}

}  // namespace

Tensor causal_conv_fft_forward(const Tensor& u, const Tensor& K) {
  int64_t S = conv_directions(u, K, "causal_conv_fft");
  SEQLAB_CHECK(u.dtype() == DType::f32, "causal_conv_fft: the FFT path is float32 only, got ",
               dtype_name(u.dtype()));
  const int64_t B = u.size(0), T = u.size(1), D = u.size(2);
  const int64_t n = fft_fast_size(2 * T - 1), n_groups = (D + kGroup - 1) / kGroup;
  const LaneFFT& fft = lane_fft_plan(n);
  Tensor y = Tensor::empty(u.shape(), u.dtype());
  const float *pu = u.data<float>(), *pk = K.data<float>();
  float* py = y.data<float>();
  // (P, Q) of every group, 2n points each, from the caching allocator
  Tensor spectra = Tensor::empty({n_groups * 2 * n * static_cast<int64_t>(sizeof(LanePoint) / sizeof(float))},
                                 DType::f32);
  LanePoint* pq = reinterpret_cast<LanePoint*>(spectra.data<float>());
  parallel_for(0, n_groups, 1, [&](int64_t g0, int64_t g1) {
    LanePoint* work = lane_scratch(0, n);
    for (int64_t g = g0; g < g1; ++g)
      group_kernel_spectra(pq + g * 2 * n, work, fft, pk, S, D, T, g * kGroup, std::min(kGroup, D - g * kGroup));
  });
  const float scale = 1.0f / static_cast<float>(n);
  parallel_for(0, B * n_groups, 1, [&](int64_t i0, int64_t i1) {
    LanePoint *x = lane_scratch(0, n), *work = lane_scratch(1, n);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / n_groups, g = i % n_groups, d0 = g * kGroup, nch = std::min(kGroup, D - d0);
      gather_group(x, pu + b * T * D + d0, D, T, n, nch);
      fft.forward(x, work);
      apply_group_kernel<false>(x, pq + g * 2 * n, pq + g * 2 * n + n, n);
      fft.inverse(x, work);
      scatter_group(py + b * T * D + d0, D, x, T, nch, scale);
    }
  });
  return y;
}

ConvGrads causal_conv_fft_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K) {
  int64_t S = conv_directions(u, K, "causal_conv_fft_backward");
  SEQLAB_CHECK(u.dtype() == DType::f32, "causal_conv_fft: the FFT path is float32 only, got ",
               dtype_name(u.dtype()));
  const int64_t B = u.size(0), T = u.size(1), D = u.size(2);
  const int64_t n = fft_fast_size(2 * T - 1), nh = n / 2 + 1, n_groups = (D + kGroup - 1) / kGroup;
  const int64_t n_chunks = (B + kBatchChunk - 1) / kBatchChunk;
  const LaneFFT& fft = lane_fft_plan(n);
  constexpr int64_t kF = static_cast<int64_t>(sizeof(LanePoint) / sizeof(float));
  ConvGrads g;
  if (need_u) g.du = Tensor::empty(u.shape(), u.dtype());
  if (need_K) g.dK = Tensor::empty(K.shape(), K.dtype());
  if (!need_u && !need_K) return g;
  const float *pu = u.data<float>(), *pk = K.data<float>(), *pdy = dy.data<float>();
  float* pdu = need_u ? g.du.data<float>() : nullptr;
  float* pdk = need_K ? g.dK.data<float>() : nullptr;
  Tensor spectra, partial;
  LanePoint *pq = nullptr, *acc = nullptr;
  if (need_u) {
    spectra = Tensor::empty({n_groups * 2 * n * kF}, DType::f32);
    pq = reinterpret_cast<LanePoint*>(spectra.data<float>());
    parallel_for(0, n_groups, 1, [&](int64_t g0, int64_t g1) {
      LanePoint* work = lane_scratch(0, n);
      for (int64_t gr = g0; gr < g1; ++gr)
        group_kernel_spectra(pq + gr * 2 * n, work, fft, pk, S, D, T, gr * kGroup, std::min(kGroup, D - gr * kGroup));
    });
  }
  // Per (group, batch chunk): the partial dK spectra of the "a" and "b" channels, 2 nh points.
  if (need_K) {
    partial = Tensor::empty({n_groups * n_chunks * 2 * nh * kF}, DType::f32);
    acc = reinterpret_cast<LanePoint*>(partial.data<float>());
  }
  const float scale = 1.0f / static_cast<float>(n);
  parallel_for(0, n_groups * n_chunks, 1, [&](int64_t i0, int64_t i1) {
    LanePoint *x = lane_scratch(0, n), *work = lane_scratch(1, n), *xu = lane_scratch(2, n);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t gr = i / n_chunks, c = i % n_chunks, d0 = gr * kGroup, nch = std::min(kGroup, D - d0);
      LanePoint* ac = need_K ? acc + i * 2 * nh : nullptr;
      if (need_K) std::memset(static_cast<void*>(ac), 0, sizeof(LanePoint) * static_cast<size_t>(2 * nh));
      for (int64_t b = c * kBatchChunk; b < std::min(B, (c + 1) * kBatchChunk); ++b) {
        gather_group(x, pdy + b * T * D + d0, D, T, n, nch);
        fft.forward(x, work);
        if (need_K) {
          gather_group(xu, pu + b * T * D + d0, D, T, n, nch);
          fft.forward(xu, work);
          // 2A = Z + Z*, 2B = -i (Z - Z*) for u and dy; accumulate conj(2U) (2DY) = 4 conj(U) DY
          for (int64_t k = 0; k < nh; ++k) {
            const int64_t km = (n - k) % n;
            const LanePoint zu = xu[k], zum = cconj(xu[km]), zg = x[k], zgm = cconj(x[km]);
            const LanePoint ua = cadd(zu, zum), ub = times_minus_i(csub(zu, zum));
            const LanePoint ga = cadd(zg, zgm), gb = times_minus_i(csub(zg, zgm));
            ac[k] = cadd(ac[k], cmul_conj(ua, ga));
            ac[nh + k] = cadd(ac[nh + k], cmul_conj(ub, gb));
          }
        }
        if (need_u) {
          apply_group_kernel<true>(x, pq + gr * 2 * n, pq + gr * 2 * n + n, n);
          fft.inverse(x, work);
          scatter_group(pdu + b * T * D + d0, D, x, T, nch, scale);
        }
      }
    }
  });
  if (need_K) {
    // Sum the chunks in order, rebuild the full spectrum of dka + i dkb (Hermitian halves), invert.
    parallel_for(0, n_groups, 1, [&](int64_t g0, int64_t g1) {
      LanePoint *x = lane_scratch(0, n), *work = lane_scratch(1, n);
      for (int64_t gr = g0; gr < g1; ++gr) {
        const int64_t d0 = gr * kGroup, nch = std::min(kGroup, D - d0);
        const LanePoint* first = acc + gr * n_chunks * 2 * nh;
        for (int64_t k = 0; k < nh; ++k) {
          LanePoint a = first[k], b = first[nh + k];
          for (int64_t c = 1; c < n_chunks; ++c) {
            a = cadd(a, first[c * 2 * nh + k]);
            b = cadd(b, first[c * 2 * nh + nh + k]);
          }
          // X[k] = a + i b; X[n-k] = conj(a) + i conj(b)
          x[k] = {a.re - b.im, a.im + b.re};
          if (k > 0 && 2 * k < n) x[n - k] = {a.re + b.im, b.re - a.im};
        }
        fft.inverse(x, work);
        const float sc = 0.25f * scale;  // the 4 from conj(2U)(2DY)
        const float* xf = reinterpret_cast<const float*>(x);  // point t, channel c: xf[t * kGroup + c]
        static_assert(sizeof(LanePoint) == kGroup * sizeof(float));
        for (int64_t ch = 0; ch < nch; ++ch) {
          float* dk0 = pdk + (d0 + ch) * T;
          for (int64_t j = 0; j < T; ++j) dk0[j] = xf[j * kGroup + ch] * sc;
          if (S == 2) {
            float* dk1 = pdk + (D + d0 + ch) * T;
            for (int64_t j = 0; j + 1 < T; ++j) dk1[j] = xf[(n - 1 - j) * kGroup + ch] * sc;
            dk1[T - 1] = 0.0f;  // lag -T never occurs
          }
        }
      }
    });
  }
  return g;
}

// ---------------------------------------------------------------------------------------------

Tensor causal_conv_forward(const Tensor& u, const Tensor& K) {
  return u.dtype() == DType::f32 ? causal_conv_fft_forward(u, K) : causal_conv_direct_forward(u, K);
}

ConvGrads causal_conv_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K) {
  return u.dtype() == DType::f32 ? causal_conv_fft_backward(dy, u, K, need_u, need_K)
                                 : causal_conv_direct_backward(dy, u, K, need_u, need_K);
}

// ---------------------------------------------------------------------------------------------
// Output path: skip + GELU and GLU, one pass each (they were 4 + 4 separate elementwise ops with two
// slice copies, about a fifth of an S4D step once the convolution was fast)

SkipGelu s4d_skip_gelu_forward(const Tensor& y, const Tensor& u, const Tensor& D_skip) {
  SEQLAB_CHECK(u.dim() == 3 && y.shape() == u.shape() && D_skip.dim() == 1 && D_skip.size(0) == u.size(2) &&
                   y.dtype() == u.dtype() && D_skip.dtype() == u.dtype(),
               "s4d_skip_gelu: expected y, u (B, T, D) and D_skip (D) of one dtype, got ", to_string(y.shape()), ", ",
               to_string(u.shape()), ", ", to_string(D_skip.shape()));
  const int64_t D = u.size(2), R = u.numel() / D;
  SkipGelu r{Tensor::empty(u.shape(), u.dtype()), Tensor::empty(u.shape(), u.dtype())};
  dispatch_float(u.dtype(), "s4d_skip_gelu", [&]<typename T>() {
    const T *py = y.data<T>(), *pu = u.data<T>(), *pd = D_skip.data<T>();
    T *ph = r.h.data<T>(), *pp = r.pre.data<T>();
    parallel_for(0, R, std::max<int64_t>(1, 8192 / D), [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0 * D; i < r1 * D; i += D)
        for (int64_t d = 0; d < D; ++d) pp[i + d] = py[i + d] + pu[i + d] * pd[d];
      if constexpr (std::is_same_v<T, float>) {  // the vector GELU of the ISA path in use
        gelu_forward_f32(pp + r0 * D, ph + r0 * D, (r1 - r0) * D);
      } else {
        for (int64_t i = r0 * D; i < r1 * D; ++i)
          ph[i] = T(0.5) * pp[i] * (T(1) + vmath::erf_of(pp[i] * T(M_SQRT1_2)));  // as kernels::gelu_forward
      }
    });
  });
  return r;
}

Tensor s4d_skip_backward(Tensor& du, const Tensor& dpre, const Tensor& u, const Tensor& D_skip, bool need_u,
                         bool need_D) {
  const int64_t D = u.size(2), R = u.numel() / D;
  if (need_u && !du.defined()) du = Tensor::zeros(u.shape(), u.dtype());
  Tensor dD = need_D ? Tensor::empty({D}, u.dtype()) : Tensor();
  constexpr int64_t kRows = 1024;  // rows per partial sum of dD: fixed, so the order never depends on threads
  const int64_t n_chunks = (R + kRows - 1) / kRows;
  std::vector<double> partial(need_D ? static_cast<size_t>(n_chunks * D) : 0, 0.0);
  dispatch_float(u.dtype(), "s4d_skip_backward", [&]<typename T>() {
    const T *pg = dpre.data<T>(), *pu = u.data<T>(), *pd = D_skip.data<T>();
    T* pdu = need_u ? du.data<T>() : nullptr;
    parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double* acc = need_D ? partial.data() + c * D : nullptr;
        for (int64_t r = c * kRows; r < std::min(R, (c + 1) * kRows); ++r) {
          const T *g = pg + r * D, *x = pu + r * D;
          if (pdu)
            for (int64_t d = 0; d < D; ++d) pdu[r * D + d] += g[d] * pd[d];
          if (acc)
            for (int64_t d = 0; d < D; ++d) acc[d] += static_cast<double>(g[d] * x[d]);
        }
      }
    });
    if (need_D)
      for (int64_t d = 0; d < D; ++d) {
        double s = 0;
        for (int64_t c = 0; c < n_chunks; ++c) s += partial[c * D + d];
        dD.data<T>()[d] = static_cast<T>(s);
      }
  });
  return dD;
}

Tensor glu_forward(const Tensor& z) {
  SEQLAB_CHECK(z.dim() >= 1 && z.size(-1) % 2 == 0, "glu: expected an even last axis, got ", to_string(z.shape()));
  const int64_t D2 = z.size(-1), D = D2 / 2, R = z.numel() / std::max<int64_t>(1, D2);
  Shape oshape = z.shape();
  oshape.back() = D;
  Tensor out = Tensor::empty(oshape, z.dtype());
  if (z.dtype() == DType::f32) {  // explicit vectors on the ISA path in use
    glu_forward_f32(z.data<float>(), out.data<float>(), R, D);
    return out;
  }
  dispatch_float(z.dtype(), "glu", [&]<typename T>() {
    const T* pz = z.data<T>();
    T* po = out.data<T>();
    parallel_for(0, R, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, D)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T *a = pz + r * D2, *b = a + D;
        for (int64_t d = 0; d < D; ++d) po[r * D + d] = a[d] * vmath::sigmoid_of(b[d]);
      }
    });
  });
  return out;
}

Tensor glu_backward(const Tensor& dout, const Tensor& z) {
  const int64_t D2 = z.size(-1), D = D2 / 2, R = z.numel() / std::max<int64_t>(1, D2);
  SEQLAB_CHECK(dout.numel() == R * D && dout.dtype() == z.dtype(), "glu_backward: bad gradient shape ",
               to_string(dout.shape()));
  Tensor dz = Tensor::empty(z.shape(), z.dtype());
  if (z.dtype() == DType::f32) {
    glu_backward_f32(dout.data<float>(), z.data<float>(), dz.data<float>(), R, D);
    return dz;
  }
  dispatch_float(z.dtype(), "glu_backward", [&]<typename T>() {
    const T *pz = z.data<T>(), *pg = dout.data<T>();
    T* pdz = dz.data<T>();
    parallel_for(0, R, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, D)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T *a = pz + r * D2, *b = a + D, *g = pg + r * D;
        T *da = pdz + r * D2, *db = da + D;
        for (int64_t d = 0; d < D; ++d) {
          const T s = vmath::sigmoid_of(b[d]);
          da[d] = g[d] * s;
          db[d] = g[d] * a[d] * s * (T(1) - s);
        }
      }
    });
  });
  return dz;
}

// ---------------------------------------------------------------------------------------------
// Recurrent step

Tensor s4d_step_forward(const Tensor& u_t, const Tensor& state, const Tensor& log_dt, const Tensor& log_A_real,
                        const Tensor& A_imag, const Tensor& C, const Tensor& D_skip) {
  const KernelDims kd = check_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_step");
  const int64_t D = kd.D, M = kd.M;
  SEQLAB_CHECK(C.dim() == 3, "s4d_step: only the unidirectional kernel (C of shape (D, M, 2)) has a step mode");
  SEQLAB_CHECK(u_t.dim() == 2 && u_t.size(1) == D, "s4d_step: x_t must be (B, ", D, "), got ",
               to_string(u_t.shape()));
  int64_t B = u_t.size(0);
  SEQLAB_CHECK(state.shape() == Shape({B, D, M, 2}) && state.dtype() == u_t.dtype(),
               "s4d_step: state must be (B, D, M, 2) = ", to_string(Shape{B, D, M, 2}), ", got ",
               to_string(state.shape()));
  Tensor y = Tensor::empty(u_t.shape(), u_t.dtype());
  dispatch_float(u_t.dtype(), "s4d_step", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *plar = log_A_real.data<T_>(), *pai = A_imag.data<T_>(), *pc = C.data<T_>(),
             *pD = D_skip.data<T_>(), *pu = u_t.data<T_>();
    T_ *ps = state.data<T_>(), *py = y.data<T_>();
    parallel_for(0, D, 8, [&](int64_t d0, int64_t d1) {
      for (int64_t d = d0; d < d1; ++d)
        for (int64_t m = 0; m < M; ++m) {
          Mode md = mode_of(pdt, plar, pai, d, M, m);
          cd c(pc[(d * M + m) * 2], pc[(d * M + m) * 2 + 1]);
          for (int64_t b = 0; b < B; ++b) {
            T_* s = ps + ((b * D + d) * M + m) * 2;
            double ub = static_cast<double>(pu[b * D + d]);
            cd sn = cmul(md.z, cd(s[0], s[1])) + md.q * ub;
            s[0] = static_cast<T_>(sn.real());
            s[1] = static_cast<T_>(sn.imag());
          }
        }
      // y_t = 2 Re(sum_m C s_t) + D u_t, summed in m order
      for (int64_t b = 0; b < B; ++b)
        for (int64_t d = d0; d < d1; ++d) {
          double acc = 0;
          for (int64_t m = 0; m < M; ++m) {
            const T_* s = ps + ((b * D + d) * M + m) * 2;
            const T_* c = pc + (d * M + m) * 2;
            acc += 2.0 * (static_cast<double>(c[0]) * s[0] - static_cast<double>(c[1]) * s[1]);
          }
          py[b * D + d] = static_cast<T_>(acc + static_cast<double>(pD[d]) * pu[b * D + d]);
        }
    });
  });
  return y;
}

}  // namespace seqlab::kernels
