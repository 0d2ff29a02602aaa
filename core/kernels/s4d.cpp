// S4D loops: the Vandermonde kernel (forward and backward, std::complex in double whatever the
// tensor dtype: the powers z^l are built by repeated products, which in float would drift by
// ~T * 1e-7), the output path (skip + GELU, GLU) fused, and one step. The long convolution that
// S4D, S4 and LSSL share is in core/kernels/long_conv.cpp.
// Complex products are written out (cmul) because GCC's std::complex operator* calls __muldc3
// (NaN/inf recovery) unless -fcx-limited-range, several times slower in these inner loops.
#include "core/kernels/s4d.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <type_traits>
#include <vector>

#include "core/cuda/ssm.h"
#include "core/device.h"
#include "core/kernels/activation_vec.h"
#include "core/kernels/s4d_check.h"
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
using VD = vmath::Vec<double, kModeBlock>;  // the shared vocabulary (vmath.h); not an ISA-path file, so std::vector<VD> is fine
inline double hsum(VD a) { return (a[0] + a[1]) + (a[2] + a[3]); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Argument checks (s4d_check.h), shared with the CUDA twins

S4DKernelDims check_s4d_kernel_params(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag,
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

S4DKernelDims check_s4d_step(const Tensor& u_t, const Tensor& state, const Tensor& log_dt, const Tensor& log_A_real,
                             const Tensor& A_imag, const Tensor& C) {
  const S4DKernelDims kd = check_s4d_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_step");
  const int64_t D = kd.D, M = kd.M;
  SEQLAB_CHECK(C.dim() == 3, "s4d_step: only the unidirectional kernel (C of shape (D, M, 2)) has a step mode");
  SEQLAB_CHECK(u_t.dim() == 2 && u_t.size(1) == D, "s4d_step: x_t must be (B, ", D, "), got ",
               to_string(u_t.shape()));
  int64_t B = u_t.size(0);
  SEQLAB_CHECK(state.shape() == Shape({B, D, M, 2}) && state.dtype() == u_t.dtype(),
               "s4d_step: state must be (B, D, M, 2) = ", to_string(Shape{B, D, M, 2}), ", got ",
               to_string(state.shape()));
  return kd;
}

// ---------------------------------------------------------------------------------------------
// Vandermonde kernel

Tensor s4d_kernel_forward(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                          int64_t T) {
  if constexpr (kCuda)
    if (on_cuda("s4d_kernel", log_dt, log_A_real, A_imag, C))
      return cuda::s4d_kernel_forward(log_dt, log_A_real, A_imag, C, T);
  const S4DKernelDims kd = check_s4d_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_kernel");
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
  if constexpr (kCuda)
    if (on_cuda("s4d_kernel_backward", dK, log_dt, log_A_real, A_imag, C))
      return cuda::s4d_kernel_backward(dK, log_dt, log_A_real, A_imag, C);
  const S4DKernelDims kd = check_s4d_kernel_params(log_dt, log_A_real, A_imag, C, "s4d_kernel_backward");
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
// Output path: skip + GELU and GLU, one pass each (they were 4 + 4 separate elementwise ops with two
// slice copies, about a fifth of an S4D step once the convolution was fast)

SkipGelu s4d_skip_gelu_forward(const Tensor& y, const Tensor& u, const Tensor& D_skip) {
  if constexpr (kCuda) if (on_cuda("s4d_skip_gelu", y, u, D_skip)) return cuda::s4d_skip_gelu_forward(y, u, D_skip);
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
  if constexpr (kCuda)
    if (on_cuda("s4d_skip_backward", du, dpre, u, D_skip))
      return cuda::s4d_skip_backward(du, dpre, u, D_skip, need_u, need_D);
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
  if constexpr (kCuda) if (on_cuda("glu", z)) return cuda::glu_forward(z);
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
  if constexpr (kCuda) if (on_cuda("glu_backward", dout, z)) return cuda::glu_backward(dout, z);
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
  if constexpr (kCuda)
    if (on_cuda("s4d_step", u_t, state, log_dt, log_A_real, A_imag, C, D_skip))
      return cuda::s4d_step_forward(u_t, state, log_dt, log_A_real, A_imag, C, D_skip);
  const S4DKernelDims kd = check_s4d_step(u_t, state, log_dt, log_A_real, A_imag, C);
  const int64_t D = kd.D, M = kd.M, B = u_t.size(0);
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
