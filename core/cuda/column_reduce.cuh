// Column sums of a row-major (R, C) quantity in double, in a fixed order (no atomics, so the same bits
// on every run), with enough threads in flight to hide memory latency: the weight and bias gradients
// of the norms, Linear's bias gradient and the recurrent layers' bias gradients.
//
// Pass 1 (column_tile_partials): rows in tiles of column_tile_rows(R); a 32 x 8 block per (32
// columns, tile); thread (x, y) adds the terms of rows y, y + 8, ... of its tile for column x in
// order, then thread y = 0 adds the 8 lane sums in y order -> partial[tile, j].
// Pass 2 (sum_tile_partials): out[j] = sum over tiles in order of partial[tile, j]; more than 64
// tiles are first tiled again by pass 1 (sum_partials_into).
// The order depends on R and C only. The session-13 profile of a T = 96 Mamba step found the old
// one-thread-per-(chunk of 256 rows, column) layout latency-bound: 768 threads, each a dependent
// chain of 256 loads and adds (docs/GPU.md, "Session 13").
// Included by .cu files only.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/cuda/common.cuh"

namespace seqlab::cuda {

constexpr int kColX = 32, kColY = 8;  // block shape of pass 1

/// Rows per tile: 64 (8 per thread) or more, so that there are at most 512 tiles (pass 2 adds one
/// number per tile and column in order); a multiple of kColY.
inline int64_t column_tile_rows(int64_t R) {
  const int64_t t = std::max<int64_t>(64, (R + 511) / 512);
  return (t + kColY - 1) / kColY * kColY;
}
/// Tiles covering R rows (at least one, so an empty input gives zero sums).
inline int64_t column_tiles(int64_t R) {
  const int64_t tile = column_tile_rows(R);
  return std::max<int64_t>(1, (R + tile - 1) / tile);
}

/// f(r, j, acc) adds row r's K terms of column j to acc[0..K). p[k] (null: not wanted) receives the
/// (tiles, C) partials of term k. Launch with column_tile_grid(R, C) and dim3(kColX, kColY).
template <int K, typename F>
__global__ void column_tile_partials(int64_t R, int64_t C, int64_t tile, F f, double* __restrict__ p0,
                                     double* __restrict__ p1) {
  static_assert(K == 1 || K == 2, "one or two sums per column");
  __shared__ double lane[K][kColY][kColX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColX + tx, t = blockIdx.y;
  double acc[K] = {};
  if (j < C) {
    const int64_t r_end = min(R, (t + 1) * tile);
#pragma unroll 4
    for (int64_t r = t * tile + ty; r < r_end; r += kColY) f(r, j, acc);
  }
  for (int k = 0; k < K; ++k) lane[k][ty][tx] = acc[k];
  __syncthreads();
  if (ty != 0 || j >= C) return;
  for (int k = 0; k < K; ++k) {
    double* p = k == 0 ? p0 : p1;
    if (!p) continue;
    double s = 0;
    for (int y = 0; y < kColY; ++y) s += lane[k][y][tx];
    p[t * C + j] = s;
  }
}

inline dim3 column_tile_grid(int64_t R, int64_t C) {
  SEQLAB_CHECK(C <= int64_t{2147483647} * kColX, "column sums: ", C, " columns is more than one grid covers");
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, (C + kColX - 1) / kColX)),
              static_cast<unsigned>(column_tiles(R)));
}

/// out[j] = (kAdd ? out[j] : 0) + sum over tiles in order of part[tile, j], converted to Out.
template <typename Out, bool kAdd = false>
__global__ void sum_tile_partials(const double* __restrict__ part, int64_t n_tiles, int64_t C,
                                  Out* __restrict__ out) {
  SEQLAB_CUDA_LOOP(j, C) {
    double s = 0;
    for (int64_t k = 0; k < n_tiles; ++k) s += part[k * C + j];
    if constexpr (kAdd) out[j] += static_cast<Out>(s);
    else out[j] = static_cast<Out>(s);
  }
}

/// Term of a plain column sum: acc[0] += x[r, j].
template <typename T>
struct ColumnTerm {
  const T* __restrict__ x;
  int64_t C;
  __device__ void operator()(int64_t r, int64_t j, double* acc) const { acc[0] += static_cast<double>(x[r * C + j]); }
};

/// Pass 1 alone for any one-term quantity f (f(r, j, acc) adds row r's term of column j to acc[0]):
/// its (column_tiles(R), C) partials into part.
template <typename F>
void term_partials_into(F f, int64_t R, int64_t C, double* part, const char* what) {
  if (C == 0) return;
  column_tile_partials<1><<<column_tile_grid(R, C), dim3(kColX, kColY), 0, stream()>>>(R, C, column_tile_rows(R), f,
                                                                                      part, nullptr);
  check_launch(what);
}

/// Pass 1 alone: the (column_tiles(R), C) partials of x's column sums into part (a caller that
/// gathers the tiles of several calls and adds them once, as the recurrent layers' time chunks do).
template <typename T>
void column_partials_into(const T* x, int64_t R, int64_t C, double* part, const char* what) {
  term_partials_into(ColumnTerm<T>{x, C}, R, C, part, what);
}

/// out[j] (or out[j] += with kAdd) = sum over the n rows of the (n, C) partials part. While more
/// than 64 rows are left they are tiled again (pass 1 on the partials), so the last pass adds at
/// most 64 numbers per column in order: a column's sum never waits on a long serial chain.
template <typename Out, bool kAdd = false>
void sum_partials_into(Tensor part, int64_t n, int64_t C, Out* out, const char* what) {
  if (C == 0) return;
  while (n > 64) {
    const int64_t n2 = column_tiles(n);
    Tensor next = empty({n2, C}, DType::f64);
    column_partials_into<double>(ptr<double>(part), n, C, ptr<double>(next), what);
    part = next;
    n = n2;
  }
  sum_tile_partials<Out, kAdd><<<blocks_for(C), 256, 0, stream()>>>(ptr<double>(part), n, C, out);
  check_launch(what);
}

/// out[j] (or out[j] += with kAdd) = sum over rows r < R of f's term (r, j), in double; two launches
/// when R <= 4096 (at most 64 tiles), three beyond.
template <typename Out, bool kAdd = false, typename F>
void term_sum_into(F f, int64_t R, int64_t C, Out* out, const char* what) {
  if (C == 0) return;
  Tensor part = empty({column_tiles(R), C}, DType::f64);
  term_partials_into(f, R, C, ptr<double>(part), what);
  sum_partials_into<Out, kAdd>(part, column_tiles(R), C, out, what);
}

/// out[j] (or out[j] += with kAdd) = sum over rows of x[r, j] for a row-major (R, C) x, in double.
template <typename T, typename Out, bool kAdd = false>
void column_sum_into(const T* x, int64_t R, int64_t C, Out* out, const char* what) {
  term_sum_into<Out, kAdd>(ColumnTerm<T>{x, C}, R, C, out, what);
}

}  // namespace seqlab::cuda
