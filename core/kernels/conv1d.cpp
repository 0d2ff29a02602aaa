// Causal depthwise conv1d kernels (forward, hand-written backward, one-token step). See conv1d.h.
#include "core/kernels/conv1d.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/kernels/vmath.h"
#include "core/parallel.h"
#include "core/kernels/isa_target.h"  // last: the ISA of everything below (compiled once per path)

namespace seqlab::kernels::SEQLAB_ISA_NS {
namespace {

// y = y sigmoid(y) over n values (float: explicit vectors of this path, see for_each_vec).
inline void silu_inplace(double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] * vmath::sigmoid_of(y[i]);
}
inline void silu_inplace(float* y, int64_t n) {
  for_each_vec(0, n, [&](int64_t i, int cnt) {
    const VecF v = load_lanes(y + i, cnt);
    store_lanes(y + i, v * vmath::sigmoid_of(v), cnt);
  });
}
// g = dy silu'(p) = dy s (1 + p (1 - s)), s = sigmoid(p), in place over p.
inline void silu_grad_inplace(double* g, const double* dy, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const double p = g[c], sg = vmath::sigmoid_of(p);
    g[c] = dy[c] * (sg * (1.0 + p * (1.0 - sg)));
  }
}
inline void silu_grad_inplace(float* g, const float* dy, int64_t n) {
  for_each_vec(0, n, [&](int64_t i, int cnt) {
    const VecF p = load_lanes(g + i, cnt), sg = vmath::sigmoid_of(p);
    store_lanes(g + i, load_lanes(dy + i, cnt) * (sg * (1.0f + p * (1.0f - sg))), cnt);
  });
}

constexpr int64_t kRowGrain = 64;  // (b, t) rows per forward task
constexpr int64_t kTimeTile = 128;  // time steps per backward task (one batch row each)

// w (C, K) transposed to (K, C), so the loops below run over contiguous channels.
template <typename T>
std::vector<T> transpose_taps(const T* w, int64_t C, int64_t K) {
  std::vector<T> wt(static_cast<size_t>(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) wt[static_cast<size_t>(k * C + c)] = w[c * K + k];
  return wt;
}

// pre[c] = bias[c] + sum_k wt[k][c] x[t - (K-1) + k][c] for row r = (b, t) of x (B, T, C).
template <typename T>
inline void conv_row(const T* __restrict px, const T* __restrict wt, const T* __restrict pb, int64_t r, int64_t t,
                     int64_t C, int64_t K, T* __restrict pre) {
  for (int64_t c = 0; c < C; ++c) pre[c] = pb ? pb[c] : T(0);
  for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
    const T* xr = px + (r - (K - 1) + k) * C;  // same sequence: t - (K-1) + k >= 0
    const T* wk = wt + k * C;
    for (int64_t c = 0; c < C; ++c) pre[c] += wk[c] * xr[c];
  }
}

}  // namespace

// The SiLU goes through vmath's branch-free sigmoid so the loops over channels vectorise (libm's
// expf is a scalar call).
Tensor causal_conv1d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool silu) {
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), K = w.size(1);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "causal_conv1d", [&]<typename T>() {
    const T* px = x.data<T>();
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;
    T* py = y.data<T>();
    const std::vector<T> wt = transpose_taps(w.data<T>(), C, K);
    parallel_for(0, B * T_, kRowGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        T* yr = py + r * C;
        conv_row(px, wt.data(), pb, r, r % T_, C, K, yr);
        if (silu) silu_inplace(yr, C);
      }
    });
  });
  return y;
}

// Tasks are (batch row, time tile), a split fixed by the shapes; each writes its own dw, dbias
// partial, summed in task order afterwards, so results do not depend on the thread count. A tile
// computes g = dy * act'(pre) for its rows plus the K-1 rows after it (dx_s reads g up to s+K-1).
std::array<Tensor, 3> causal_conv1d_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                             const Tensor& bias, bool silu) {
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), K = w.size(1);
  const int64_t tiles = (T_ + kTimeTile - 1) / kTimeTile, tasks = B * tiles;
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  Tensor dw = Tensor::zeros(w.shape(), w.dtype());
  Tensor db = bias.defined() ? Tensor::zeros(bias.shape(), bias.dtype()) : Tensor();
  Tensor dw_part = Tensor::empty({tasks, K, C}, x.dtype());
  Tensor db_part = Tensor::empty({tasks, C}, x.dtype());
  dispatch_float(x.dtype(), "causal_conv1d_backward", [&]<typename T>() {
    const T *px = x.data<T>(), *pdy = dy.data<T>();
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;
    T *pdx = dx.data<T>(), *pdwp = dw_part.data<T>(), *pdbp = db_part.data<T>();
    const std::vector<T> wt = transpose_taps(w.data<T>(), C, K);
    parallel_for(0, tasks, 1, [&](int64_t lo, int64_t hi) {
      std::vector<T> gbuf(static_cast<size_t>((kTimeTile + K - 1) * C));
      for (int64_t task = lo; task < hi; ++task) {
        const int64_t b = task / tiles, s0 = task % tiles * kTimeTile, s1 = std::min(T_, s0 + kTimeTile);
        const int64_t g1 = std::min(T_, s1 + K - 1);  // g rows [s0, g1)
        T* dwt = pdwp + task * K * C;
        T* dbl = pdbp + task * C;
        std::fill(dwt, dwt + K * C, T(0));
        std::fill(dbl, dbl + C, T(0));
        for (int64_t t = s0; t < g1; ++t) {
          const int64_t r = b * T_ + t;
          T* g = gbuf.data() + (t - s0) * C;
          const T* dyr = pdy + r * C;
          if (silu) {
            conv_row(px, wt.data(), pb, r, t, C, K, g);
            silu_grad_inplace(g, dyr, C);  // silu'(p) = s (1 + p (1 - s))
          } else {
            std::copy(dyr, dyr + C, g);
          }
          if (t >= s1) continue;  // halo row: only for dx
          for (int64_t c = 0; c < C; ++c) dbl[c] += g[c];
          for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
            const T* xr = px + (r - (K - 1) + k) * C;  // y[t] reads x[t - (K-1) + k] with weight w[k]
            T* dwk = dwt + k * C;
            for (int64_t c = 0; c < C; ++c) dwk[c] += g[c] * xr[c];
          }
        }
        for (int64_t s = s0; s < s1; ++s) {
          T* dxr = pdx + (b * T_ + s) * C;
          std::fill(dxr, dxr + C, T(0));
          for (int64_t k = K - 1; k >= 0; --k) {  // dx_s = sum_k w_k g_{s+K-1-k}
            const int64_t t = s + K - 1 - k;
            if (t >= T_) continue;
            const T* g = gbuf.data() + (t - s0) * C;
            const T* wk = wt.data() + k * C;
            for (int64_t c = 0; c < C; ++c) dxr[c] += wk[c] * g[c];
          }
        }
      }
    });
    T* pdw = dw.data<T>();
    T* pdb = db.defined() ? db.data<T>() : nullptr;
    for (int64_t task = 0; task < tasks; ++task)
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t k = 0; k < K; ++k) pdw[c * K + k] += pdwp[(task * K + k) * C + c];
        if (pdb) pdb[c] += pdbp[task * C + c];
      }
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
        py[b * C + c] = acc;
      }
    if (silu) silu_inplace(py, B * C);  // a separate pass so that the sigmoid vectorises
  });
  return y;
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
