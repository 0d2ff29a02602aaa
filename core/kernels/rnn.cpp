// Fused tanh-RNN / LSTM / GRU layer kernels (PyTorch's equations and gate order):
//   rnn : h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
//   lstm: i, f, o = sigmoid(.), g = tanh(.) of W_ih x_t + b_ih + W_hh h_{t-1} + b_hh (blocks i, f, g, o);
//         c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)
//   gru : r, z = sigmoid(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z}),
//         n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn)), h_t = (1 - z) * n + z * h_{t-1}
// Batch rows never interact, so the batch is cut into contiguous chunks of kBatchChunk rows and
// each chunk runs its whole sequence (input GEMM, then per step a GEMM and a fused gate loop)
// without any synchronisation per time step. The chunks depend only on B, never on the thread
// count: a BLAS kernel may sum a row differently depending on where the row falls in its tiles
// (OpenBLAS's AVX2 edge kernels do), so each GEMM must see the same rows at any thread count.
#include "core/kernels/rnn.h"
#include "core/kernels/vmath.h"


#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <type_traits>

#include "core/kernels/matmul.h"
#include "core/kernels/rnn_check.h"
#include "core/parallel.h"
#include "core/kernels/isa_target.h"  // last: the ISA of everything below (compiled once per path)

namespace seqlab::kernels::SEQLAB_ISA_NS {
namespace {

// Gate nonlinearities: vmath's branch-free forms, for scalars and for vectors of this path.
template <typename V>
[[gnu::always_inline]] inline V sigmoid(V v) {
  return vmath::sigmoid_of(v);
}
template <typename V>
[[gnu::always_inline]] inline V tanh_(V v) {
  return vmath::tanh_of(v);
}

// body(ld, st) for the elements [0, n) of a gate loop: ld(p) reads p's elements, st(p, v) writes
// them. float: one call per vector of this path (explicit vectors: GCC leaves these loops scalar
// on AVX2, unable to if-convert the nonlinearities); double: one call per element. The maths in
// body is written once, for both (the operations are lane-wise the same).
template <typename T, typename Body>
[[gnu::always_inline]] inline void lanes(int64_t n, Body&& body) {
  if constexpr (std::is_same_v<T, float>) {
    for_each_vec(0, n, [&](int64_t j, int cnt) {
      body([&](const float* p) { return load_lanes(p + j, cnt); },
           [&](float* p, VecF v) { store_lanes(p + j, v, cnt); });
    });
  } else {
    for (int64_t j = 0; j < n; ++j) body([&](const T* p) { return p[j]; }, [&](T* p, T v) { p[j] = v; });
  }
}
// p[j] = f(p[j]) for j < n.
template <typename T, typename F>
[[gnu::always_inline]] inline void apply(T* p, int64_t n, F&& f) {
  lanes<T>(n, [&](auto ld, auto st) { st(p, f(ld(p))); });
}

// Rows per batch chunk: large enough for an efficient per-step GEMM, small enough that a batch of
// 32 gives 4 chunks (work for 1, 2 or 4 threads).
constexpr int64_t kBatchChunk = 8;

// Calls f(b0, b1) for each batch chunk [b0, b1) of kBatchChunk rows (the last may be shorter), in
// parallel. The chunks are fixed by B alone.
template <typename F>
void for_batch_chunks(int64_t B, F&& f) {
  const int64_t n = (B + kBatchChunk - 1) / kBatchChunk;
  parallel_for(0, n, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) f(k * kBatchChunk, std::min(B, (k + 1) * kBatchChunk));
  });
}

using Dims = RnnDims;

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
          lanes<T>(H, [&](auto ld, auto st) { st(yb, tanh_(ld(yb) + ld(hgb))); });
        } else if (cell == RnnCell::lstm) {
          T* g = gates + row * 4 * H;
          T* cb = c + row * H;
          // c_{t-1}; a zero row at t = 0 without c0 keeps the loop branch-free (it vectorises)
          const T* cp = t > 0 ? c + (row - 1) * H : (c0 ? c0 + (b0 + b) * H : zero_row.data());
          // Short single-purpose loops: each vectorises (one fused loop with four nonlinearities
          // did not: GCC gave up if-converting it). Same operations, same results.
          for (int64_t j = 0; j < 4 * H; ++j) g[j] += hgb[j];
          apply(g, 2 * H, [](auto v) { return sigmoid(v); });          // i, f
          apply(g + 2 * H, H, [](auto v) { return tanh_(v); });        // g
          apply(g + 3 * H, H, [](auto v) { return sigmoid(v); });      // o
          lanes<T>(H, [&](auto ld, auto st) {
            const auto ct = ld(g + H) * ld(cp) + ld(g) * ld(g + 2 * H);  // f * 0 = +0 exactly at t = 0
            st(cb, ct);
            st(yb, ld(g + 3 * H) * tanh_(ct));  // h = o tanh(c)
          });
        } else {  // gru
          T* g = gates + row * 4 * H;
          const T* hpb = hp ? hp + b * ldh : zero_row.data();  // h_{-1} = 0 without h0
          lanes<T>(H, [&](auto ld, auto st) {
            const auto rg = sigmoid(ld(g) + ld(hgb));
            const auto zg = sigmoid(ld(g + H) + ld(hgb + H));
            const auto hn = ld(hgb + 2 * H) + ld(bhn.data());
            const auto ng = tanh_(ld(g + 2 * H) + rg * hn);
            st(g, rg);
            st(g + H, zg);
            st(g + 2 * H, ng);
            st(g + 3 * H, hn);
            st(yb, (T(1) - zg) * ng + zg * ld(hpb));
          });
        }
      }
    }
  });
}

// Backpropagation through time in time chunks [t0, t1), last chunk first, so that the gate
// pre-activation gradients are held for one chunk (B * Tc rows) instead of all B * T rows (at T = 2880
// the full buffer was the largest transient of an LSTM step). Per chunk: each batch chunk runs its
// steps backwards (carrying dh, dc) and its dx rows; then, over all B * Tc rows at once and in chunk
// order, dW_ih += da_x^T x, dW_hh += da_h^T h_prev and the bias sums. The order of every sum depends
// only on B and T, never on the thread count.
template <typename T>
void backward_impl(RnnCell cell, const Dims& d, const T* dy, const T* x, const T* w_ih, const T* w_hh, const T* y,
                   const T* gates, const T* c, T* dgx, T* dgh, T* xs, T* hs, T* dh_all, T* dc_all, T* dx, T* dw_ih,
                   T* dw_hh, double* db_x, double* db_h, int64_t Tc) {
  const int64_t T_ = d.T, I = d.I, H = d.H, GH = d.G * d.H;
  const std::vector<T> zero_row(static_cast<size_t>(H), T(0));  // the state before t = 0
  std::fill(dh_all, dh_all + d.B * H, T(0));  // dL/dh_t through h_{t+1} (the recurrence), (B, H)
  if (dc_all) std::fill(dc_all, dc_all + d.B * H, T(0));
  const int64_t n_tchunks = (T_ + Tc - 1) / Tc;
  for (int64_t tc = n_tchunks - 1; tc >= 0; --tc) {
    const int64_t t0 = tc * Tc, t1 = std::min(T_, t0 + Tc), L = t1 - t0;
    for_batch_chunks(d.B, [&](int64_t b0, int64_t b1) {
      const int64_t Bc = b1 - b0;
      T* dh = dh_all + b0 * H;
      T* dc = dc_all ? dc_all + b0 * H : nullptr;
      for (int64_t t = t1 - 1; t >= t0; --t) {
        for (int64_t b = 0; b < Bc; ++b) {
          const int64_t row = (b0 + b) * T_ + t;       // row of the (B, T, .) tensors
          const int64_t crow = (b0 + b) * L + t - t0;  // row of the chunk buffers (B, L, GH)
          const T* dyb = dy + row * H;
          const T* yb = y + row * H;
          T* dhb = dh + b * H;
          T* gx = dgx + crow * GH;
          if (cell == RnnCell::tanh) {
            // h = tanh(a):  da = dh * (1 - h^2)
            for (int64_t j = 0; j < H; ++j) gx[j] = (dyb[j] + dhb[j]) * (T(1) - yb[j] * yb[j]);
          } else if (cell == RnnCell::lstm) {
            // h = o tanh(c), c = f c_prev + i g:  do = dh tanh(c), dc += dh o (1 - tanh^2 c),
            // di = dc g, df = dc c_prev, dg = dc i, dc_prev = dc f; then through each nonlinearity
            const T* g = gates + row * 4 * H;
            const T* cb = c + row * H;
            const T* cp = t > 0 ? c + (row - 1) * H : zero_row.data();  // c_{-1} = 0: df = 0
            T* dcb = dc + b * H;
            lanes<T>(H, [&](auto ld, auto st) {
              const auto ig = ld(g), fg = ld(g + H), gg = ld(g + 2 * H), og = ld(g + 3 * H);
              const auto dht = ld(dyb) + ld(dhb);
              const auto tc_ = tanh_(ld(cb));
              const auto dct = ld(dcb) + dht * og * (T(1) - tc_ * tc_);
              st(gx, dct * gg * ig * (T(1) - ig));
              st(gx + H, dct * ld(cp) * fg * (T(1) - fg));
              st(gx + 2 * H, dct * ig * (T(1) - gg * gg));
              st(gx + 3 * H, dht * tc_ * og * (T(1) - og));
              st(dcb, dct * fg);
            });
          } else {
            // h = (1 - z) n + z h_prev, n = tanh(a_n + r hn):  dz = dh (h_prev - n), dn = dh (1 - z),
            // da_n = dn (1 - n^2), dr = da_n hn, d(hn) = da_n r; dh_prev = dh z + (W_hh part)
            const T* g = gates + row * 4 * H;
            const T* hp = t > 0 ? y + (row - 1) * H : zero_row.data();  // h_{-1} = 0
            T* gh = dgh + crow * GH;
            lanes<T>(H, [&](auto ld, auto st) {
              const auto rg = ld(g), zg = ld(g + H), ng = ld(g + 2 * H), hn = ld(g + 3 * H);
              const auto dht = ld(dyb) + ld(dhb);
              const auto dan = dht * (T(1) - zg) * (T(1) - ng * ng);
              const auto dar = dan * hn * rg * (T(1) - rg);
              const auto daz = dht * (ld(hp) - ng) * zg * (T(1) - zg);
              st(gx, dar);
              st(gh, dar);
              st(gx + H, daz);
              st(gh + H, daz);
              st(gx + 2 * H, dan);
              st(gh + 2 * H, dan * rg);
              st(dhb, dht * zg);
            });
          }
        }
        // dh_{t-1} (+)= da_h (Bc, GH) @ W_hh (GH, H); nothing flows into the zero initial state
        if (t > 0)
          gemm_serial(false, false, Bc, H, GH, T(1), dgh + (b0 * L + t - t0) * GH, L * GH, w_hh, H,
                      cell == RnnCell::gru ? T(1) : T(0), dh, H);
      }
      for (int64_t b = b0; b < b1; ++b) {
        // dx rows (b, t0..t1) = da_x (L, GH) @ W_ih (GH, I)
        if (dx) gemm_serial(false, false, L, I, GH, T(1), dgx + b * L * GH, GH, w_ih, I, T(0), dx + (b * T_ + t0) * I, I);
        // the chunk's x rows and h_{t-1} rows, contiguous for the weight GEMMs
        if (dw_ih) std::memcpy(xs + b * L * I, x + (b * T_ + t0) * I, sizeof(T) * L * I);
        if (dw_hh) {
          T* hb = hs + b * L * H;
          if (t0 == 0) std::fill(hb, hb + H, T(0));
          const int64_t first = t0 == 0 ? 1 : 0;
          std::memcpy(hb + first * H, y + (b * T_ + t0 + first - 1) * H, sizeof(T) * (L - first) * H);
        }
      }
    });
    // over the chunk's B * L rows: dW_ih += da_x^T x, dW_hh += da_h^T h_prev (chunks in order)
    const int64_t R = d.B * L;
    const T beta = tc == n_tchunks - 1 ? T(0) : T(1);
    if (dw_ih) gemm<T>(true, false, GH, I, R, dgx, xs, beta, dw_ih);
    if (dw_hh) gemm<T>(true, false, GH, H, R, dgh, hs, beta, dw_hh);
    // bias sums: parallel over column blocks, rows in order inside (order independent of threads)
    auto column_sums = [&](const T* src, double* acc) {
      parallel_for(0, GH, 64, [&](int64_t j0, int64_t j1) {
        for (int64_t r = 0; r < R; ++r)
          for (int64_t j = j0; j < j1; ++j) acc[j] += static_cast<double>(src[r * GH + j]);
      });
    };
    if (db_x) column_sums(dgx, db_x);
    if (db_h) column_sums(dgh, db_h);
  }
}

}  // namespace

RnnForward rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                       const Tensor& b_hh, const Tensor& h0, const Tensor& c0) {
  Dims d = check_rnn_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0);
  const char* name = rnn_cell_name(cell);
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
                      bool need_db_hh, int64_t time_chunk) {
  Dims d = check_rnn_backward(cell, dy, x, w_ih, w_hh, f);
  const char* name = rnn_cell_name(cell);
  const int64_t GH = d.G * d.H;
  DType dt = x.dtype();
  RnnGrads g;
  // Time chunk: about kChunkRows rows of gate gradients at once (Tc = T when B * T is small).
  constexpr int64_t kChunkRows = 8192;
  const int64_t Tc = std::min(d.T, time_chunk > 0 ? time_chunk : std::max<int64_t>(1, (kChunkRows + d.B - 1) / d.B));
  const int64_t R = d.B * Tc;
  // Gate pre-activation gradients of one time chunk: the input side (da_x) and, for the gru whose n
  // gate sees r * (W_hn h + b_hn), a separate recurrent side (da_h); the tanh rnn and lstm share one.
  Tensor dgx = Tensor::empty({R, GH}, dt);
  Tensor dgh = cell == RnnCell::gru ? Tensor::empty({R, GH}, dt) : dgx;
  Tensor xs = need_dw_ih ? Tensor::empty({R, d.I}, dt) : Tensor();
  Tensor hs = need_dw_hh ? Tensor::empty({R, d.H}, dt) : Tensor();
  Tensor dh = Tensor::empty({d.B, d.H}, dt);
  Tensor dc = cell == RnnCell::lstm ? Tensor::empty({d.B, d.H}, dt) : Tensor();
  if (need_dx) g.dx = Tensor::empty(x.shape(), dt);
  if (need_dw_ih) g.dw_ih = Tensor::empty(w_ih.shape(), dt);
  if (need_dw_hh) g.dw_hh = Tensor::empty(w_hh.shape(), dt);
  const bool shared = cell != RnnCell::gru;  // db_hh = db_ih when da_h = da_x
  std::vector<double> db_x(need_db_ih || (shared && need_db_hh) ? GH : 0, 0.0);
  std::vector<double> db_h(!shared && need_db_hh ? GH : 0, 0.0);
  dispatch_float(dt, name, [&]<typename T>() {
    auto ptr = [](const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; };
    backward_impl<T>(cell, d, dy.data<T>(), x.data<T>(), w_ih.data<T>(), w_hh.data<T>(), f.y.data<T>(),
                     ptr(f.gates), ptr(f.c), dgx.data<T>(), dgh.data<T>(), ptr(xs), ptr(hs), dh.data<T>(), ptr(dc),
                     ptr(g.dx), ptr(g.dw_ih), ptr(g.dw_hh), db_x.empty() ? nullptr : db_x.data(),
                     db_h.empty() ? nullptr : db_h.data(), Tc);
    auto to_tensor = [&](const std::vector<double>& v) {
      Tensor t = Tensor::empty({GH}, dt);
      for (int64_t j = 0; j < GH; ++j) t.data<T>()[j] = static_cast<T>(v[j]);
      return t;
    };
    if (need_db_ih) g.db_ih = to_tensor(db_x);
    if (need_db_hh) g.db_hh = to_tensor(shared ? db_x : db_h);
  });
  return g;
}

}  // namespace seqlab::kernels::SEQLAB_ISA_NS
