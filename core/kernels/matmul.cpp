// Matrix products on CBLAS. OpenBLAS runs one thread (core/parallel.cpp); a large GEMM is cut into
// row (or column) blocks of the output, one single-threaded sgemm/dgemm per TBB task, so seqlab has
// one thread pool. Blocks depend only on the sizes, and each output element is computed by one call,
// so results are bit-identical at any thread count.
#include "core/kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "core/cuda/matmul.h"
#include "core/device.h"
#include "core/kernels/matmul_plan.h"
#include "core/parallel.h"

namespace seqlab::kernels {
namespace {

// Below this many multiply-adds one call beats the cost of waking a second thread (~10 us).
constexpr int64_t kSplitWork = int64_t{1} << 20;
// A block narrower than this loses more to re-packing the shared operand than it gains.
constexpr int64_t kMinBlock = 32;
// Enough blocks to share one product among the cores of a small machine.
constexpr int64_t kMaxBlocks = 8;
// Shortest inner-axis chunk of a split weight-gradient product.
constexpr int64_t kMinChunkK = 256;
// Rows per partial in column_sum: fixed, so the summation order never depends on the thread count.
constexpr int64_t kSumChunk = 256;

CBLAS_TRANSPOSE op(bool t) { return t ? CblasTrans : CblasNoTrans; }


// One block of the output: rows [r0, r1) and columns [c0, c1) of c = op(a) @ op(b) + beta * c.
template <typename T>
void gemm_block(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* a, const T* b, T beta, T* c,
                int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  int64_t rows = r1 - r0, cols = c1 - c0;
  if (rows <= 0 || cols <= 0) return;
  if (K == 0) {  // BLAS leaves c untouched for an empty inner axis; the product is zero
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t j = c0; j < c1; ++j) c[i * N + j] = beta == T(0) ? T(0) : beta * c[i * N + j];
    return;
  }
  int64_t lda = ta ? M : K, ldb = tb ? K : N;
  const T* ab = ta ? a + r0 : a + r0 * K;  // op(a) row r is column r of a when transposed
  const T* bb = tb ? b + c0 * K : b + c0;
  gemm_serial(ta, tb, rows, cols, K, T(1), ab, lda, bb, ldb, beta, c + r0 * N + c0, N);
}

// How many blocks to cut one product into: a power of two, at most kMaxBlocks, each block at least
// kSplitWork multiply-adds and kMinBlock rows (or columns). It depends on the sizes alone, never on
// the thread count: every output element then comes from the same BLAS call with the same tiling
// (OpenBLAS's edge tiles accumulate in another order than full ones) at any thread count.
int64_t n_blocks(int64_t M, int64_t N, int64_t K) {
  const int64_t work = M * N * K, cap = std::min(kMaxBlocks, std::max(M, N) / kMinBlock);
  int64_t nb = 1;
  while (nb * 2 <= cap && work / (nb * 2) >= kSplitWork) nb *= 2;
  return nb;
}

// Inner-axis blocks for a product whose inner axis dwarfs its output (a weight gradient: K = rows,
// M x N = the weight): row blocks would each re-pack the whole K x N operand, inner chunks pack
// their own rows once. Also fixed by the sizes alone; partial products are added in chunk order.
int64_t k_blocks(int64_t M, int64_t N, int64_t K) {
  if (K < 8 * std::max(M, N)) return 1;
  const int64_t work = M * N * K;
  int64_t nb = 1;
  while (nb * 2 <= kMaxBlocks && work / (nb * 2) >= kSplitWork && K / (nb * 2) >= kMinChunkK) nb *= 2;
  return nb;
}

// c = beta * c + op(a) @ op(b) as nb partial products over chunks of the inner axis.
template <typename T>
void gemm_split_k(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* a, const T* b, T beta, T* c,
                  int64_t nb) {
  const int64_t lda = ta ? M : K, ldb = tb ? K : N, MN = M * N;
  Tensor parts = Tensor::empty({nb, MN}, dtype_of<T>());
  T* pp = parts.data<T>();
  parallel_for(0, nb, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t k0 = K * blk / nb, k1 = K * (blk + 1) / nb;
      const T* ak = ta ? a + k0 * lda : a + k0;  // op(a)'s columns k0.. are rows of a when transposed
      const T* bk = tb ? b + k0 : b + k0 * ldb;
      gemm_serial(ta, tb, M, N, k1 - k0, T(1), ak, lda, bk, ldb, T(0), pp + blk * MN, N);
    }
  });
  parallel_for(0, MN, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      T s = beta == T(0) ? T(0) : beta * c[i];  // beta 0: c may hold garbage, never read
      for (int64_t blk = 0; blk < nb; ++blk) s += pp[blk * MN + i];
      c[i] = s;
    }
  });
}

void check_blas_size(int64_t M, int64_t N, int64_t K) {
  SEQLAB_CHECK(M < INT_MAX && N < INT_MAX && K < INT_MAX,
               "gemm: sizes (", M, ", ", N, ", ", K, ") exceed what BLAS indexes with 32-bit ints");
}

// Runs product i's block `blk` of `nb`: split along rows when M >= N, else along columns.
template <typename T>
void run_block(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* a, const T* b, T beta, T* c,
               int64_t blk, int64_t nb) {
  if (M >= N) gemm_block(ta, tb, M, N, K, a, b, beta, c, M * blk / nb, M * (blk + 1) / nb, 0, N);
  else gemm_block(ta, tb, M, N, K, a, b, beta, c, 0, M, N * blk / nb, N * (blk + 1) / nb);
}

std::string flags(bool ta, bool tb) { return str("(trans_a=", ta, ", trans_b=", tb, ")"); }


}  // namespace

MatmulDims matmul_dims(const Shape& sa, const Shape& sb, bool ta, bool tb) {
  SEQLAB_CHECK(sa.size() >= 2 && sb.size() >= 2, "matmul: needs operands of rank >= 2, got shapes ", to_string(sa),
               " and ", to_string(sb));
  MatmulDims d;
  size_t ra = sa.size(), rb = sb.size();
  d.M = ta ? sa[ra - 1] : sa[ra - 2];
  d.K = ta ? sa[ra - 2] : sa[ra - 1];
  int64_t kb = tb ? sb[rb - 1] : sb[rb - 2];
  d.N = tb ? sb[rb - 2] : sb[rb - 1];
  SEQLAB_CHECK(d.K == kb, "matmul: shapes ", to_string(sa), " and ", to_string(sb), " ", flags(ta, tb),
               " do not multiply: inner sizes ", d.K, " and ", kb, " differ");
  if (rb == 2) {
    d.shared_b = ra > 2;
  } else {
    SEQLAB_CHECK(ra == rb && std::equal(sa.begin(), sa.end() - 2, sb.begin()), "matmul: shapes ", to_string(sa),
                 " and ", to_string(sb), " need equal leading axes (batched) or a 2-D second operand (shared)");
  }
  for (size_t i = 0; i + 2 < ra; ++i) d.L *= sa[i];
  d.out.assign(sa.begin(), sa.end() - 2);
  d.out.push_back(d.M);
  d.out.push_back(d.N);
  check_blas_size(d.L * d.M, d.N, d.K);
  return d;
}

int64_t gemm_k_blocks(int64_t M, int64_t N, int64_t K) { return k_blocks(M, N, K); }

// ---------------------------------------------------------------------------------------------
// Checks and plans (matmul_plan.h), shared with the CUDA twins

MatmulDims check_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  SEQLAB_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ: ", dtype_name(a.dtype()), " ", to_string(a.shape()),
               " and ", dtype_name(b.dtype()), " ", to_string(b.shape()));
  return matmul_dims(a.shape(), b.shape(), ta, tb);
}

MatmulDims check_matmul_backward(const Tensor& dy, const Shape& a_shape, const Shape& b_shape, bool ta, bool tb) {
  MatmulDims d = matmul_dims(a_shape, b_shape, ta, tb);
  SEQLAB_CHECK(dy.shape() == d.out, "matmul backward: gradient of shape ", to_string(dy.shape()), ", expected ",
               to_string(d.out));
  return d;
}

LinearDims check_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  SEQLAB_CHECK(w.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input of shape ",
               to_string(x.shape()), " does not fit weight of shape ", to_string(w.shape()),
               " (expected x (..., in) and w (out, in))");
  SEQLAB_CHECK(x.dtype() == w.dtype(), "linear: dtypes differ: input ", dtype_name(x.dtype()), ", weight ",
               dtype_name(w.dtype()));
  if (b.defined()) {
    SEQLAB_CHECK(b.shape() == Shape{w.size(0)}, "linear: bias of shape ", to_string(b.shape()),
                 " does not fit weight of shape ", to_string(w.shape()), " (expected (", w.size(0), ",))");
    SEQLAB_CHECK(b.dtype() == w.dtype(), "linear: dtypes differ: bias ", dtype_name(b.dtype()), ", weight ",
                 dtype_name(w.dtype()));
  }
  const int64_t in = w.size(1), out = w.size(0), R = numel(Shape(x.shape().begin(), x.shape().end() - 1));
  check_blas_size(R, out, in);
  return {R, in, out};
}

LinearDims linear_backward_dims(const Tensor& dy, const Tensor& x, const Tensor& w) {
  const int64_t out = dy.size(-1), R = numel(Shape(dy.shape().begin(), dy.shape().end() - 1));
  const int64_t in = w.defined() ? w.size(1) : x.defined() ? x.size(-1) : 0;
  return {R, in, out};
}

void fold_batched_gemm(bool ta, bool tb, int64_t& L, int64_t& M, int64_t N, int64_t& K, int64_t stride_a,
                       int64_t stride_b, int64_t stride_c) {
  if (L == 0 && stride_c == 0) {  // an empty sum still sets c to beta * c
    L = 1;
    K = 0;
  }
  if (L <= 0 || M <= 0 || N <= 0) return;
  // Shared b and untransposed a: consecutive products' rows are contiguous, so it is one GEMM.
  if (L > 1 && stride_b == 0 && !ta && stride_a == M * K && stride_c == M * N) {
    M *= L;
    L = 1;
  }
  // Summed into one c with the inner axis running down stored rows of both: one GEMM over L*K.
  if (L > 1 && stride_c == 0 && ta && !tb && stride_a == K * M && stride_b == K * N) {
    K *= L;
    L = 1;
  }
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* a, const T* b, T beta, T* c) {
  batched_gemm(trans_a, trans_b, 1, M, N, K, a, 0, b, 0, beta, c, 0);
}

template <typename T>
void batched_gemm(bool ta, bool tb, int64_t L, int64_t M, int64_t N, int64_t K, const T* a, int64_t stride_a,
                  const T* b, int64_t stride_b, T beta, T* c, int64_t stride_c) {
  fold_batched_gemm(ta, tb, L, M, N, K, stride_a, stride_b, stride_c);
  if (L <= 0 || M <= 0 || N <= 0) return;
  if (L == 1 && K > 0) {
    const int64_t nk = k_blocks(M, N, K);
    if (nk > 1) return gemm_split_k(ta, tb, M, N, K, a, b, beta, c, nk);
  }
  if (stride_c == 0 || L == 1) {
    // Products that accumulate into one c run in batch order; each is split into blocks.
    int64_t nb = n_blocks(M, N, K);
    for (int64_t i = 0; i < L; ++i) {
      const T* ai = a + i * stride_a;
      const T* bi = b + i * stride_b;
      T bt = i == 0 ? beta : T(1);
      parallel_for(0, nb, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t blk = lo; blk < hi; ++blk) run_block(ta, tb, M, N, K, ai, bi, bt, c, blk, nb);
      });
    }
    return;
  }
  // Independent products: tasks over (product, block); products split only when too few to share.
  int64_t nb = L >= kMaxBlocks ? 1 : n_blocks(M, N, K);
  int64_t work = M * N * K / nb;
  int64_t grain = L * work * nb < kSplitWork ? L * nb : std::max<int64_t>(1, kSplitWork / std::max<int64_t>(work, 1));
  parallel_for(0, L * nb, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      int64_t i = t / nb;
      run_block(ta, tb, M, N, K, a + i * stride_a, b + i * stride_b, beta, c + i * stride_c, t % nb, nb);
    }
  });
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, const float*, const float*, float, float*);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, const double*, const double*, double, double*);
template void batched_gemm<float>(bool, bool, int64_t, int64_t, int64_t, int64_t, const float*, int64_t,
                                  const float*, int64_t, float, float*, int64_t);
template void batched_gemm<double>(bool, bool, int64_t, int64_t, int64_t, int64_t, const double*, int64_t,
                                   const double*, int64_t, double, double*, int64_t);

Tensor matmul_forward(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  if constexpr (kCuda) if (on_cuda("matmul", a, b)) return cuda::matmul_forward(a, b, ta, tb);
  const MatmulDims d = check_matmul(a, b, ta, tb);
  Tensor y = Tensor::empty(d.out, a.dtype());
  dispatch_float(a.dtype(), "matmul", [&]<typename T>() {
    int64_t sb = d.L > 1 && !d.shared_b ? d.K * d.N : 0;
    batched_gemm<T>(ta, tb, d.L, d.M, d.N, d.K, a.data<T>(), d.M * d.K, b.data<T>(), sb, T(0), y.data<T>(),
                    d.M * d.N);
  });
  return y;
}

std::array<Tensor, 2> matmul_backward(const Tensor& dy, const Tensor& a, const Tensor& b, const Shape& a_shape,
                                      const Shape& b_shape, bool ta, bool tb, bool need_da, bool need_db) {
  if constexpr (kCuda)
    if (on_cuda("matmul backward", dy, a, b))
      return cuda::matmul_backward(dy, a, b, a_shape, b_shape, ta, tb, need_da, need_db);
  const MatmulDims d = check_matmul_backward(dy, a_shape, b_shape, ta, tb);
  std::array<Tensor, 2> g;
  dispatch_float(dy.dtype(), "matmul", [&]<typename T>() {
    int64_t L = d.L, M = d.M, N = d.N, K = d.K;
    int64_t sa = M * K, sy = M * N, sb = L > 1 && !d.shared_b ? K * N : 0;
    const T* py = dy.data<T>();
    if (need_da) {
      const T* pb = b.data<T>();
      g[0] = Tensor::empty(a_shape, dy.dtype());
      T* da = g[0].data<T>();
      // y = op(a) op(b):  d op(a) = dy op(b)^T, transposed back when a was
      if (!ta) batched_gemm<T>(false, !tb, L, M, K, N, py, sy, pb, sb, T(0), da, sa);
      else batched_gemm<T>(tb, true, L, K, M, N, pb, sb, py, sy, T(0), da, sa);
    }
    if (need_db) {
      const T* pa = a.data<T>();
      g[1] = Tensor::empty(b_shape, dy.dtype());
      T* db = g[1].data<T>();
      // d op(b) = op(a)^T dy, transposed back when b was; a shared b sums over the batch (stride 0)
      if (!tb) batched_gemm<T>(!ta, false, L, K, N, M, pa, sa, py, sy, T(0), db, sb);
      else batched_gemm<T>(true, ta, L, N, K, M, py, sy, pa, sa, T(0), db, sb);
    }
  });
  return g;
}

Tensor column_sum(const Tensor& x, int64_t C) {
  if constexpr (kCuda) if (on_cuda("column_sum", x)) return cuda::column_sum(x, C);
  SEQLAB_CHECK(C >= 0 && (C == 0 || x.numel() % C == 0), "column_sum: ", to_string(x.shape()),
               " is not a multiple of ", C, " columns");
  Tensor out = Tensor::empty({C}, x.dtype());
  if (C == 0) return out;
  int64_t R = x.numel() / C;
  dispatch_float(x.dtype(), "column_sum", [&]<typename T>() {
    const T* px = x.data<T>();
    int64_t n_chunks = std::max<int64_t>(1, (R + kSumChunk - 1) / kSumChunk);
    std::vector<double> partial(static_cast<size_t>(n_chunks * C), 0.0);
    parallel_for(0, n_chunks, std::max<int64_t>(1, 65536 / (kSumChunk * C)), [&](int64_t lo, int64_t hi) {
      for (int64_t k = lo; k < hi; ++k) {
        double* acc = partial.data() + k * C;
        for (int64_t r = k * kSumChunk, r1 = std::min(R, r + kSumChunk); r < r1; ++r)
          for (int64_t j = 0; j < C; ++j) acc[j] += static_cast<double>(px[r * C + j]);
      }
    });
    T* po = out.data<T>();
    for (int64_t j = 0; j < C; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n_chunks; ++k) s += partial[static_cast<size_t>(k * C + j)];
      po[j] = static_cast<T>(s);
    }
  });
  return out;
}

Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& b) {
  if constexpr (kCuda) if (on_cuda("linear", x, w, b)) return cuda::linear_forward(x, w, b);
  const LinearDims d = check_linear(x, w, b);
  const int64_t R = d.R, in = d.in, out = d.out;
  Shape ys = x.shape();
  ys.back() = out;
  Tensor y = Tensor::empty(ys, x.dtype());
  dispatch_float(x.dtype(), "linear", [&]<typename T>() {
    T* py = y.data<T>();
    // The bias is written first and the GEMM adds onto it (beta = 1): no second pass over y.
    if (b.defined()) {
      const T* pb = b.data<T>();
      parallel_for(0, R, std::max<int64_t>(1, 65536 / std::max<int64_t>(out, 1)), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) std::copy(pb, pb + out, py + r * out);
      });
    }
    gemm<T>(false, true, R, out, in, x.data<T>(), w.data<T>(), b.defined() ? T(1) : T(0), py);
  });
  return y;
}

std::array<Tensor, 3> linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, bool need_dx,
                                      bool need_dw, bool need_db) {
  if constexpr (kCuda)
    if (on_cuda("linear backward", dy, x, w)) return cuda::linear_backward(dy, x, w, need_dx, need_dw, need_db);
  const LinearDims d = linear_backward_dims(dy, x, w);
  const int64_t R = d.R, in = d.in, out = d.out;
  std::array<Tensor, 3> g;
  dispatch_float(dy.dtype(), "linear", [&]<typename T>() {
    const T* py = dy.data<T>();
    if (need_dx) {  // dx (R, in) = dy (R, out) @ w (out, in)
      Shape xs = dy.shape();
      xs.back() = in;
      g[0] = Tensor::empty(xs, dy.dtype());
      gemm<T>(false, false, R, in, out, py, w.data<T>(), T(0), g[0].data<T>());
    }
    if (need_dw) {  // dw (out, in) = dy^T (out, R) @ x (R, in)
      g[1] = Tensor::empty({out, in}, dy.dtype());
      gemm<T>(true, false, out, in, R, py, x.data<T>(), T(0), g[1].data<T>());
    }
  });
  if (need_db) g[2] = column_sum(dy, out);
  return g;
}

void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, op(ta), op(tb), static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}
void gemm_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* a, int64_t lda,
                 const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, op(ta), op(tb), static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

}  // namespace seqlab::kernels
