// Tanh-RNN / LSTM / GRU layer kernels on the device (core/cuda/rnn.h), the twins of core/kernels/rnn.cpp:
// the same equations, gate order, saved tensors (y, gates, c) and chunked backpropagation through time.
//   forward : proj = x @ W_ih^T + biases (one cuBLAS GEMM over B*T rows and a bias kernel), then per step
//             hg = h_{t-1} @ W_hh^T (one GEMM, skipped for a zero state) and one fused gate kernel
//             writing h_t (into y), c_t and the gates the backward reads.
//   backward: time chunks as the CPU (last first); per step one fused gate-gradient kernel and one GEMM
//             dh_{t-1} (+)= da_h @ W_hh; per chunk dx = da_x @ W_ih (a strided batched GEMM),
//             dW_ih += da_x^T x, dW_hh += da_h^T h_prev (one GEMM each over the chunk's B*L rows) and
//             the bias sums in double by fixed-order column sums (no atomics: a run is bit-identical to
//             itself).
#include <algorithm>
#include <climits>
#include <type_traits>

#include "core/cuda/common.cuh"
#include "core/cuda/rnn.h"

namespace seqlab::cuda {
namespace {

// ---------------------------------------------------------------------------------------------------
// cuBLAS on row-major matrices: C (M, N) = alpha op(A) op(B) + beta C, computed as the column-major
// C^T = op(B)^T op(A)^T.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc, const char* what) {
  const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if constexpr (std::is_same_v<T, float>)
    check_cublas(cublasSgemm(cublas(), ob, oa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha,
                             B, static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc)),
                 what);
  else
    check_cublas(cublasDgemm(cublas(), ob, oa, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha,
                             B, static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc)),
                 what);
}

// The same for `batch` independent products, A, B, C advancing by sa, sb, sc elements.
template <typename T>
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, int64_t sa,
                  const T* B, int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc, int64_t sc, int64_t batch,
                  const char* what) {
  const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if constexpr (std::is_same_v<T, float>)
    check_cublas(cublasSgemmStridedBatched(cublas(), ob, oa, static_cast<int>(N), static_cast<int>(M),
                                           static_cast<int>(K), &alpha, B, static_cast<int>(ldb), sb, A,
                                           static_cast<int>(lda), sa, &beta, C, static_cast<int>(ldc), sc,
                                           static_cast<int>(batch)),
                 what);
  else
    check_cublas(cublasDgemmStridedBatched(cublas(), ob, oa, static_cast<int>(N), static_cast<int>(M),
                                           static_cast<int>(K), &alpha, B, static_cast<int>(ldb), sb, A,
                                           static_cast<int>(lda), sa, &beta, C, static_cast<int>(ldc), sc,
                                           static_cast<int>(batch)),
                 what);
}

// ---------------------------------------------------------------------------------------------------
// Nonlinearities: the CPU's forms (vmath::sigmoid_of: exp of a non-positive number, both branches
// accurate in relative terms), with CUDA's accurate expf / tanhf.
__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }
__device__ __forceinline__ float dtanh(float v) { return tanhf(v); }
__device__ __forceinline__ double dtanh(double v) { return tanh(v); }
template <typename T>
__device__ __forceinline__ T dsigmoid(T v) {
  const T e = dexp(-fabs(v));
  const T r = T(1) / (T(1) + e);
  return v >= T(0) ? r : e * r;
}

constexpr int kThreads = 256;

// proj[r * ldp + j] += b_ih[j] + b_hh[j] for r < rows, j < GH (the gru's b_hn stays inside r * (.)).
template <typename T>
__global__ void add_bias_kernel(T* proj, int64_t rows, int64_t GH, int64_t ldp, const T* b_ih, const T* b_hh,
                                int64_t hh_cols) {
  SEQLAB_CUDA_LOOP(i, rows * GH) {
    const int64_t r = i / GH, j = i % GH;
    T s = T(0);
    if (b_ih) s += b_ih[j];
    if (b_hh && j < hh_cols) s += b_hh[j];
    proj[r * ldp + j] += s;
  }
}

// One forward step t for every (b, j), b < B, j < H. hg (B, GH) = W_hh h_{t-1} (null: zero state).
template <typename T>
__global__ void forward_step_kernel(RnnCell cell, int64_t B, int64_t T_, int64_t H, int64_t t, const T* hg,
                                    const T* h0, const T* c0, const T* b_hh, T* y, T* gates, T* c) {
  const int64_t GH = (cell == RnnCell::tanh ? 1 : cell == RnnCell::lstm ? 4 : 3) * H;
  SEQLAB_CUDA_LOOP(i, B * H) {
    const int64_t b = i / H, j = i % H;
    const int64_t row = b * T_ + t;
    const T* hgb = hg ? hg + b * GH : nullptr;
    auto rec = [&](int64_t k) { return hgb ? hgb[k * H + j] : T(0); };
    T* yb = y + row * H;
    if (cell == RnnCell::tanh) {
      yb[j] = dtanh(yb[j] + rec(0));
    } else if (cell == RnnCell::lstm) {
      T* g = gates + row * 4 * H;
      const T ig = dsigmoid(g[j] + rec(0));
      const T fg = dsigmoid(g[H + j] + rec(1));
      const T gg = dtanh(g[2 * H + j] + rec(2));
      const T og = dsigmoid(g[3 * H + j] + rec(3));
      g[j] = ig;
      g[H + j] = fg;
      g[2 * H + j] = gg;
      g[3 * H + j] = og;
      const T cp = t > 0 ? c[(row - 1) * H + j] : (c0 ? c0[b * H + j] : T(0));
      const T ct = fg * cp + ig * gg;
      c[row * H + j] = ct;
      yb[j] = og * dtanh(ct);
    } else {  // gru
      T* g = gates + row * 4 * H;
      const T rg = dsigmoid(g[j] + rec(0));
      const T zg = dsigmoid(g[H + j] + rec(1));
      const T hn = rec(2) + (b_hh ? b_hh[2 * H + j] : T(0));
      const T ng = dtanh(g[2 * H + j] + rg * hn);
      g[j] = rg;
      g[H + j] = zg;
      g[2 * H + j] = ng;
      g[3 * H + j] = hn;
      const T hp = t > 0 ? y[(row - 1) * H + j] : (h0 ? h0[b * H + j] : T(0));
      yb[j] = (T(1) - zg) * ng + zg * hp;
    }
  }
}

// dst[b * H + j] = src[(b * T + T - 1) * H + j]: the last step of a (B, T, H) tensor.
template <typename T>
__global__ void last_step_kernel(const T* src, T* dst, int64_t B, int64_t T_, int64_t H) {
  SEQLAB_CUDA_LOOP(i, B * H) {
    const int64_t b = i / H, j = i % H;
    dst[i] = src[(b * T_ + T_ - 1) * H + j];
  }
}

// One backward step t (inside the time chunk [t0, t0 + L)) for every (b, j). Reads dh (the gradient of
// h_t through h_{t+1}) and, for the lstm, dc; writes the gate pre-activation gradients of row
// crow = b * L + t - t0 of dgx (and dgh for the gru), dc_{t-1}, and for the gru dh's z part.
template <typename T>
__global__ void backward_step_kernel(RnnCell cell, int64_t B, int64_t T_, int64_t H, int64_t t, int64_t t0,
                                     int64_t L, const T* dy, const T* y, const T* gates, const T* c, T* dh, T* dc,
                                     T* dgx, T* dgh) {
  const int64_t GH = (cell == RnnCell::tanh ? 1 : cell == RnnCell::lstm ? 4 : 3) * H;
  SEQLAB_CUDA_LOOP(i, B * H) {
    const int64_t b = i / H, j = i % H;
    const int64_t row = b * T_ + t, crow = b * L + t - t0;
    const T dht = dy[row * H + j] + dh[b * H + j];
    T* gx = dgx + crow * GH;
    if (cell == RnnCell::tanh) {
      const T yv = y[row * H + j];
      gx[j] = dht * (T(1) - yv * yv);
    } else if (cell == RnnCell::lstm) {
      const T* g = gates + row * 4 * H;
      const T ig = g[j], fg = g[H + j], gg = g[2 * H + j], og = g[3 * H + j];
      const T tc = dtanh(c[row * H + j]);
      const T cp = t > 0 ? c[(row - 1) * H + j] : T(0);  // c_{-1} = 0: df = 0
      const T dct = dc[b * H + j] + dht * og * (T(1) - tc * tc);
      gx[j] = dct * gg * ig * (T(1) - ig);
      gx[H + j] = dct * cp * fg * (T(1) - fg);
      gx[2 * H + j] = dct * ig * (T(1) - gg * gg);
      gx[3 * H + j] = dht * tc * og * (T(1) - og);
      dc[b * H + j] = dct * fg;
    } else {  // gru
      const T* g = gates + row * 4 * H;
      const T rg = g[j], zg = g[H + j], ng = g[2 * H + j], hn = g[3 * H + j];
      const T hp = t > 0 ? y[(row - 1) * H + j] : T(0);  // h_{-1} = 0
      const T dan = dht * (T(1) - zg) * (T(1) - ng * ng);
      const T dar = dan * hn * rg * (T(1) - rg);
      const T daz = dht * (hp - ng) * zg * (T(1) - zg);
      T* gh = dgh + crow * GH;
      gx[j] = dar;
      gh[j] = dar;
      gx[H + j] = daz;
      gh[H + j] = daz;
      gx[2 * H + j] = dan;
      gh[2 * H + j] = dan * rg;
      dh[b * H + j] = dht * zg;
    }
  }
}

// dst (B, L, n) = rows t0 + shift .. t0 + shift + L - 1 of src (B, T, n); rows before 0 are zero
// (shift -1: h_{t-1} with h_{-1} = 0).
template <typename T>
__global__ void gather_rows_kernel(const T* src, T* dst, int64_t B, int64_t T_, int64_t L, int64_t n, int64_t t0,
                                   int64_t shift) {
  SEQLAB_CUDA_LOOP(i, B * L * n) {
    const int64_t k = i % n, bl = i / n;
    const int64_t l = bl % L, b = bl / L;
    const int64_t t = t0 + l + shift;
    dst[i] = t >= 0 ? src[(b * T_ + t) * n + k] : T(0);
  }
}

// acc[j] += sum over r < R of src[r * n + j], in double, in a fixed order: thread (x, y) of a 32 x 16
// block sums the rows r = y, y + 16, ... of column j = 32 * blockIdx.x + x in turn, then thread y = 0
// adds the 16 partial sums in order.
constexpr int kSumX = 32, kSumY = 16;
template <typename T>
__global__ void column_sum_kernel(const T* src, double* acc, int64_t R, int64_t n) {
  __shared__ double part[kSumY][kSumX + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kSumX + threadIdx.x;
  double s = 0.0;
  if (j < n)
    for (int64_t r = threadIdx.y; r < R; r += kSumY) s += static_cast<double>(src[r * n + j]);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < n) {
    double tot = 0.0;
    for (int k = 0; k < kSumY; ++k) tot += part[k][threadIdx.x];
    acc[j] += tot;
  }
}

template <typename T>
__global__ void from_double_kernel(const double* src, T* dst, int64_t n) {
  SEQLAB_CUDA_LOOP(i, n) dst[i] = static_cast<T>(src[i]);
}

// ---------------------------------------------------------------------------------------------------
struct Dims {
  int64_t B, T, I, H, G;
};

// core/kernels/rnn.cpp's check_shapes, the same checks and messages.
Dims check_shapes(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                  const Tensor& b_hh) {
  const char* name = kernels::rnn_cell_name(cell);
  SEQLAB_CHECK(x.dim() == 3, name, ": input of shape ", to_string(x.shape()), ", expected (B, T, I)");
  Dims d{x.size(0), x.size(1), x.size(2), 0, kernels::rnn_gate_count(cell)};
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
const T* opt_ptr(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

template <typename T>
void forward_impl(RnnCell cell, const Dims& d, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                  const Tensor& b_ih, const Tensor& b_hh, const Tensor& h0, const Tensor& c0, RnnForward& f) {
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, GH = d.G * d.H;
  const DType dt = x.dtype();
  T* y = ptr<T>(f.y);
  T* gates = f.gates.defined() ? ptr<T>(f.gates) : nullptr;
  T* c = f.c.defined() ? ptr<T>(f.c) : nullptr;
  const T* wih = ptr<T>(w_ih);
  const T* whh = ptr<T>(w_hh);
  const T* bih = opt_ptr<T>(b_ih);
  const T* bhh = opt_ptr<T>(b_hh);
  const T* h0p = opt_ptr<T>(h0);
  const T* c0p = opt_ptr<T>(c0);
  // The input projection lands where the step kernel reads it: in y (tanh) or in the gate buffer.
  T* proj = cell == RnnCell::tanh ? y : gates;
  const int64_t ldp = cell == RnnCell::tanh ? H : 4 * H;
  gemm<T>(false, true, B * T_, GH, I, T(1), ptr<T>(x), I, wih, I, T(0), proj, ldp, "rnn_forward: input GEMM");
  add_bias_kernel<T><<<blocks_for(B * T_ * GH, kThreads), kThreads, 0, stream()>>>(
      proj, B * T_, GH, ldp, bih, bhh, cell == RnnCell::gru ? 2 * H : GH);
  check_launch("rnn_forward: add_bias_kernel");
  Tensor hg_t = empty({B, GH}, dt);  // W_hh h_{t-1} of one step
  T* hg = ptr<T>(hg_t);
  for (int64_t t = 0; t < T_; ++t) {
    // h_{t-1} of batch row b is hp[b * ldh]; null when it is zero
    const T* hp = t > 0 ? y + (t - 1) * H : h0p;
    const int64_t ldh = t > 0 ? T_ * H : H;
    if (hp) gemm<T>(false, true, B, GH, H, T(1), hp, ldh, whh, H, T(0), hg, GH, "rnn_forward: recurrent GEMM");
    forward_step_kernel<T><<<blocks_for(B * H, kThreads), kThreads, 0, stream()>>>(
        cell, B, T_, H, t, hp ? hg : nullptr, h0p, c0p, bhh, y, gates, c);
    check_launch("rnn_forward: forward_step_kernel");
  }
  f.h_last = empty({B, H}, dt);
  last_step_kernel<T><<<blocks_for(B * H, kThreads), kThreads, 0, stream()>>>(y, ptr<T>(f.h_last), B, T_, H);
  check_launch("rnn_forward: last_step_kernel");
  if (cell == RnnCell::lstm) {
    f.c_last = empty({B, H}, dt);
    last_step_kernel<T><<<blocks_for(B * H, kThreads), kThreads, 0, stream()>>>(c, ptr<T>(f.c_last), B, T_, H);
    check_launch("rnn_forward: last_step_kernel");
  }
}

template <typename T>
void backward_impl(RnnCell cell, const Dims& d, const Tensor& dy_t, const Tensor& x_t, const Tensor& w_ih_t,
                   const Tensor& w_hh_t, const RnnForward& f, const Tensor& dgx_t, const Tensor& dgh_t,
                   const Tensor& xs_t, const Tensor& hs_t, const Tensor& dh_t, const Tensor& dc_t, RnnGrads& g,
                   const Tensor& db_x_t, const Tensor& db_h_t, int64_t Tc) {
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, GH = d.G * d.H;
  const T* dy = ptr<T>(dy_t);
  const T* x = ptr<T>(x_t);
  const T* w_ih = ptr<T>(w_ih_t);
  const T* w_hh = ptr<T>(w_hh_t);
  const T* y = ptr<T>(f.y);
  const T* gates = cell == RnnCell::tanh ? nullptr : ptr<T>(f.gates);
  const T* c = cell == RnnCell::lstm ? ptr<T>(f.c) : nullptr;
  T* dgx = ptr<T>(dgx_t);
  T* dgh = ptr<T>(dgh_t);
  T* dh = ptr<T>(dh_t);
  T* dc = dc_t.defined() ? ptr<T>(dc_t) : nullptr;
  T* dx = g.dx.defined() ? ptr<T>(g.dx) : nullptr;
  T* dw_ih = g.dw_ih.defined() ? ptr<T>(g.dw_ih) : nullptr;
  T* dw_hh = g.dw_hh.defined() ? ptr<T>(g.dw_hh) : nullptr;
  double* db_x = db_x_t.defined() ? ptr<double>(db_x_t) : nullptr;
  double* db_h = db_h_t.defined() ? ptr<double>(db_h_t) : nullptr;
  const int64_t n_tchunks = (T_ + Tc - 1) / Tc;
  for (int64_t tc = n_tchunks - 1; tc >= 0; --tc) {
    const int64_t t0 = tc * Tc, t1 = std::min(T_, t0 + Tc), L = t1 - t0;
    for (int64_t t = t1 - 1; t >= t0; --t) {
      backward_step_kernel<T><<<blocks_for(B * H, kThreads), kThreads, 0, stream()>>>(
          cell, B, T_, H, t, t0, L, dy, y, gates, c, dh, dc, dgx, dgh);
      check_launch("rnn_backward: backward_step_kernel");
      // dh_{t-1} (+)= da_h (B, GH; row stride L*GH) @ W_hh (GH, H); nothing flows into the zero state
      if (t > 0)
        gemm<T>(false, false, B, H, GH, T(1), dgh + (t - t0) * GH, L * GH, w_hh, H,
                cell == RnnCell::gru ? T(1) : T(0), dh, H, "rnn_backward: recurrent GEMM");
    }
    // dx rows (b, t0..t1) = da_x (L, GH) @ W_ih (GH, I) for every b
    if (dx) {
      if (L == T_)
        gemm<T>(false, false, B * T_, I, GH, T(1), dgx, GH, w_ih, I, T(0), dx, I, "rnn_backward: dx GEMM");
      else
        gemm_batched<T>(false, false, L, I, GH, T(1), dgx, GH, L * GH, w_ih, I, 0, T(0), dx + t0 * I, I, T_ * I, B,
                        "rnn_backward: dx GEMM");
    }
    // over the chunk's B * L rows: dW_ih += da_x^T x, dW_hh += da_h^T h_prev (chunks in order)
    const int64_t R = B * L;
    const T beta = tc == n_tchunks - 1 ? T(0) : T(1);
    if (dw_ih) {
      const T* xs = x;  // the whole sequence is one chunk: x's rows as they are
      if (L != T_) {
        T* xg = ptr<T>(xs_t);
        gather_rows_kernel<T><<<blocks_for(R * I, kThreads), kThreads, 0, stream()>>>(x, xg, B, T_, L, I, t0, 0);
        check_launch("rnn_backward: gather_rows_kernel");
        xs = xg;
      }
      gemm<T>(true, false, GH, I, R, T(1), dgx, GH, xs, I, beta, dw_ih, I, "rnn_backward: dW_ih GEMM");
    }
    if (dw_hh) {
      T* hs = ptr<T>(hs_t);
      gather_rows_kernel<T><<<blocks_for(R * H, kThreads), kThreads, 0, stream()>>>(y, hs, B, T_, L, H, t0, -1);
      check_launch("rnn_backward: gather_rows_kernel");
      gemm<T>(true, false, GH, H, R, T(1), dgh, GH, hs, H, beta, dw_hh, H, "rnn_backward: dW_hh GEMM");
    }
    const dim3 sum_block(kSumX, kSumY);
    const unsigned sum_grid = static_cast<unsigned>((GH + kSumX - 1) / kSumX);
    if (db_x) {
      column_sum_kernel<T><<<sum_grid, sum_block, 0, stream()>>>(dgx, db_x, R, GH);
      check_launch("rnn_backward: column_sum_kernel");
    }
    if (db_h) {
      column_sum_kernel<T><<<sum_grid, sum_block, 0, stream()>>>(dgh, db_h, R, GH);
      check_launch("rnn_backward: column_sum_kernel");
    }
  }
}

template <typename T>
Tensor to_dtype(const Tensor& acc, DType dt) {
  Tensor out = empty(acc.shape(), dt);
  from_double_kernel<T><<<blocks_for(acc.numel(), kThreads), kThreads, 0, stream()>>>(ptr<double>(acc), ptr<T>(out),
                                                                                      acc.numel());
  check_launch("rnn_backward: from_double_kernel");
  return out;
}

}  // namespace

RnnForward rnn_forward(RnnCell cell, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                       const Tensor& b_hh, const Tensor& h0, const Tensor& c0) {
  Dims d = check_shapes(cell, x, w_ih, w_hh, b_ih, b_hh);
  const char* name = kernels::rnn_cell_name(cell);
  for (const Tensor* s : {&h0, &c0})
    SEQLAB_CHECK(!s->defined() || (s->shape() == Shape{d.B, d.H} && s->dtype() == x.dtype()), name,
                 ": initial state of shape ", to_string(s->shape()), ", expected (", d.B, ", ", d.H, ") ",
                 dtype_name(x.dtype()));
  SEQLAB_CHECK(!c0.defined() || cell == RnnCell::lstm, name, ": only the lstm has a cell state");
  RnnForward f;
  const DType dt = x.dtype();
  dispatch_float(dt, name, [&]<typename T>() {
    f.y = empty({d.B, d.T, d.H}, dt);
    if (cell != RnnCell::tanh) f.gates = empty({d.B, d.T, 4 * d.H}, dt);
    if (cell == RnnCell::lstm) f.c = empty({d.B, d.T, d.H}, dt);
    forward_impl<T>(cell, d, x, w_ih, w_hh, b_ih, b_hh, h0, c0, f);
  });
  return f;
}

RnnGrads rnn_backward(RnnCell cell, const Tensor& dy, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                      const RnnForward& f, bool need_dx, bool need_dw_ih, bool need_dw_hh, bool need_db_ih,
                      bool need_db_hh, int64_t time_chunk) {
  Dims d = check_shapes(cell, x, w_ih, w_hh, Tensor(), Tensor());
  const char* name = kernels::rnn_cell_name(cell);
  SEQLAB_CHECK(dy.shape() == f.y.shape() && dy.dtype() == x.dtype(), name, ": gradient of shape ",
               to_string(dy.shape()), ", expected ", to_string(f.y.shape()));
  const int64_t GH = d.G * d.H;
  const DType dt = x.dtype();
  RnnGrads g;
  // Time chunk as the CPU: about kChunkRows rows of gate gradients at once (Tc = T when B * T is small).
  constexpr int64_t kChunkRows = 8192;
  const int64_t Tc = std::min(d.T, time_chunk > 0 ? time_chunk : std::max<int64_t>(1, (kChunkRows + d.B - 1) / d.B));
  const int64_t R = d.B * Tc;
  dispatch_float(dt, name, [&]<typename T>() {
    // Gate pre-activation gradients of one time chunk, (B, L, GH): the input side (da_x) and, for the
    // gru, a separate recurrent side (da_h); the tanh rnn and lstm share one.
    Tensor dgx = empty({R, GH}, dt);
    Tensor dgh = cell == RnnCell::gru ? empty({R, GH}, dt) : dgx;
    Tensor xs = need_dw_ih && Tc < d.T ? empty({R, d.I}, dt) : Tensor();
    Tensor hs = need_dw_hh ? empty({R, d.H}, dt) : Tensor();
    Tensor dh = zeros({d.B, d.H}, dt);
    Tensor dc = cell == RnnCell::lstm ? zeros({d.B, d.H}, dt) : Tensor();
    if (need_dx) g.dx = empty(x.shape(), dt);
    if (need_dw_ih) g.dw_ih = empty(w_ih.shape(), dt);
    if (need_dw_hh) g.dw_hh = empty(w_hh.shape(), dt);
    const bool shared = cell != RnnCell::gru;  // db_hh = db_ih when da_h = da_x
    Tensor db_x = need_db_ih || (shared && need_db_hh) ? zeros({GH}, DType::f64) : Tensor();
    Tensor db_h = !shared && need_db_hh ? zeros({GH}, DType::f64) : Tensor();
    backward_impl<T>(cell, d, dy, x, w_ih, w_hh, f, dgx, dgh, xs, hs, dh, dc, g, db_x, db_h, Tc);
    if (need_db_ih) g.db_ih = to_dtype<T>(db_x, dt);
    if (need_db_hh) g.db_hh = to_dtype<T>(shared ? db_x : db_h, dt);
  });
  return g;
}

}  // namespace seqlab::cuda
