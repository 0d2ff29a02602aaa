// S4D loops: the Vandermonde kernel (forward and backward, std::complex in double whatever the
// tensor dtype: the powers z^l are built by repeated products, which in float would drift by
// ~T * 1e-7), the long convolution by real FFTs (float) or direct loops (double), and one step.
// Complex products are written out (cmul) because GCC's std::complex operator* calls __muldc3
// (NaN/inf recovery) unless -fcx-limited-range, several times slower in these inner loops.
#include "core/kernels/s4d.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <vector>

#include "core/kernels/fft.h"
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
  auto [D, M, S] = check_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_kernel");
  SEQLAB_CHECK(T >= 1, "s4d_kernel: expected a length T >= 1, got ", T);
  Shape kshape(C.shape().begin(), C.shape().end() - 2);
  kshape.push_back(T);
  Tensor K = Tensor::empty(kshape, C.dtype());
  dispatch_float(C.dtype(), "s4d_kernel", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *plar = log_A_real.data<T_>(), *pai = A_imag.data<T_>(), *pc = C.data<T_>();
    T_* pk = K.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      std::vector<double> acc(static_cast<size_t>(S * T));
      std::vector<cd> cp(static_cast<size_t>(S));
      for (int64_t d = d0; d < d1; ++d) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t m = 0; m < M; ++m) {
          Mode md = mode_of(pdt, plar, pai, d, M, m);
          for (int64_t s = 0; s < S; ++s) {
            const T_* c = pc + ((s * D + d) * M + m) * 2;
            cp[s] = 2.0 * cmul(cd(c[0], c[1]), md.q);  // 2 C'
          }
          cd w(1.0, 0.0);  // z^l
          for (int64_t l = 0; l < T; ++l) {
            for (int64_t s = 0; s < S; ++s) acc[s * T + l] += cp[s].real() * w.real() - cp[s].imag() * w.imag();
            w = cmul(w, md.z);
          }
        }
        for (int64_t s = 0; s < S; ++s)
          for (int64_t l = 0; l < T; ++l) pk[(s * D + d) * T + l] = static_cast<T_>(acc[s * T + l]);
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
  auto [D, M, S] = check_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_kernel_backward");
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
      std::vector<double> G(static_cast<size_t>(S * T));
      std::vector<cd> Sg(static_cast<size_t>(S)), P(static_cast<size_t>(S));
      for (int64_t d = d0; d < d1; ++d) {
        for (int64_t s = 0; s < S; ++s)
          for (int64_t l = 0; l < T; ++l) G[s * T + l] = static_cast<double>(pg[(s * D + d) * T + l]);
        double ddt = 0;  // dL/d(dt), summed over m
        for (int64_t m = 0; m < M; ++m) {
          Mode md = mode_of(pdt, plar, pai, d, M, m);
          std::fill(Sg.begin(), Sg.end(), cd(0, 0));
          std::fill(P.begin(), P.end(), cd(0, 0));
          cd w(1.0, 0.0);  // z^l
          for (int64_t l = 0; l < T; ++l) {
            for (int64_t s = 0; s < S; ++s) {
              Sg[s] += G[s * T + l] * w;
              if (l + 1 < T) P[s] += (G[s * T + l + 1] * static_cast<double>(l + 1)) * w;
            }
            w = cmul(w, md.z);
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
// circular products have no wrap-around. y = irfft(U Kb) / n; du = irfft(conj(Kb) DY) / n;
// dkb = irfft(sum_b conj(U) DY) / n, read back at the same positions.

namespace {

void load_kernel(float* kb, const float* K, int64_t S, int64_t D, int64_t T, int64_t n, int64_t d) {
  std::fill(kb, kb + n, 0.0f);
  for (int64_t j = 0; j < T; ++j) kb[j] = K[d * T + j];
  if (S == 2)
    for (int64_t j = 0; j + 1 < T; ++j) kb[n - 1 - j] = K[(D + d) * T + j];
}

}  // namespace

Tensor causal_conv_fft_forward(const Tensor& u, const Tensor& K) {
  int64_t S = conv_directions(u, K, "causal_conv_fft");
  SEQLAB_CHECK(u.dtype() == DType::f32, "causal_conv_fft: KissFFT is float32 only, got ", dtype_name(u.dtype()));
  int64_t B = u.size(0), T = u.size(1), D = u.size(2);
  int64_t n = fft_fast_size(2 * T - 1), nb = n / 2 + 1;
  Tensor y = Tensor::empty(u.shape(), u.dtype());
  const float *pu = u.data<float>(), *pk = K.data<float>();
  float* py = y.data<float>();
  std::vector<std::complex<float>> kf(static_cast<size_t>(D * nb));  // kernel spectra, one per channel
  parallel_for(0, D, 4, [&](int64_t d0, int64_t d1) {
    const RealFFT& fft = real_fft_plan(n);
    std::vector<float> kb(static_cast<size_t>(n));
    for (int64_t d = d0; d < d1; ++d) {
      load_kernel(kb.data(), pk, S, D, T, n, d);
      fft.forward(kb.data(), kf.data() + d * nb);
    }
  });
  const float scale = 1.0f / static_cast<float>(n);
  parallel_for(0, B * D, 4, [&](int64_t i0, int64_t i1) {
    const RealFFT& fft = real_fft_plan(n);
    std::vector<float> buf(static_cast<size_t>(n), 0.0f);
    std::vector<std::complex<float>> spec(static_cast<size_t>(nb));
    for (int64_t i = i0; i < i1; ++i) {
      int64_t b = i / D, d = i % D;
      for (int64_t t = 0; t < T; ++t) buf[t] = pu[(b * T + t) * D + d];
      std::fill(buf.begin() + T, buf.end(), 0.0f);
      fft.forward(buf.data(), spec.data());
      const std::complex<float>* k = kf.data() + d * nb;
      for (int64_t f = 0; f < nb; ++f) {
        float re = spec[f].real() * k[f].real() - spec[f].imag() * k[f].imag();
        float im = spec[f].real() * k[f].imag() + spec[f].imag() * k[f].real();
        spec[f] = {re, im};
      }
      fft.inverse(spec.data(), buf.data());
      for (int64_t t = 0; t < T; ++t) py[(b * T + t) * D + d] = buf[t] * scale;
    }
  });
  return y;
}

ConvGrads causal_conv_fft_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K) {
  int64_t S = conv_directions(u, K, "causal_conv_fft_backward");
  SEQLAB_CHECK(u.dtype() == DType::f32, "causal_conv_fft: KissFFT is float32 only, got ", dtype_name(u.dtype()));
  int64_t B = u.size(0), T = u.size(1), D = u.size(2);
  int64_t n = fft_fast_size(2 * T - 1), nb = n / 2 + 1;
  ConvGrads g;
  if (need_u) g.du = Tensor::empty(u.shape(), u.dtype());
  if (need_K) g.dK = Tensor::empty(K.shape(), K.dtype());
  const float *pu = u.data<float>(), *pk = K.data<float>(), *pdy = dy.data<float>();
  float* pdu = need_u ? g.du.data<float>() : nullptr;
  float* pdk = need_K ? g.dK.data<float>() : nullptr;
  const float scale = 1.0f / static_cast<float>(n);
  // Parallel over groups of kGroup channels, batch inside: the dK spectrum of each channel sums over
  // b in a fixed order. A group gathers and scatters its channels together, so each (b, t) row of u,
  // dy and du is read or written once per group instead of once per channel (one channel at a time
  // re-read every cache line D times from L3 and was most of this function's time).
  constexpr int64_t kGroup = 8;
  const int64_t n_groups = (D + kGroup - 1) / kGroup;
  parallel_for(0, n_groups, 1, [&](int64_t g0, int64_t g1) {
    const RealFFT& fft = real_fft_plan(n);
    const size_t nz = static_cast<size_t>(n), nbz = static_cast<size_t>(nb);
    std::vector<float> gbuf(kGroup * nz), ubuf(kGroup * nz), obuf(kGroup * nz), buf(nz);
    std::vector<std::complex<float>> kspec(kGroup * nbz), acc(kGroup * nbz), gspec(nbz), uspec(nbz), tmp(nbz);
    for (int64_t grp = g0; grp < g1; ++grp) {
      const int64_t d0 = grp * kGroup, G = std::min(kGroup, D - d0);
      for (int64_t k = 0; k < G; ++k) {
        if (need_u) {
          load_kernel(buf.data(), pk, S, D, T, n, d0 + k);
          fft.forward(buf.data(), kspec.data() + k * nb);
        }
        std::fill(acc.begin() + k * nb, acc.begin() + (k + 1) * nb, std::complex<float>(0, 0));
      }
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t k = 0; k < G; ++k) {  // zero padding
          std::fill(gbuf.begin() + k * n + T, gbuf.begin() + (k + 1) * n, 0.0f);
          if (need_K) std::fill(ubuf.begin() + k * n + T, ubuf.begin() + (k + 1) * n, 0.0f);
        }
        for (int64_t t = 0; t < T; ++t) {  // gather the group's channels
          const float* row = pdy + (b * T + t) * D + d0;
          for (int64_t k = 0; k < G; ++k) gbuf[k * n + t] = row[k];
          if (need_K) {
            const float* urow = pu + (b * T + t) * D + d0;
            for (int64_t k = 0; k < G; ++k) ubuf[k * n + t] = urow[k];
          }
        }
        for (int64_t k = 0; k < G; ++k) {
          fft.forward(gbuf.data() + k * n, gspec.data());
          if (need_u) {
            const std::complex<float>* ks = kspec.data() + k * nb;
            for (int64_t f = 0; f < nb; ++f) {  // conj(Kb) * DY
              const auto kk = ks[f], q = gspec[f];
              tmp[f] = {kk.real() * q.real() + kk.imag() * q.imag(), kk.real() * q.imag() - kk.imag() * q.real()};
            }
            fft.inverse(tmp.data(), obuf.data() + k * n);
          }
          if (need_K) {
            fft.forward(ubuf.data() + k * n, uspec.data());
            std::complex<float>* ac = acc.data() + k * nb;
            for (int64_t f = 0; f < nb; ++f) {  // += conj(U) * DY
              const auto a = uspec[f], q = gspec[f];
              ac[f] += std::complex<float>(a.real() * q.real() + a.imag() * q.imag(),
                                           a.real() * q.imag() - a.imag() * q.real());
            }
          }
        }
        if (need_u)
          for (int64_t s = 0; s < T; ++s) {  // scatter du
            float* row = pdu + (b * T + s) * D + d0;
            for (int64_t k = 0; k < G; ++k) row[k] = obuf[k * n + s] * scale;
          }
      }
      if (need_K)
        for (int64_t k = 0; k < G; ++k) {
          const int64_t d = d0 + k;
          fft.inverse(acc.data() + k * nb, buf.data());
          for (int64_t j = 0; j < T; ++j) pdk[d * T + j] = buf[j] * scale;
          if (S == 2) {
            for (int64_t j = 0; j + 1 < T; ++j) pdk[(D + d) * T + j] = buf[n - 1 - j] * scale;
            pdk[(D + d) * T + T - 1] = 0.0f;  // lag -T never occurs
          }
        }
    }
  });
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
// Recurrent step

Tensor s4d_step_forward(const Tensor& u_t, const Tensor& state, const Tensor& log_dt, const Tensor& log_A_real,
                        const Tensor& A_imag, const Tensor& C, const Tensor& D_skip) {
  auto [D, M, S] = check_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_step");
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
