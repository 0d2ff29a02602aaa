// LSSL and S4 loops. Arithmetic is in double (std::complex<double> for S4) whatever the tensor dtype:
// powers of dA over T steps and the Woodbury ratio lose too much in float. The S4 backward is plain
// reverse mode over the complex forward with cotangents xbar = dL/dRe x + i dL/dIm x, so that
// u = a b gives abar += ubar conj(b), u = 1/a gives abar -= ubar conj(u^2), u = conj(a) gives
// abar += conj(ubar) and a real r = Re(u) gives ubar += rbar.
#include "core/kernels/s4.h"

#include <cmath>
#include <complex>
#include <numbers>
#include <vector>

#include "core/cuda/ssm.h"
#include "core/device.h"
#include "core/kernels/s4_check.h"
#include "core/parallel.h"

namespace seqlab::kernels {

namespace {

using cd = std::complex<double>;

// In-place Gauss-Jordan inverse with partial pivoting (n <= a few hundred; a is destroyed).
template <typename S>
void invert(int64_t n, std::vector<S>& a, std::vector<S>& inv) {
  for (int64_t i = 0; i < n * n; ++i) inv[i] = S(0);
  for (int64_t i = 0; i < n; ++i) inv[i * n + i] = S(1);
  for (int64_t col = 0; col < n; ++col) {
    int64_t piv = col;
    for (int64_t r = col + 1; r < n; ++r)
      if (std::abs(a[r * n + col]) > std::abs(a[piv * n + col])) piv = r;
    if (piv != col)
      for (int64_t k = 0; k < n; ++k) {
        std::swap(a[col * n + k], a[piv * n + k]);
        std::swap(inv[col * n + k], inv[piv * n + k]);
      }
    S ip = S(1) / a[col * n + col];
    for (int64_t k = 0; k < n; ++k) {
      a[col * n + k] *= ip;
      inv[col * n + k] *= ip;
    }
    for (int64_t r = 0; r < n; ++r) {
      if (r == col) continue;
      S f = a[r * n + col];
      if (f == S(0)) continue;
      for (int64_t k = 0; k < n; ++k) {
        a[r * n + k] -= f * a[col * n + k];
        inv[r * n + k] -= f * inv[col * n + k];
      }
    }
  }
}

// out = a b, n x n row-major
template <typename S>
void matmul(int64_t n, const S* a, const S* b, S* out) {
  for (int64_t i = 0; i < n * n; ++i) out[i] = S(0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < n; ++k) {
      S aik = a[i * n + k];
      for (int64_t j = 0; j < n; ++j) out[i * n + j] += aik * b[k * n + j];
    }
}
template <typename S>
void matvec(int64_t n, const S* a, const S* x, S* out) {
  for (int64_t i = 0; i < n; ++i) {
    S acc = S(0);
    for (int64_t j = 0; j < n; ++j) acc += a[i * n + j] * x[j];
    out[i] = acc;
  }
}

// Dense bilinear discretisation of one LSSL channel: dA, dB; also inv = (I - h A)^-1.
struct LsslWork {
  int64_t N;
  std::vector<double> R1, inv, dA, dB;
  explicit LsslWork(int64_t n)
      : N(n), R1(static_cast<size_t>(n * n)), inv(R1.size()), dA(R1.size()), dB(static_cast<size_t>(n)) {}
  void setup(const HippoLegs& hp, double dt) {
    double h = dt / 2;
    for (int64_t i = 0; i < N * N; ++i) R1[i] = -h * hp.A[i];
    for (int64_t i = 0; i < N; ++i) R1[i * N + i] += 1.0;
    invert(N, R1, inv);
    for (int64_t i = 0; i < N * N; ++i) R1[i] = h * hp.A[i];  // R1 now holds I + h A
    for (int64_t i = 0; i < N; ++i) R1[i * N + i] += 1.0;
    matmul(N, inv.data(), R1.data(), dA.data());
    matvec(N, inv.data(), hp.B.data(), dB.data());
    for (double& v : dB) v *= dt;
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Argument checks (s4_check.h), shared with the CUDA twins

void check_lssl_params(const Tensor& log_dt, const Tensor& C, const HippoLegs& hp, const char* op) {
  SEQLAB_CHECK(log_dt.dim() == 1, op, ": log_dt must be (D), got ", to_string(log_dt.shape()));
  SEQLAB_CHECK(C.dim() == 2 && C.size(0) == log_dt.size(0) && C.size(1) == hp.N, op, ": C must be (D, N) = (",
               log_dt.size(0), ", ", hp.N, "), got ", to_string(C.shape()));
  SEQLAB_CHECK(C.dtype() == log_dt.dtype(), op, ": log_dt and C must share one dtype");
}

void check_lssl_step(const Tensor& u_t, const Tensor& state, const Tensor& C) {
  const int64_t D = C.size(0), N = C.size(1);
  SEQLAB_CHECK(u_t.dim() == 2 && u_t.size(1) == D, "lssl_step: x_t must be (B, ", D, "), got ",
               to_string(u_t.shape()));
  const int64_t B = u_t.size(0);
  SEQLAB_CHECK(state.shape() == Shape({B, D, N}) && state.dtype() == u_t.dtype(), "lssl_step: state must be ",
               to_string(Shape{B, D, N}), ", got ", to_string(state.shape()));
}

void check_s4_params(const Tensor& log_dt, const Tensor& lar, const Tensor& ai, const std::vector<const Tensor*>& cplx,
                     const char* op) {
  SEQLAB_CHECK(log_dt.dim() == 1, op, ": log_dt must be (D), got ", to_string(log_dt.shape()));
  const int64_t D = log_dt.size(0);
  SEQLAB_CHECK(lar.dim() == 2 && lar.size(0) == D, op, ": log_A_real must be (D, M) with D = ", D, ", got ",
               to_string(lar.shape()));
  const int64_t M = lar.size(1);
  SEQLAB_CHECK(ai.shape() == lar.shape(), op, ": A_imag must be ", to_string(lar.shape()), ", got ",
               to_string(ai.shape()));
  for (const Tensor* t : cplx)
    SEQLAB_CHECK(t->shape() == Shape({D, M, 2}), op, ": P, B and C must be (D, M, 2) = ", to_string(Shape{D, M, 2}),
                 ", got ", to_string(t->shape()));
  for (const Tensor* t : cplx) SEQLAB_CHECK(t->dtype() == log_dt.dtype(), op, ": parameters must share one dtype");
  SEQLAB_CHECK(lar.dtype() == log_dt.dtype() && ai.dtype() == log_dt.dtype(), op,
               ": parameters must share one dtype");
}

void check_s4_step(const Tensor& u_t, const Tensor& state, const Tensor& C) {
  const int64_t D = C.size(0), M = C.size(1), N = 2 * M;
  SEQLAB_CHECK(u_t.dim() == 2 && u_t.size(1) == D, "s4_step: x_t must be (B, ", D, "), got ",
               to_string(u_t.shape()));
  const int64_t B = u_t.size(0);
  SEQLAB_CHECK(state.shape() == Shape({B, D, N, 2}) && state.dtype() == u_t.dtype(), "s4_step: state must be ",
               to_string(Shape{B, D, N, 2}), ", got ", to_string(state.shape()));
}

// ---------------------------------------------------------------------------------------------
// LSSL

Tensor lssl_kernel_forward(const Tensor& log_dt, const Tensor& C, const HippoLegs& hp, int64_t T) {
  if constexpr (kCuda) if (on_cuda("lssl_kernel", log_dt, C)) return cuda::lssl_kernel_forward(log_dt, C, hp, T);
  check_lssl_params(log_dt, C, hp, "lssl_kernel");
  SEQLAB_CHECK(T >= 1, "lssl_kernel: expected a length T >= 1, got ", T);
  const int64_t D = log_dt.size(0), N = hp.N;
  Tensor K = Tensor::empty({D, T}, C.dtype());
  dispatch_float(C.dtype(), "lssl_kernel", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *pc = C.data<T_>();
    T_* pk = K.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      LsslWork w(N);
      std::vector<double> x(static_cast<size_t>(N)), xn(x.size()), c(x.size());
      for (int64_t d = d0; d < d1; ++d) {
        w.setup(hp, std::exp(static_cast<double>(pdt[d])));
        for (int64_t n = 0; n < N; ++n) c[n] = pc[d * N + n];
        x = w.dB;
        for (int64_t l = 0; l < T; ++l) {
          double acc = 0;
          for (int64_t n = 0; n < N; ++n) acc += c[n] * x[n];
          pk[d * T + l] = static_cast<T_>(acc);
          if (l + 1 < T) {
            matvec(N, w.dA.data(), x.data(), xn.data());
            std::swap(x, xn);
          }
        }
      }
    });
  });
  return K;
}

// dC = sum_l G_l x_l (x_l = dA^l dB); d dt: tangents xd_l = d x_l / d dt,
// xd_0 = inv (A/2 dB + B), xd_{l+1} = dA xd_l + dAd x_l with dAd = d dA / d dt = inv (A/2) (I + dA).
LsslKernelGrads lssl_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& C, const HippoLegs& hp) {
  if constexpr (kCuda)
    if (on_cuda("lssl_kernel_backward", dK, log_dt, C)) return cuda::lssl_kernel_backward(dK, log_dt, C, hp);
  check_lssl_params(log_dt, C, hp, "lssl_kernel_backward");
  const int64_t D = log_dt.size(0), N = hp.N, T = dK.size(-1);
  SEQLAB_CHECK(dK.shape() == Shape({D, T}) && dK.dtype() == C.dtype(), "lssl_kernel_backward: bad dK ",
               to_string(dK.shape()));
  LsslKernelGrads g{Tensor::empty(log_dt.shape(), C.dtype()), Tensor::empty(C.shape(), C.dtype())};
  dispatch_float(C.dtype(), "lssl_kernel_backward", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *pc = C.data<T_>(), *pg = dK.data<T_>();
    T_ *gdt = g.dlog_dt.data<T_>(), *gc = g.dC.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      LsslWork w(N);
      std::vector<double> half(static_cast<size_t>(N * N)), tmp(half.size()), dAd(half.size());
      std::vector<double> x(static_cast<size_t>(N)), xn(x.size()), xd(x.size()), xdn(x.size()), c(x.size()),
          dc(x.size());
      for (int64_t d = d0; d < d1; ++d) {
        double dt = std::exp(static_cast<double>(pdt[d]));
        w.setup(hp, dt);
        for (int64_t i = 0; i < N * N; ++i) half[i] = 0.5 * hp.A[i];
        for (int64_t i = 0; i < N * N; ++i) dAd[i] = w.dA[i];
        for (int64_t i = 0; i < N; ++i) dAd[i * N + i] += 1.0;  // I + dA
        matmul(N, half.data(), dAd.data(), tmp.data());        // A/2 (I + dA)
        matmul(N, w.inv.data(), tmp.data(), dAd.data());
        matvec(N, half.data(), w.dB.data(), xn.data());
        for (int64_t n = 0; n < N; ++n) xn[n] += hp.B[n];
        matvec(N, w.inv.data(), xn.data(), xd.data());
        for (int64_t n = 0; n < N; ++n) {
          c[n] = pc[d * N + n];
          dc[n] = 0;
        }
        x = w.dB;
        double ddt = 0;
        for (int64_t l = 0; l < T; ++l) {
          double gl = pg[d * T + l], cx = 0;
          for (int64_t n = 0; n < N; ++n) {
            dc[n] += gl * x[n];
            cx += c[n] * xd[n];
          }
          ddt += gl * cx;
          if (l + 1 < T) {
            matvec(N, w.dA.data(), xd.data(), xdn.data());
            matvec(N, dAd.data(), x.data(), xn.data());
            for (int64_t n = 0; n < N; ++n) xdn[n] += xn[n];
            matvec(N, w.dA.data(), x.data(), xn.data());
            std::swap(x, xn);
            std::swap(xd, xdn);
          }
        }
        for (int64_t n = 0; n < N; ++n) gc[d * N + n] = static_cast<T_>(dc[n]);
        gdt[d] = static_cast<T_>(ddt * dt);
      }
    });
  });
  return g;
}

Discretised lssl_discretise(const Tensor& log_dt, const HippoLegs& hp) {
  if constexpr (kCuda) if (on_cuda("lssl_discretise", log_dt)) return cuda::lssl_discretise(log_dt, hp);
  SEQLAB_CHECK(log_dt.dim() == 1, "lssl_discretise: log_dt must be (D)");
  const int64_t D = log_dt.size(0), N = hp.N;
  Discretised r{Tensor::empty({D, N, N}, log_dt.dtype()), Tensor::empty({D, N}, log_dt.dtype())};
  dispatch_float(log_dt.dtype(), "lssl_discretise", [&]<typename T_>() {
    const T_* pdt = log_dt.data<T_>();
    T_ *pa = r.dA.data<T_>(), *pb = r.dB.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      LsslWork w(N);
      for (int64_t d = d0; d < d1; ++d) {
        w.setup(hp, std::exp(static_cast<double>(pdt[d])));
        for (int64_t i = 0; i < N * N; ++i) pa[d * N * N + i] = static_cast<T_>(w.dA[i]);
        for (int64_t i = 0; i < N; ++i) pb[d * N + i] = static_cast<T_>(w.dB[i]);
      }
    });
  });
  return r;
}

Tensor lssl_step_forward(const Tensor& u_t, const Tensor& state, const Discretised& disc, const Tensor& C,
                         const Tensor& D_skip) {
  if constexpr (kCuda)
    if (on_cuda("lssl_step", u_t, state, disc.dA, disc.dB, C, D_skip))
      return cuda::lssl_step_forward(u_t, state, disc, C, D_skip);
  check_lssl_step(u_t, state, C);
  const int64_t D = C.size(0), N = C.size(1), B = u_t.size(0);
  Tensor y = Tensor::empty(u_t.shape(), u_t.dtype());
  dispatch_float(u_t.dtype(), "lssl_step", [&]<typename T_>() {
    const T_ *pa = disc.dA.data<T_>(), *pb = disc.dB.data<T_>(), *pc = C.data<T_>(), *pD = D_skip.data<T_>(),
             *pu = u_t.data<T_>();
    T_ *ps = state.data<T_>(), *py = y.data<T_>();
    parallel_for(0, B * D, 1, [&](int64_t i0, int64_t i1) {
      std::vector<double> xn(static_cast<size_t>(N));
      for (int64_t i = i0; i < i1; ++i) {
        int64_t b = i / D, d = i % D;
        T_* s = ps + i * N;
        double u = pu[b * D + d], acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          double v = pb[d * N + n] * u;
          const T_* row = pa + (d * N + n) * N;
          for (int64_t k = 0; k < N; ++k) v += static_cast<double>(row[k]) * s[k];
          xn[n] = v;
        }
        for (int64_t n = 0; n < N; ++n) {
          s[n] = static_cast<T_>(xn[n]);
          acc += static_cast<double>(pc[d * N + n]) * xn[n];
        }
        py[b * D + d] = static_cast<T_>(acc + static_cast<double>(pD[d]) * u);
      }
    });
  });
  return y;
}

// ---------------------------------------------------------------------------------------------
// S4

namespace {

// One channel of S4: parameters in complex double and the constants of the transposed bilinear step
// x' = R1^-T R2^T x (R1 = I - hA, R2 = I + hA, both DPLR; R1^-T by Sherman-Morrison), on half vectors:
//   s1 = 2 Re(P.x), y = x + h (Lambda x - conj(P) s1), q = y / d1, s2 = 2 Re(P.q), x' = q - e c s2,
//   d1 = 1 - h Lambda, e = conj(P) / d1, kappa = 2 Re sum |P|^2 / d1, c = h / (1 + h kappa).
struct S4Chan {
  int64_t M = 0;
  double dt = 0, h = 0, kappa = 0, c = 0;
  std::vector<cd> lam, P, B, C, inv1, e;
  explicit S4Chan(int64_t m) : M(m), lam(m), P(m), B(m), C(m), inv1(m), e(m) {}
  template <typename T_>
  void load(const T_* pdt, const T_* plar, const T_* pai, const T_* pp, const T_* pb, const T_* pc, int64_t d) {
    dt = std::exp(static_cast<double>(pdt[d]));
    h = dt / 2;
    kappa = 0;
    for (int64_t m = 0; m < M; ++m) {
      int64_t i = d * M + m;
      lam[m] = cd(-std::exp(static_cast<double>(plar[i])), static_cast<double>(pai[i]));
      P[m] = cd(pp[2 * i], pp[2 * i + 1]);
      B[m] = cd(pb[2 * i], pb[2 * i + 1]);
      C[m] = cd(pc[2 * i], pc[2 * i + 1]);
      inv1[m] = 1.0 / (1.0 - h * lam[m]);
      e[m] = std::conj(P[m]) * inv1[m];
      kappa += 2 * std::norm(P[m]) * inv1[m].real();
    }
    c = h / (1 + h * kappa);
  }
  // x (M) -> out (M): one transposed step (row vector times dA)
  void step(const cd* x, cd* out) const {
    double s1 = 0;
    for (int64_t m = 0; m < M; ++m) s1 += 2 * (P[m] * x[m]).real();
    double s2 = 0;
    for (int64_t m = 0; m < M; ++m) {
      cd y = x[m] + h * (lam[m] * x[m] - std::conj(P[m]) * s1);
      out[m] = y * inv1[m];
      s2 += 2 * (P[m] * out[m]).real();
    }
    for (int64_t m = 0; m < M; ++m) out[m] -= e[m] * (c * s2);
  }
};

// Roots of unity E[j] = exp(2 pi i j / L) and the irfft weights of bins k = 0..L/2.
struct Dft {
  int64_t L, nf;
  std::vector<cd> E;
  std::vector<double> w;
  explicit Dft(int64_t l) : L(l), nf(l / 2 + 1), E(static_cast<size_t>(l)), w(static_cast<size_t>(l / 2 + 1), 2.0) {
    for (int64_t j = 0; j < L; ++j) {
      double a = 2 * std::numbers::pi * static_cast<double>(j) / static_cast<double>(L);
      E[j] = cd(std::cos(a), std::sin(a));
    }
    w[0] = 1;
    if (L % 2 == 0) w[L / 2] = 1;
  }
};

// The Cauchy sums of one bin (z = conj(E[k])), in the form that stays finite at z = -1:
// rho_xy = sum_m n_xy/den + conj(n_xy)/denc, den = alpha - beta Lambda, denc = alpha - beta conj(Lambda),
// alpha = 2/dt (1 - z), beta = 1 + z; k(z) = 2 (rho00 - beta rho01 rho10 / (1 + beta rho11)).
struct Bin {
  cd alpha, beta, r00, r01, r10, r11, tau, F;
};
void cauchy_bin(const S4Chan& ch, const cd* Ct, cd z, cd* id, cd* idc, Bin& b) {
  b.alpha = (2.0 / ch.dt) * (1.0 - z);
  b.beta = 1.0 + z;
  b.r00 = b.r01 = b.r10 = b.r11 = 0;
  for (int64_t m = 0; m < ch.M; ++m) {
    id[m] = 1.0 / (b.alpha - b.beta * ch.lam[m]);
    idc[m] = 1.0 / (b.alpha - b.beta * std::conj(ch.lam[m]));
    cd n00 = Ct[m] * ch.B[m], n01 = Ct[m] * ch.P[m], n10 = std::conj(ch.P[m]) * ch.B[m];
    double n11 = std::norm(ch.P[m]);
    b.r00 += n00 * id[m] + std::conj(n00) * idc[m];
    b.r01 += n01 * id[m] + std::conj(n01) * idc[m];
    b.r10 += n10 * id[m] + std::conj(n10) * idc[m];
    b.r11 += n11 * (id[m] + idc[m]);
  }
  b.tau = 1.0 / (1.0 + b.beta * b.r11);
  b.F = 2.0 * (b.r00 - b.beta * b.r01 * b.r10 * b.tau);
}

}  // namespace

Tensor s4_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                         const Tensor& B, const Tensor& C, int64_t T) {
  if constexpr (kCuda)
    if (on_cuda("s4_kernel", log_dt, log_A_real, A_imag, P, B, C))
      return cuda::s4_kernel_forward(log_dt, log_A_real, A_imag, P, B, C, T);
  check_s4_params(log_dt, log_A_real, A_imag, {&P, &B, &C}, "s4_kernel");
  SEQLAB_CHECK(T >= 1, "s4_kernel: expected a length T >= 1, got ", T);
  const int64_t D = log_dt.size(0), M = log_A_real.size(1);
  Tensor K = Tensor::empty({D, T}, C.dtype());
  const Dft dft(T);
  dispatch_float(C.dtype(), "s4_kernel", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *plar = log_A_real.data<T_>(), *pai = A_imag.data<T_>(), *pp = P.data<T_>(),
             *pb = B.data<T_>(), *pc = C.data<T_>();
    T_* pk = K.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      S4Chan ch(M);
      std::vector<cd> x(static_cast<size_t>(M)), xn(x.size()), Ct(x.size()), id(x.size()), idc(x.size());
      std::vector<double> acc(static_cast<size_t>(T));
      Bin bin;
      for (int64_t d = d0; d < d1; ++d) {
        ch.load(pdt, plar, pai, pp, pb, pc, d);
        x = ch.C;
        for (int64_t l = 0; l < T; ++l) {  // C dA^T
          ch.step(x.data(), xn.data());
          std::swap(x, xn);
        }
        for (int64_t m = 0; m < M; ++m) Ct[m] = ch.C[m] - x[m];
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t k = 0; k < dft.nf; ++k) {
          cauchy_bin(ch, Ct.data(), std::conj(dft.E[k]), id.data(), idc.data(), bin);
          cd Fw = bin.F * (dft.w[k] / static_cast<double>(T));
          for (int64_t l = 0, j = 0; l < T; ++l, j = (j + k) % T)
            acc[l] += Fw.real() * dft.E[j].real() - Fw.imag() * dft.E[j].imag();
        }
        for (int64_t l = 0; l < T; ++l) pk[d * T + l] = static_cast<T_>(acc[l]);
      }
    });
  });
  return K;
}

S4KernelGrads s4_kernel_backward(const Tensor& dK, const Tensor& log_dt, const Tensor& log_A_real,
                                 const Tensor& A_imag, const Tensor& P, const Tensor& B, const Tensor& C) {
  if constexpr (kCuda)
    if (on_cuda("s4_kernel_backward", dK, log_dt, log_A_real, A_imag, P, B, C))
      return cuda::s4_kernel_backward(dK, log_dt, log_A_real, A_imag, P, B, C);
  check_s4_params(log_dt, log_A_real, A_imag, {&P, &B, &C}, "s4_kernel_backward");
  const int64_t D = log_dt.size(0), M = log_A_real.size(1), T = dK.size(-1);
  SEQLAB_CHECK(dK.shape() == Shape({D, T}) && dK.dtype() == C.dtype(), "s4_kernel_backward: bad dK ",
               to_string(dK.shape()));
  const DType dty = C.dtype();
  S4KernelGrads g{Tensor::empty(log_dt.shape(), dty), Tensor::empty(log_A_real.shape(), dty),
                  Tensor::empty(A_imag.shape(), dty),  Tensor::empty(P.shape(), dty),
                  Tensor::empty(B.shape(), dty),       Tensor::empty(C.shape(), dty)};
  const Dft dft(T);
  dispatch_float(dty, "s4_kernel_backward", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *plar = log_A_real.data<T_>(), *pai = A_imag.data<T_>(), *pp = P.data<T_>(),
             *pb = B.data<T_>(), *pc = C.data<T_>(), *pg = dK.data<T_>();
    T_ *gdt = g.dlog_dt.data<T_>(), *glar = g.dlog_A_real.data<T_>(), *gai = g.dA_imag.data<T_>(),
       *gp = g.dP.data<T_>(), *gb = g.dB.data<T_>(), *gc = g.dC.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      S4Chan ch(M);
      const size_t sm = static_cast<size_t>(M);
      std::vector<cd> xs(static_cast<size_t>((T + 1) * M)), Ct(sm), id(sm), idc(sm), Ctb(sm), Bb(sm), Pb(sm),
          lamb(sm), eb(sm), inv1b(sm), xb(sm), xbn(sm), y(sm), q(sm);
      Bin bin;
      for (int64_t d = d0; d < d1; ++d) {
        ch.load(pdt, plar, pai, pp, pb, pc, d);
        std::copy(ch.C.begin(), ch.C.end(), xs.begin());
        for (int64_t l = 0; l < T; ++l) ch.step(xs.data() + l * M, xs.data() + (l + 1) * M);
        for (int64_t m = 0; m < M; ++m) Ct[m] = ch.C[m] - xs[T * M + m];
        for (auto* v : {&Ctb, &Bb, &Pb, &lamb, &eb, &inv1b}) std::fill(v->begin(), v->end(), cd(0, 0));
        double dtb = 0, hb = 0, cb = 0;
        const T_* G = pg + d * T;
        // frequency part: K_l = Re sum_k (w_k / T) F_k E[k l]  =>  Fbar_k = (w_k / T) sum_l G_l conj(E[k l])
        for (int64_t k = 0; k < dft.nf; ++k) {
          cd Fb(0, 0);
          for (int64_t l = 0, j = 0; l < T; ++l, j = (j + k) % T) Fb += static_cast<double>(G[l]) * std::conj(dft.E[j]);
          Fb *= dft.w[k] / static_cast<double>(T);
          cauchy_bin(ch, Ct.data(), std::conj(dft.E[k]), id.data(), idc.data(), bin);
          const cd bt = bin.beta;
          cd r00b = 2.0 * Fb;
          cd r01b = -2.0 * Fb * std::conj(bt * bin.r10 * bin.tau);
          cd r10b = -2.0 * Fb * std::conj(bt * bin.r01 * bin.tau);
          cd taub = -2.0 * Fb * std::conj(bt * bin.r01 * bin.r10);
          cd r11b = -taub * std::conj(bin.tau * bin.tau) * std::conj(bt);
          cd alphab(0, 0);
          for (int64_t m = 0; m < M; ++m) {
            const cd n00 = Ct[m] * ch.B[m], n01 = Ct[m] * ch.P[m], n10 = std::conj(ch.P[m]) * ch.B[m];
            const cd n11 = std::norm(ch.P[m]);
            const cd i1 = id[m], i2 = idc[m];
            cd denb(0, 0), dencb(0, 0);
            auto term = [&](cd rb, cd n) {  // rho += n i1 + conj(n) i2: returns nbar
              denb -= rb * std::conj(n * i1 * i1);
              dencb -= rb * n * std::conj(i2 * i2);
              return rb * std::conj(i1) + std::conj(rb) * i2;
            };
            cd n00b = term(r00b, n00), n01b = term(r01b, n01), n10b = term(r10b, n10), n11b = term(r11b, n11);
            Ctb[m] += n00b * std::conj(ch.B[m]) + n01b * std::conj(ch.P[m]);
            Bb[m] += n00b * std::conj(Ct[m]) + n10b * ch.P[m];
            Pb[m] += n01b * std::conj(Ct[m]) + std::conj(n10b) * ch.B[m] + 2.0 * n11b.real() * ch.P[m];
            lamb[m] += -denb * std::conj(bt) - std::conj(dencb) * bt;
            alphab += denb + dencb;
          }
          dtb += (alphab * std::conj(-bin.alpha / ch.dt)).real();  // alpha = 2/dt (1 - z)
        }
        // C~ = C - C dA^T; then the T transposed steps in reverse
        for (int64_t m = 0; m < M; ++m) xb[m] = -Ctb[m];
        for (int64_t l = T - 1; l >= 0; --l) {
          const cd* x = xs.data() + l * M;
          double s1 = 0, s2 = 0;
          for (int64_t m = 0; m < M; ++m) s1 += 2 * (ch.P[m] * x[m]).real();
          for (int64_t m = 0; m < M; ++m) {
            y[m] = x[m] + ch.h * (ch.lam[m] * x[m] - std::conj(ch.P[m]) * s1);
            q[m] = y[m] * ch.inv1[m];
            s2 += 2 * (ch.P[m] * q[m]).real();
          }
          double ve = 0;  // Re sum vbar conj(e)
          for (int64_t m = 0; m < M; ++m) ve += (xb[m] * std::conj(ch.e[m])).real();
          cb += -s2 * ve;
          double s2b = -ch.c * ve, s1b = 0;
          for (int64_t m = 0; m < M; ++m) {
            eb[m] += -(ch.c * s2) * xb[m];
            cd qb = xb[m] + 2 * s2b * std::conj(ch.P[m]);
            Pb[m] += 2 * s2b * std::conj(q[m]);
            cd yb = qb * std::conj(ch.inv1[m]);
            inv1b[m] += qb * std::conj(y[m]);
            xbn[m] = yb * std::conj(1.0 + ch.h * ch.lam[m]);
            lamb[m] += ch.h * yb * std::conj(x[m]);
            hb += (yb * std::conj(ch.lam[m] * x[m] - std::conj(ch.P[m]) * s1)).real();
            Pb[m] += -ch.h * s1 * std::conj(yb);
            s1b += -ch.h * (yb * ch.P[m]).real();
          }
          for (int64_t m = 0; m < M; ++m) {
            xbn[m] += 2 * s1b * std::conj(ch.P[m]);
            Pb[m] += 2 * s1b * std::conj(x[m]);
          }
          std::swap(xb, xbn);
        }
        // the step constants: e = conj(P) inv1, c = h / (1 + h kappa), kappa = 2 Re sum |P|^2 inv1, inv1 = 1/(1 - h Lambda)
        const double den = 1 + ch.h * ch.kappa;
        hb += cb / (den * den);
        const double kb = -cb * ch.h * ch.h / (den * den);
        for (int64_t m = 0; m < M; ++m) {
          Ctb[m] += xb[m];  // x_0 = C (Ctb now holds dL/dC)
          Pb[m] += std::conj(eb[m]) * ch.inv1[m] + 4 * kb * ch.inv1[m].real() * ch.P[m];
          inv1b[m] += eb[m] * ch.P[m] + 2 * kb * std::norm(ch.P[m]);
          cd d1b = -inv1b[m] * std::conj(ch.inv1[m] * ch.inv1[m]);
          lamb[m] += -ch.h * d1b;
          hb += -(d1b * std::conj(ch.lam[m])).real();
        }
        dtb += hb / 2;
        gdt[d] = static_cast<T_>(dtb * ch.dt);
        for (int64_t m = 0; m < M; ++m) {
          int64_t i = d * M + m;
          glar[i] = static_cast<T_>(lamb[m].real() * ch.lam[m].real());  // d Re(Lambda) / d log_A_real = Re(Lambda)
          gai[i] = static_cast<T_>(lamb[m].imag());
          gp[2 * i] = static_cast<T_>(Pb[m].real());
          gp[2 * i + 1] = static_cast<T_>(Pb[m].imag());
          gb[2 * i] = static_cast<T_>(Bb[m].real());
          gb[2 * i + 1] = static_cast<T_>(Bb[m].imag());
          gc[2 * i] = static_cast<T_>(Ctb[m].real());
          gc[2 * i + 1] = static_cast<T_>(Ctb[m].imag());
        }
      }
    });
  });
  return g;
}

Discretised s4_discretise(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& P,
                          const Tensor& B) {
  if constexpr (kCuda)
    if (on_cuda("s4_discretise", log_dt, log_A_real, A_imag, P, B))
      return cuda::s4_discretise(log_dt, log_A_real, A_imag, P, B);
  check_s4_params(log_dt, log_A_real, A_imag, {&P, &B}, "s4_discretise");
  const int64_t D = log_dt.size(0), M = log_A_real.size(1), N = 2 * M;
  Discretised r{Tensor::empty({D, N, N, 2}, log_dt.dtype()), Tensor::empty({D, N, 2}, log_dt.dtype())};
  dispatch_float(log_dt.dtype(), "s4_discretise", [&]<typename T_>() {
    const T_ *pdt = log_dt.data<T_>(), *plar = log_A_real.data<T_>(), *pai = A_imag.data<T_>(), *pp = P.data<T_>(),
             *pb = B.data<T_>();
    T_ *pa = r.dA.data<T_>(), *pdb = r.dB.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      const size_t nn = static_cast<size_t>(N * N);
      std::vector<cd> R1(nn), inv(nn), R2(nn), dA(nn), lam(static_cast<size_t>(N)), Pf(lam.size()), Bf(lam.size());
      for (int64_t d = d0; d < d1; ++d) {
        double dt = std::exp(static_cast<double>(pdt[d])), h = dt / 2;
        for (int64_t m = 0; m < M; ++m) {
          int64_t i = d * M + m;
          lam[m] = cd(-std::exp(static_cast<double>(plar[i])), static_cast<double>(pai[i]));
          Pf[m] = cd(pp[2 * i], pp[2 * i + 1]);
          Bf[m] = cd(pb[2 * i], pb[2 * i + 1]);
          lam[M + m] = std::conj(lam[m]);
          Pf[M + m] = std::conj(Pf[m]);
          Bf[M + m] = std::conj(Bf[m]);
        }
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < N; ++j) {
            cd a = (i == j ? lam[i] : cd(0, 0)) - Pf[i] * std::conj(Pf[j]);  // A = diag(Lambda) - P P*
            R1[i * N + j] = (i == j ? 1.0 : 0.0) - h * a;
            R2[i * N + j] = (i == j ? 1.0 : 0.0) + h * a;
          }
        invert(N, R1, inv);
        matmul(N, inv.data(), R2.data(), dA.data());
        for (int64_t i = 0; i < N * N; ++i) {
          pa[(d * N * N + i) * 2] = static_cast<T_>(dA[i].real());
          pa[(d * N * N + i) * 2 + 1] = static_cast<T_>(dA[i].imag());
        }
        for (int64_t i = 0; i < N; ++i) {
          cd v(0, 0);
          for (int64_t j = 0; j < N; ++j) v += inv[i * N + j] * Bf[j];
          v *= dt;
          pdb[(d * N + i) * 2] = static_cast<T_>(v.real());
          pdb[(d * N + i) * 2 + 1] = static_cast<T_>(v.imag());
        }
      }
    });
  });
  return r;
}

namespace {
// x <- dA x + dB u over all N complex states of one channel; returns Re(C_full x).
template <typename T_>
double s4_dense_step(int64_t N, const T_* pa, const T_* pb, const T_* pc, const cd* x, cd* xn, double u) {
  const int64_t M = N / 2;
  double y = 0;
  for (int64_t i = 0; i < N; ++i) {
    cd v = cd(pb[2 * i], pb[2 * i + 1]) * u;
    for (int64_t j = 0; j < N; ++j) v += cd(pa[(i * N + j) * 2], pa[(i * N + j) * 2 + 1]) * x[j];
    xn[i] = v;
    cd c = i < M ? cd(pc[2 * i], pc[2 * i + 1]) : cd(pc[2 * (i - M)], -pc[2 * (i - M) + 1]);
    y += (c * v).real();
  }
  return y;
}
}  // namespace

Tensor s4_kernel_dense(const Discretised& disc, const Tensor& C, int64_t T) {
  if constexpr (kCuda) if (on_cuda("s4_kernel_dense", disc.dA, disc.dB, C)) return cuda::s4_kernel_dense(disc, C, T);
  const int64_t D = C.size(0), M = C.size(1), N = 2 * M;
  Tensor K = Tensor::empty({D, T}, C.dtype());
  dispatch_float(C.dtype(), "s4_kernel_dense", [&]<typename T_>() {
    const T_ *pa = disc.dA.data<T_>(), *pb = disc.dB.data<T_>(), *pc = C.data<T_>();
    T_* pk = K.data<T_>();
    parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      std::vector<cd> x(static_cast<size_t>(N)), xn(x.size());
      for (int64_t d = d0; d < d1; ++d) {
        std::fill(x.begin(), x.end(), cd(0, 0));
        // x_0 = dB (one step from zero with u = 1), then u = 0
        for (int64_t l = 0; l < T; ++l) {
          double y = s4_dense_step(N, pa + d * N * N * 2, pb + d * N * 2, pc + d * M * 2, x.data(), xn.data(),
                                   l == 0 ? 1.0 : 0.0);
          pk[d * T + l] = static_cast<T_>(y);
          std::swap(x, xn);
        }
      }
    });
  });
  return K;
}

Tensor s4_step_forward(const Tensor& u_t, const Tensor& state, const Discretised& disc, const Tensor& C,
                       const Tensor& D_skip) {
  if constexpr (kCuda)
    if (on_cuda("s4_step", u_t, state, disc.dA, disc.dB, C, D_skip))
      return cuda::s4_step_forward(u_t, state, disc, C, D_skip);
  check_s4_step(u_t, state, C);
  const int64_t D = C.size(0), M = C.size(1), N = 2 * M, B = u_t.size(0);
  Tensor y = Tensor::empty(u_t.shape(), u_t.dtype());
  dispatch_float(u_t.dtype(), "s4_step", [&]<typename T_>() {
    const T_ *pa = disc.dA.data<T_>(), *pb = disc.dB.data<T_>(), *pc = C.data<T_>(), *pD = D_skip.data<T_>(),
             *pu = u_t.data<T_>();
    T_ *ps = state.data<T_>(), *py = y.data<T_>();
    parallel_for(0, B * D, 1, [&](int64_t i0, int64_t i1) {
      std::vector<cd> x(static_cast<size_t>(N)), xn(x.size());
      for (int64_t i = i0; i < i1; ++i) {
        int64_t b = i / D, d = i % D;
        T_* s = ps + i * N * 2;
        for (int64_t n = 0; n < N; ++n) x[n] = cd(s[2 * n], s[2 * n + 1]);
        double u = pu[b * D + d];
        double v = s4_dense_step(N, pa + d * N * N * 2, pb + d * N * 2, pc + d * M * 2, x.data(), xn.data(), u);
        for (int64_t n = 0; n < N; ++n) {
          s[2 * n] = static_cast<T_>(xn[n].real());
          s[2 * n + 1] = static_cast<T_>(xn[n].imag());
        }
        py[b * D + d] = static_cast<T_>(v + static_cast<double>(pD[d]) * u);
      }
    });
  });
  return y;
}

}  // namespace seqlab::kernels
