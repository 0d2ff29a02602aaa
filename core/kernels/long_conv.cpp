// The long causal convolution of S4D, S4 and LSSL (y = K * u per channel along time, K as long as
// the sequence): FFTs for float (core/kernels/fft.h LaneFFT, channels in groups of 2 kLanes per
// transform) and direct O(T^2) loops for double and as the reference, each with its backward.
#include "core/kernels/long_conv.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/cuda/long_conv.h"
#include "core/device.h"
#include "core/kernels/fft.h"
#include "core/kernels/long_conv_check.h"
#include "core/parallel.h"

namespace seqlab::kernels {

// ---------------------------------------------------------------------------------------------
// Checks (long_conv_check.h), shared with the CUDA twins

int64_t check_causal_conv(const Tensor& u, const Tensor& K, const char* op) {
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

void check_causal_conv_fft(const Tensor& u) {
  SEQLAB_CHECK(u.dtype() == DType::f32, "causal_conv_fft: the FFT path is float32 only, got ",
               dtype_name(u.dtype()));
}

// ---------------------------------------------------------------------------------------------
// Direct convolution (double path and reference)

Tensor causal_conv_direct_forward(const Tensor& u, const Tensor& K) {
  if constexpr (kCuda) if (on_cuda("causal_conv", u, K)) return cuda::causal_conv_direct_forward(u, K);
  int64_t S = check_causal_conv(u, K, "causal_conv");
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
  if constexpr (kCuda)
    if (on_cuda("causal_conv_backward", dy, u, K)) return cuda::causal_conv_direct_backward(dy, u, K, need_u, need_K);
  int64_t S = check_causal_conv(u, K, "causal_conv_backward");
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
  if constexpr (kCuda) if (on_cuda("causal_conv_fft", u, K)) return cuda::causal_conv_fft_forward(u, K);
  int64_t S = check_causal_conv(u, K, "causal_conv_fft");
  check_causal_conv_fft(u);
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
  if constexpr (kCuda)
    if (on_cuda("causal_conv_fft_backward", dy, u, K)) return cuda::causal_conv_fft_backward(dy, u, K, need_u, need_K);
  int64_t S = check_causal_conv(u, K, "causal_conv_fft_backward");
  check_causal_conv_fft(u);
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
  if constexpr (kCuda) if (on_cuda("causal_conv", u, K)) return cuda::causal_conv_forward(u, K);
  return u.dtype() == DType::f32 ? causal_conv_fft_forward(u, K) : causal_conv_direct_forward(u, K);
}

ConvGrads causal_conv_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u, bool need_K) {
  if constexpr (kCuda)
    if (on_cuda("causal_conv_backward", dy, u, K)) return cuda::causal_conv_backward(dy, u, K, need_u, need_K);
  return u.dtype() == DType::f32 ? causal_conv_fft_backward(dy, u, K, need_u, need_K)
                                 : causal_conv_direct_backward(dy, u, K, need_u, need_K);
}

}  // namespace seqlab::kernels
