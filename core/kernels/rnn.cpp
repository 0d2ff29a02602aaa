// Fused tanh-RNN / LSTM / GRU layer kernels (PyTorch's equations and gate order):
//   rnn : h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
//   lstm: i, f, o = sigmoid(.), g = tanh(.) of W_ih x_t + b_ih + W_hh h_{t-1} + b_hh (blocks i, f, g, o);
//         c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)
//   gru : r, z = sigmoid(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z}),
//         n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn)), h_t = (1 - z) * n + z * h_{t-1}
// Batch rows never interact, so the batch is cut into one contiguous chunk per thread and each chunk
// runs its whole sequence (input GEMM, then per step a GEMM and a fused gate loop) without any
// synchronisation per time step. Chunks depend only on B and the thread count: results are
// bit-identical for a given thread count.
#include "core/kernels/rnn.h"
#include "core/kernels/vmath.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/kernels/matmul.h"
#include "core/parallel.h"

namespace seqlab::kernels {
namespace {



// Gate nonlinearities: branch-free in float so the loops over H vectorise (core/kernels/vmath.h).
template <typename T>
[[gnu::always_inline]] inline T sigmoid(T v) {
  return vmath::sigmoid_of(v);
}
template <typename T>
[[gnu::always_inline]] inline T tanh_(T v) {
  return vmath::tanh_of(v);
}

// Calls f(b0, b1) for one contiguous batch chunk per thread, in parallel.
template <typename F>
void for_batch_chunks(int64_t B, F&& f) {
  int64_t n = std::max<int64_t>(1, std::min<int64_t>(B, num_threads()));
  parallel_for(0, n, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) f(B * k / n, B * (k + 1) / n);
  });
}

struct Dims {
  int64_t B, T, I, H, G;
};

Dims check_shapes(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                  const Tensor& b_hh) {
  const char* name = rnn_cell_name(cell);
  SEQLAB_CHECK(x.dim() == 3, name, ": input of shape ", to_string(x.shape()), ", expected (B, T, I)");
  Dims d{x.size(0), x.size(1), x.size(2), 0, rnn_gate_count(cell)};
  SEQLAB_CHECK(d.B >= 1 && d.T >= 1 && d.I >= 1, name, ": input of shape ", to_string(x.shape()),
               " must have B, T, I >= 1");
  SEQLAB_CHECK(w_hh.dim() == 2 && w_hh.size(0) % d.G == 0 && w_hh.size(0) == d.G * w_hh.size(1) &&
                   w_hh.size(1) >= 1,
               name, ": weight_hh of shape ", to_string(w_hh.shape()), ", expected (", d.G, "*H, H)");
  d.H = w_hh.size(1);
  SEQLAB_CHECK(w_ih.dim() == 2 && w_ih.size(0) == d.G * d.H && w_ih.size(1) == d.I, name, ": weight_ih of shape ",
               to_string(w_ih.shape()), ", expected (", d.G * d.H, ", ", d.I, ")");
  for (const Tensor* b : {&b_ih, &b_hh})
    SEQLAB_CHECK(!b->defined() || (b->dim() == 1 && b->size(0) == d.G * d.H), name, ": bias of shape ",
                 to_string(b->shape()), ", expected (", d.G * d.H, ")");
  for (const Tensor* t : {&w_ih, &w_hh, &b_ih, &b_hh})
    SEQLAB_CHECK(!t->defined() || t->dtype() == x.dtype(), name, ": parameter dtype ", dtype_name(t->dtype()),
                 " differs from the input's ", dtype_name(x.dtype()));
  SEQLAB_CHECK(d.B * d.T < INT_MAX && d.G * d.H < INT_MAX && d.T * d.G * d.H < INT_MAX, name,
               ": sizes exceed what BLAS indexes with 32-bit ints");
  return d;
}

template <typename T>
void forward_impl(RnnCell cell, const Dims& d, const T* x, const T* w_ih, const T* w_hh, const T* b_ih,
                  const T* b_hh, const T* h0, const T* c0, T* y, T* gates, T* c, T* hg_all) {
  const int64_t T_ = d.T, I = d.I, H = d.H, GH = d.G * d.H;
  // Biases that are added to the input projection; for the gru, b_hn stays inside r * (.).
  std::vector<T> bx(static_cast<size_t>(GH), T(0)), bhn(static_cast<size_t>(H), T(0));
  for (int64_t j = 0; j < GH; ++j) {
    if (b_ih) bx[j] += b_ih[j];
    if (b_hh && (cell != RnnCell::gru || j < 2 * H)) bx[j] += b_hh[j];
  }
  if (cell == RnnCell::gru && b_hh)
    for (int64_t j = 0; j < H; ++j) bhn[j] = b_hh[2 * H + j];
  // The input projection lands where the step loop reads it: in y (tanh) or in the gate buffer.
  T* proj = cell == RnnCell::tanh ? y : gates;
  const int64_t ldp = cell == RnnCell::tanh ? H : 4 * H;
  const std::vector<T> zero_row(static_cast<size_t>(H), T(0));

  for_batch_chunks(d.B, [&](int64_t b0, int64_t b1) {
    const int64_t Bc = b1 - b0;
    // (Bc*T, GH) = x (Bc*T, I) @ W_ih^T: one GEMM for every step of the chunk, then the biases
    gemm_serial(false, true, Bc * T_, GH, I, T(1), x + b0 * T_ * I, I, w_ih, I, T(0), proj + b0 * T_ * ldp, ldp);
    for (int64_t r = b0 * T_; r < b1 * T_; ++r) {
      T* p = proj + r * ldp;
      for (int64_t j = 0; j < GH; ++j) p[j] += bx[j];
    }
    T* hg = hg_all + b0 * GH;  // (Bc, GH): W_hh h_{t-1} for this step
    for (int64_t t = 0; t < T_; ++t) {
      // h_{t-1} of batch row b is hp[b * ldh]; null when it is zero
      const T* hp = t > 0 ? y + (b0 * T_ + t - 1) * H : (h0 ? h0 + b0 * H : nullptr);
      const int64_t ldh = t > 0 ? T_ * H : H;
      if (hp) gemm_serial(false, true, Bc, GH, H, T(1), hp, ldh, w_hh, H, T(0), hg, GH);
      else std::fill(hg, hg + Bc * GH, T(0));
      for (int64_t b = 0; b < Bc; ++b) {
        const int64_t row = (b0 + b) * T_ + t;
        const T* hgb = hg + b * GH;
        T* yb = y + row * H;
        if (cell == RnnCell::tanh) {
          for (int64_t j = 0; j < H; ++j) yb[j] = tanh_(yb[j] + hgb[j]);
        } else if (cell == RnnCell::lstm) {
          T* g = gates + row * 4 * H;
          T* cb = c + row * H;
          // c_{t-1}; a zero row at t = 0 without c0 keeps the loop branch-free (it vectorises)
          const T* cp = t > 0 ? c + (row - 1) * H : (c0 ? c0 + (b0 + b) * H : zero_row.data());
          // Short single-purpose loops: each vectorises (one fused loop with four nonlinearities
          // did not: GCC gave up if-converting it). Same operations, same results.
          for (int64_t j = 0; j < 4 * H; ++j) g[j] += hgb[j];
          for (int64_t j = 0; j < 2 * H; ++j) g[j] = sigmoid(g[j]);  // i, f
          for (int64_t j = 2 * H; j < 3 * H; ++j) g[j] = tanh_(g[j]);  // g
          for (int64_t j = 3 * H; j < 4 * H; ++j) g[j] = sigmoid(g[j]);  // o
          for (int64_t j = 0; j < H; ++j) {
            const T ct = g[H + j] * cp[j] + g[j] * g[2 * H + j];  // f * 0 = +0 exactly at t = 0
            cb[j] = ct;
            yb[j] = tanh_(ct);
          }
          for (int64_t j = 0; j < H; ++j) yb[j] *= g[3 * H + j];  // h = o tanh(c)
        } else {  // gru
          T* g = gates + row * 4 * H;
          const T* hpb = hp ? hp + b * ldh : nullptr;
          for (int64_t j = 0; j < H; ++j) {
            T rg = sigmoid(g[j] + hgb[j]);
            T zg = sigmoid(g[H + j] + hgb[H + j]);
            T hn = hgb[2 * H + j] + bhn[j];
            T ng = tanh_(g[2 * H + j] + rg * hn);
            g[j] = rg;
            g[H + j] = zg;
            g[2 * H + j] = ng;
            g[3 * H + j] = hn;
            yb[j] = (T(1) - zg) * ng + (hpb ? zg * hpb[j] : T(0));
          }
        }
      }
    }
  });
}

template <typename T>
void backward_impl(RnnCell cell, const Dims& d, const T* dy, const T* w_ih, const T* w_hh, const T* y,
                   const T* gates, const T* c, T* dgx, T* dgh, T* dh_all, T* dc_all, T* dx) {
  const int64_t T_ = d.T, I = d.I, H = d.H, GH = d.G * d.H;
  for_batch_chunks(d.B, [&](int64_t b0, int64_t b1) {
    const int64_t Bc = b1 - b0;
    T* dh = dh_all + b0 * H;  // dL/dh_t through h_{t+1} (the recurrence), (Bc, H)
    T* dc = dc_all ? dc_all + b0 * H : nullptr;
    std::fill(dh, dh + Bc * H, T(0));
    if (dc) std::fill(dc, dc + Bc * H, T(0));
    for (int64_t t = T_ - 1; t >= 0; --t) {
      for (int64_t b = 0; b < Bc; ++b) {
        const int64_t row = (b0 + b) * T_ + t;
        const T* dyb = dy + row * H;
        const T* yb = y + row * H;
        T* dhb = dh + b * H;
        T* gx = dgx + row * GH;
        if (cell == RnnCell::tanh) {
          // h = tanh(a):  da = dh * (1 - h^2)
          for (int64_t j = 0; j < H; ++j) gx[j] = (dyb[j] + dhb[j]) * (T(1) - yb[j] * yb[j]);
        } else if (cell == RnnCell::lstm) {
          // h = o tanh(c), c = f c_prev + i g:  do = dh tanh(c), dc += dh o (1 - tanh^2 c),
          // di = dc g, df = dc c_prev, dg = dc i, dc_prev = dc f; then through each nonlinearity
          const T* g = gates + row * 4 * H;
          const T* cb = c + row * H;
          const T* cp = t > 0 ? c + (row - 1) * H : nullptr;
          T* dcb = dc + b * H;
          for (int64_t j = 0; j < H; ++j) {
            T ig = g[j], fg = g[H + j], gg = g[2 * H + j], og = g[3 * H + j];
            T dht = dyb[j] + dhb[j];
            T tc = tanh_(cb[j]);
            T dct = dcb[j] + dht * og * (T(1) - tc * tc);
            gx[j] = dct * gg * ig * (T(1) - ig);
            gx[H + j] = cp ? dct * cp[j] * fg * (T(1) - fg) : T(0);
            gx[2 * H + j] = dct * ig * (T(1) - gg * gg);
            gx[3 * H + j] = dht * tc * og * (T(1) - og);
            dcb[j] = dct * fg;
          }
        } else {
          // h = (1 - z) n + z h_prev, n = tanh(a_n + r hn):  dz = dh (h_prev - n), dn = dh (1 - z),
          // da_n = dn (1 - n^2), dr = da_n hn, d(hn) = da_n r; dh_prev = dh z + (W_hh part)
          const T* g = gates + row * 4 * H;
          const T* hp = t > 0 ? y + (row - 1) * H : nullptr;
          T* gh = dgh + row * GH;
          for (int64_t j = 0; j < H; ++j) {
            T rg = g[j], zg = g[H + j], ng = g[2 * H + j], hn = g[3 * H + j];
            T dht = dyb[j] + dhb[j];
            T hpv = hp ? hp[j] : T(0);
            T dan = dht * (T(1) - zg) * (T(1) - ng * ng);
            T dar = dan * hn * rg * (T(1) - rg);
            T daz = dht * (hpv - ng) * zg * (T(1) - zg);
            gx[j] = gh[j] = dar;
            gx[H + j] = gh[H + j] = daz;
            gx[2 * H + j] = dan;
            gh[2 * H + j] = dan * rg;
            dhb[j] = dht * zg;
          }
        }
      }
      // dh_{t-1} (+)= da_h (Bc, GH) @ W_hh (GH, H); nothing flows into the zero initial state
      if (t > 0)
        gemm_serial(false, false, Bc, H, GH, T(1), dgh + (b0 * T_ + t) * GH, T_ * GH, w_hh, H,
                cell == RnnCell::gru ? T(1) : T(0), dh, H);
    }
    // dx (Bc*T, I) = da_x (Bc*T, GH) @ W_ih (GH, I)
    if (dx) gemm_serial(false, false, Bc * T_, I, GH, T(1), dgx + b0 * T_ * GH, GH, w_ih, I, T(0), dx + b0 * T_ * I, I);
  });
}

}  // namespace

int64_t rnn_gate_count(RnnCell cell) {
  switch (cell) {
    case RnnCell::tanh: return 1;
    case RnnCell::lstm: return 4;
    case RnnCell::gru: return 3;
  }
  return 0;
}

const char* rnn_cell_name(RnnCell cell) {
  switch (cell) {
    case RnnCell::tanh: return "rnn_tanh";
    case RnnCell::lstm: return "lstm";
    case RnnCell::gru: return "gru";
  }
  return "?";
}

RnnForward rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                       const Tensor& b_hh, const Tensor& h0, const Tensor& c0) {
  Dims d = check_shapes(cell, x, w_ih, w_hh, b_ih, b_hh);
  const char* name = rnn_cell_name(cell);
  for (const Tensor* s : {&h0, &c0})
    SEQLAB_CHECK(!s->defined() || (s->shape() == Shape{d.B, d.H} && s->dtype() == x.dtype()), name,
                 ": initial state of shape ", to_string(s->shape()), ", expected (", d.B, ", ", d.H, ") ",
                 dtype_name(x.dtype()));
  SEQLAB_CHECK(!c0.defined() || cell == RnnCell::lstm, name, ": only the lstm has a cell state");
  RnnForward f;
  DType dt = x.dtype();
  f.y = Tensor::empty({d.B, d.T, d.H}, dt);
  if (cell != RnnCell::tanh) f.gates = Tensor::empty({d.B, d.T, 4 * d.H}, dt);
  if (cell == RnnCell::lstm) f.c = Tensor::empty({d.B, d.T, d.H}, dt);
  Tensor hg = Tensor::empty({d.B, d.G * d.H}, dt);  // per-step workspace
  dispatch_float(dt, name, [&]<typename T>() {
    auto ptr = [](const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
    forward_impl<T>(cell, d, x.data<T>(), w_ih.data<T>(), w_hh.data<T>(), ptr(b_ih), ptr(b_hh), ptr(h0), ptr(c0),
                    f.y.data<T>(), ptr(f.gates), ptr(f.c), hg.data<T>());
    f.h_last = Tensor::empty({d.B, d.H}, dt);
    if (cell == RnnCell::lstm) f.c_last = Tensor::empty({d.B, d.H}, dt);
    for (int64_t b = 0; b < d.B; ++b) {
      const int64_t off = (b * d.T + d.T - 1) * d.H;
      std::memcpy(f.h_last.data<T>() + b * d.H, f.y.data<T>() + off, sizeof(T) * d.H);
      if (f.c_last.defined()) std::memcpy(f.c_last.data<T>() + b * d.H, f.c.data<T>() + off, sizeof(T) * d.H);
    }
  });
  return f;
}

RnnGrads rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                      const RnnForward& f, bool need_dx, bool need_dw_ih, bool need_dw_hh, bool need_db_ih,
                      bool need_db_hh) {
  Dims d = check_shapes(cell, x, w_ih, w_hh, Tensor(), Tensor());
  const char* name = rnn_cell_name(cell);
  SEQLAB_CHECK(dy.shape() == f.y.shape() && dy.dtype() == x.dtype(), name, ": gradient of shape ",
               to_string(dy.shape()), ", expected ", to_string(f.y.shape()));
  const int64_t BT = d.B * d.T, GH = d.G * d.H;
  DType dt = x.dtype();
  RnnGrads g;
  // Gate pre-activation gradients of every step: the input side (da_x) and, for the gru whose n gate
  // sees r * (W_hn h + b_hn), a separate recurrent side (da_h); the tanh rnn and lstm share one.
  Tensor dgx = Tensor::empty({BT, GH}, dt);
  Tensor dgh = cell == RnnCell::gru ? Tensor::empty({BT, GH}, dt) : dgx;
  Tensor dh = Tensor::empty({d.B, d.H}, dt);
  Tensor dc = cell == RnnCell::lstm ? Tensor::empty({d.B, d.H}, dt) : Tensor();
  if (need_dx) g.dx = Tensor::empty(x.shape(), dt);
  dispatch_float(dt, name, [&]<typename T>() {
    auto ptr = [](const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
    backward_impl<T>(cell, d, dy.data<T>(), w_ih.data<T>(), w_hh.data<T>(), f.y.data<T>(),
                     ptr(f.gates), ptr(f.c), dgx.data<T>(), dgh.data<T>(), dh.data<T>(), ptr(dc), ptr(g.dx));
    // dW_ih (GH, I) = da_x^T @ x over all B*T rows
    if (need_dw_ih) {
      g.dw_ih = Tensor::empty(w_ih.shape(), dt);
      gemm<T>(true, false, GH, d.I, BT, dgx.data<T>(), x.data<T>(), T(0), g.dw_ih.data<T>());
    }
    // dW_hh (GH, H) = da_h^T @ h_prev, h_prev the outputs shifted one step later (zero at t = 0)
    if (need_dw_hh) {
      Tensor hprev = Tensor::empty({BT, d.H}, dt);
      T* hp = hprev.data<T>();
      const T* py = f.y.data<T>();
      parallel_for(0, d.B, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t b = lo; b < hi; ++b) {
          std::fill(hp + b * d.T * d.H, hp + (b * d.T + 1) * d.H, T(0));
          std::memcpy(hp + (b * d.T + 1) * d.H, py + b * d.T * d.H, sizeof(T) * (d.T - 1) * d.H);
        }
      });
      g.dw_hh = Tensor::empty(w_hh.shape(), dt);
      gemm<T>(true, false, GH, d.H, BT, dgh.data<T>(), hp, T(0), g.dw_hh.data<T>());
    }
  });
  if (need_db_ih) g.db_ih = column_sum(dgx, GH);
  if (need_db_hh) g.db_hh = cell == RnnCell::gru || !need_db_ih ? column_sum(dgh, GH) : g.db_ih.clone();
  return g;
}

}  // namespace seqlab::kernels
