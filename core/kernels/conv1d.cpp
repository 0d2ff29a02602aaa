// Causal depthwise conv1d kernels (forward, hand-written backward, one-token step). See conv1d.h.
#include "core/kernels/conv1d.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"

namespace seqlab::kernels {
namespace {

template <typename T> inline T sigmoid(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}

constexpr int64_t kRowGrain = 64;     // (b, t) rows per forward task
constexpr int64_t kChannelGrain = 16;  // channels per backward task

}  // namespace

Tensor causal_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu) {
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), K = w.size(1);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "causal_conv1d", [&]<typename T>() {
    const T *px = x.data<T>(), *pw = w.data<T>();
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;
    T* py = y.data<T>();
    parallel_for(0, B * T_, kRowGrain, [&](int64_t lo, int64_t hi) {
      std::vector<T> wt(static_cast<size_t>(K * C));  // w transposed to (K, C): contiguous over c
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < K; ++k) wt[k * C + c] = pw[c * K + k];
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t t = r % T_;
        T* yr = py + r * C;
        for (int64_t c = 0; c < C; ++c) yr[c] = pb ? pb[c] : T(0);
        for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
          const T* xr = px + (r - (K - 1) + k) * C;  // same sequence: t - (K-1) + k >= 0
          const T* wk = wt.data() + k * C;
          for (int64_t c = 0; c < C; ++c) yr[c] += wk[c] * xr[c];
        }
        if (silu)
          for (int64_t c = 0; c < C; ++c) yr[c] = yr[c] * sigmoid(yr[c]);
      }
    });
  });
  return y;
}

std::array<Tensor, 3> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                             const Tensor& bias, bool silu) {
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), K = w.size(1);
  Tensor dx = Tensor::zeros(x.shape(), x.dtype());
  Tensor dw = Tensor::empty(w.shape(), w.dtype());
  Tensor db = bias.defined() ? Tensor::empty(bias.shape(), bias.dtype()) : Tensor();
  dispatch_float(x.dtype(), "causal_conv1d_backward", [&]<typename T>() {
    const T *px = x.data<T>(), *pw = w.data<T>(), *pdy = dy.data<T>();
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;
    T *pdx = dx.data<T>(), *pdw = dw.data<T>();
    T* pdb = db.defined() ? db.data<T>() : nullptr;
    parallel_for(0, C, kChannelGrain, [&](int64_t c0, int64_t c1) {
      const int64_t nc = c1 - c0;
      std::vector<T> wt(static_cast<size_t>(K * nc)), dwt(static_cast<size_t>(K * nc), T(0));
      std::vector<T> g(static_cast<size_t>(nc)), dbl(static_cast<size_t>(nc), T(0));
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t k = 0; k < K; ++k) wt[k * nc + c - c0] = pw[c * K + k];
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T_; ++t) {
          const int64_t r = b * T_ + t;
          const int64_t k0 = std::max<int64_t>(0, K - 1 - t);
          for (int64_t i = 0; i < nc; ++i) g[i] = pdy[r * C + c0 + i];
          if (silu) {
            for (int64_t i = 0; i < nc; ++i) {
              T pre = pb ? pb[c0 + i] : T(0);
              for (int64_t k = k0; k < K; ++k) pre += wt[k * nc + i] * px[(r - (K - 1) + k) * C + c0 + i];
              T s = sigmoid(pre);
              g[i] *= s * (T(1) + pre * (T(1) - s));  // silu'(p) = s (1 + p (1 - s))
            }
          }
          for (int64_t i = 0; i < nc; ++i) dbl[i] += g[i];
          for (int64_t k = k0; k < K; ++k) {
            // y[t] reads x[t - (K-1) + k] with weight w[k]
            const int64_t s = (r - (K - 1) + k) * C + c0;
            for (int64_t i = 0; i < nc; ++i) {
              dwt[k * nc + i] += g[i] * px[s + i];
              pdx[s + i] += wt[k * nc + i] * g[i];
            }
          }
        }
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t k = 0; k < K; ++k) pdw[c * K + k] = dwt[k * nc + c - c0];
        if (pdb) pdb[c] = dbl[c - c0];
      }
    });
  });
  return {dx, dw, db};
}

Tensor causal_conv1d_step(Tensor& buf, const Tensor& x_t, const Tensor& w, const Tensor& bias, bool silu) {
  const int64_t B = x_t.size(0), C = x_t.size(1), K = w.size(1);
  Tensor y = Tensor::empty({B, C}, x_t.dtype());
  dispatch_float(x_t.dtype(), "causal_conv1d_step", [&]<typename T>() {
    const T *px = x_t.data<T>(), *pw = w.data<T>();
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;
    T *pbuf = buf.data<T>(), *py = y.data<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) {
        T* q = pbuf + (b * C + c) * (K - 1);
        const T xv = px[b * C + c];
        T acc = pb ? pb[c] : T(0);
        for (int64_t k = 0; k < K - 1; ++k) acc += pw[c * K + k] * q[k];
        acc += pw[c * K + K - 1] * xv;
        for (int64_t k = 0; k + 1 < K - 1; ++k) q[k] = q[k + 1];
        if (K > 1) q[K - 2] = xv;
        py[b * C + c] = silu ? acc * sigmoid(acc) : acc;
      }
  });
  return y;
}

}  // namespace seqlab::kernels
