// Shape copies on the device (core/cuda/shape.h). Elements are moved as 4- or 8-byte words, so any
// dtype works. permute plans like the CPU (size-1 axes dropped, axes that stay contiguous merged):
// a plain gather (one thread per output element, writes coalesced) unless the last axis moves, where
// 32 x 32 tiles go through shared memory so that both reads and writes are coalesced. flip, slice,
// slice_backward and concat are (A, K, B) copies, one thread per output element; concat copies up to
// 16 inputs per launch.
#include "core/cuda/shape.h"

#include <algorithm>

#include "core/cuda/common.cuh"
#include "core/kernels/shape.h"

namespace seqlab::cuda {
namespace {

constexpr int kMaxDims = 16;
constexpr int kTile = 32;
constexpr int kCatGroup = 16;

// (A, K, B) view of s around `axis`.
void split_at(const Shape& s, int64_t axis, int64_t& A, int64_t& K, int64_t& B) {
  A = 1;
  B = 1;
  for (int64_t i = 0; i < axis; ++i) A *= s[static_cast<size_t>(i)];
  K = s[static_cast<size_t>(axis)];
  for (size_t i = static_cast<size_t>(axis) + 1; i < s.size(); ++i) B *= s[i];
}

template <typename F>
void by_size(DType t, F&& f) {
  if (dtype_size(t) == 8) f.template operator()<uint64_t>();
  else f.template operator()<uint32_t>();
}

// Iteration sizes (row-major) and the input's element strides for each.
struct Strided {
  int d = 0;
  int64_t size[kMaxDims];
  int64_t st[kMaxDims];
};

__device__ int64_t offset_of(int64_t r, const Strided& p, int d) {
  int64_t off = 0;
  for (int k = d - 1; k >= 0; --k) {
    off += (r % p.size[k]) * p.st[k];
    r /= p.size[k];
  }
  return off;
}

template <typename E>
__global__ void gather_kernel(const E* __restrict__ in, E* __restrict__ out, int64_t n, Strided p) {
  SEQLAB_CUDA_LOOP(i, n) out[i] = in[offset_of(i, p, p.d)];
}

// out[o, r, c] = in[offset(o) + r + c * s] for o < outer (iteration p over the leading p.d - 2 axes),
// through 32 x 32 tiles: reads coalesced along r, writes along c.
template <typename E>
__global__ void transpose_kernel(const E* __restrict__ in, E* __restrict__ out, int64_t R, int64_t C, int64_t s,
                                 int64_t outer, Strided p) {
  __shared__ E tile[kTile][kTile + 1];
  const int64_t tiles_r = (R + kTile - 1) / kTile, tiles_c = (C + kTile - 1) / kTile, tiles = tiles_r * tiles_c;
  for (int64_t u = blockIdx.x; u < outer * tiles; u += gridDim.x) {
    const int64_t o = u / tiles, t = u % tiles, r0 = (t / tiles_c) * kTile, c0 = (t % tiles_c) * kTile;
    const int64_t base = offset_of(o, p, p.d - 2);
    for (int j = threadIdx.y; j < kTile; j += blockDim.y) {
      const int64_t r = r0 + threadIdx.x, c = c0 + j;
      if (r < R && c < C) tile[j][threadIdx.x] = in[base + r + c * s];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < kTile; j += blockDim.y) {
      const int64_t r = r0 + j, c = c0 + threadIdx.x;
      if (r < R && c < C) out[(o * R + r) * C + c] = tile[threadIdx.x][j];
    }
    __syncthreads();
  }
}

// out (A, K, B) = in (A, K, B) reversed along K.
template <typename E>
__global__ void flip_kernel(const E* __restrict__ in, E* __restrict__ out, int64_t K, int64_t B, int64_t n) {
  SEQLAB_CUDA_LOOP(i, n) {
    const int64_t b = i % B, ak = i / B, k = ak % K, a = ak / K;
    out[i] = in[(a * K + (K - 1 - k)) * B + b];
  }
}

// out (A, L, B) = in (A, K, B)[:, s:s+L, :].
template <typename E>
__global__ void slice_kernel(const E* __restrict__ in, E* __restrict__ out, int64_t K, int64_t L, int64_t s,
                             int64_t B, int64_t n) {
  SEQLAB_CUDA_LOOP(i, n) {
    const int64_t b = i % B, al = i / B, l = al % L, a = al / L;
    out[i] = in[(a * K + s + l) * B + b];
  }
}

// dx (A, K, B) = dy (A, L, B) at [s, s + L) along K, zeros elsewhere.
template <typename E>
__global__ void slice_backward_kernel(const E* __restrict__ dy, E* __restrict__ dx, int64_t K, int64_t L, int64_t s,
                                      int64_t B, int64_t n) {
  SEQLAB_CUDA_LOOP(i, n) {
    const int64_t b = i % B, ak = i / B, k = ak % K, a = ak / K;
    dx[i] = (k >= s && k < s + L) ? dy[(a * L + (k - s)) * B + b] : E(0);
  }
}

// Up to kCatGroup inputs placed at [k0[j], k0[j + 1]) along the output's axis (of size Ktot).
struct CatGroup {
  int n = 0;
  const void* src[kCatGroup];
  int64_t k0[kCatGroup + 1];
};

template <typename E>
__global__ void concat_kernel(E* __restrict__ out, int64_t Ktot, int64_t B, int64_t count, CatGroup g) {
  const int64_t first = g.k0[0], Kg = g.k0[g.n] - first;
  SEQLAB_CUDA_LOOP(i, count) {
    const int64_t b = i % B, q = i / B, k = first + q % Kg, a = q / Kg;
    int j = 0;
    while (j + 1 < g.n && g.k0[j + 1] <= k) ++j;
    const int64_t kj = g.k0[j + 1] - g.k0[j];
    out[(a * Ktot + k) * B + b] = static_cast<const E*>(g.src[j])[(a * kj + (k - g.k0[j])) * B + b];
  }
}

}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  const Shape& xs = x.shape();
  std::vector<int64_t> p = kernels::norm_permutation(dims, xs, "permute");
  std::vector<int64_t> xst = strides_of(xs);
  Shape os(p.size());
  for (size_t i = 0; i < p.size(); ++i) os[i] = xs[static_cast<size_t>(p[i])];
  Tensor out = empty(os, x.dtype());
  if (out.numel() == 0) return out;
  std::vector<int64_t> size, st;
  for (size_t i = 0; i < p.size(); ++i) {
    const int64_t n = os[i], s = xst[static_cast<size_t>(p[i])];
    if (n == 1) continue;
    if (!size.empty() && st.back() == s * n) {
      size.back() *= n;
      st.back() = s;
    } else {
      size.push_back(n);
      st.push_back(s);
    }
  }
  if (size.size() <= 1) {  // the order of elements does not change
    copy_d2d(out.device_ptr(), x.device_ptr(), x.nbytes());
    return out;
  }
  const int d = static_cast<int>(size.size());
  SEQLAB_CHECK(d <= kMaxDims, "permute: more than ", kMaxDims, " axes to move in a tensor of shape ", to_string(xs));
  Strided sp;
  sp.d = d;
  for (int k = 0; k < d; ++k) {
    sp.size[k] = size[static_cast<size_t>(k)];
    sp.st[k] = st[static_cast<size_t>(k)];
  }
  const int64_t n = out.numel();
  by_size(x.dtype(), [&]<typename E>() {
    const E* in = static_cast<const E*>(x.device_ptr());
    E* o = static_cast<E*>(out.device_ptr());
    if (st[static_cast<size_t>(d - 2)] == 1 && st[static_cast<size_t>(d - 1)] != 1) {
      const int64_t R = size[static_cast<size_t>(d - 2)], C = size[static_cast<size_t>(d - 1)];
      const int64_t tiles = ((R + kTile - 1) / kTile) * ((C + kTile - 1) / kTile);
      transpose_kernel<E><<<blocks_for(n / (R * C) * tiles, 1), dim3(kTile, 8), 0, stream()>>>(
          in, o, R, C, st[static_cast<size_t>(d - 1)], n / (R * C), sp);
      check_launch("transpose_kernel");
    } else {
      gather_kernel<E><<<blocks_for(n), 256, 0, stream()>>>(in, o, n, sp);
      check_launch("gather_kernel");
    }
  });
  return out;
}

Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1) {
  const int64_t rank = x.dim();
  const int64_t a0 = axis0 < 0 ? axis0 + rank : axis0, a1 = axis1 < 0 ? axis1 + rank : axis1;
  SEQLAB_CHECK(a0 >= 0 && a0 < rank && a1 >= 0 && a1 < rank, "transpose: axes (", axis0, ", ", axis1,
               ") out of range for a tensor of shape ", to_string(x.shape()));
  std::vector<int64_t> p(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) p[static_cast<size_t>(i)] = i;
  std::swap(p[static_cast<size_t>(a0)], p[static_cast<size_t>(a1)]);
  return permute(x, p);
}

Tensor flip(const Tensor& x, int64_t axis) {
  const int64_t rank = x.dim();
  const int64_t ax = axis < 0 ? axis + rank : axis;
  SEQLAB_CHECK(ax >= 0 && ax < rank, "flip: axis ", axis, " out of range for a tensor of shape ", to_string(x.shape()));
  int64_t A, K, B;
  split_at(x.shape(), ax, A, K, B);
  Tensor out = empty(x.shape(), x.dtype());
  const int64_t n = out.numel();
  if (n == 0) return out;
  by_size(x.dtype(), [&]<typename E>() {
    flip_kernel<E><<<blocks_for(n), 256, 0, stream()>>>(static_cast<const E*>(x.device_ptr()),
                                                        static_cast<E*>(out.device_ptr()), K, B, n);
  });
  check_launch("flip_kernel");
  return out;
}

Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end) {
  const Shape& xs = x.shape();
  const int64_t rank = x.dim();
  const int64_t ax = axis < 0 ? axis + rank : axis;
  SEQLAB_CHECK(ax >= 0 && ax < rank, "slice: axis ", axis, " out of range for a tensor of shape ", to_string(xs));
  const int64_t n = xs[static_cast<size_t>(ax)];
  const int64_t s = start < 0 ? start + n : start, e = end < 0 ? end + n : end;
  SEQLAB_CHECK(0 <= s && s <= e && e <= n, "slice: range [", start, ", ", end, ") out of bounds for axis ", axis,
               " of a tensor of shape ", to_string(xs));
  int64_t A, K, B;
  split_at(xs, ax, A, K, B);
  Shape os = xs;
  os[static_cast<size_t>(ax)] = e - s;
  Tensor out = empty(os, x.dtype());
  const int64_t cnt = out.numel();
  if (cnt == 0) return out;
  by_size(x.dtype(), [&]<typename E>() {
    slice_kernel<E><<<blocks_for(cnt), 256, 0, stream()>>>(static_cast<const E*>(x.device_ptr()),
                                                           static_cast<E*>(out.device_ptr()), K, e - s, s, B, cnt);
  });
  check_launch("slice_kernel");
  return out;
}

Tensor slice_backward(const Tensor& dy, const Shape& x_shape, int64_t axis, int64_t start) {
  const int64_t rank = static_cast<int64_t>(x_shape.size());
  const int64_t ax = axis < 0 ? axis + rank : axis;
  SEQLAB_CHECK(ax >= 0 && ax < rank && dy.dim() == rank, "slice_backward: gradient ", to_string(dy.shape()),
               " does not fit ", to_string(x_shape), " along axis ", axis);
  int64_t A, K, B;
  split_at(x_shape, ax, A, K, B);
  const int64_t len = dy.shape()[static_cast<size_t>(ax)];
  const int64_t s = start < 0 ? start + K : start;
  SEQLAB_CHECK(0 <= s && s + len <= K && dy.numel() == A * len * B, "slice_backward: gradient ",
               to_string(dy.shape()), " does not fit ", to_string(x_shape), " at ", start, " along axis ", axis);
  Tensor dx = empty(x_shape, dy.dtype());
  const int64_t n = dx.numel();
  if (n == 0) return dx;
  by_size(dy.dtype(), [&]<typename E>() {
    slice_backward_kernel<E><<<blocks_for(n), 256, 0, stream()>>>(static_cast<const E*>(dy.device_ptr()),
                                                                  static_cast<E*>(dx.device_ptr()), K, len, s, B, n);
  });
  check_launch("slice_backward_kernel");
  return dx;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  using kernels::concat_shape;
  const auto [os, ax] = concat_shape(xs, axis);
  const Shape& s0 = xs[0].shape();
  Tensor out = empty(os, xs[0].dtype());
  int64_t A, Ktot, B;
  split_at(os, ax, A, Ktot, B);
  if (out.numel() == 0) return out;
  by_size(out.dtype(), [&]<typename E>() {
    E* dst = static_cast<E*>(out.device_ptr());
    CatGroup g;
    int64_t off = 0;
    auto flush = [&] {
      if (g.n == 0) return;
      const int64_t count = A * (g.k0[g.n] - g.k0[0]) * B;
      concat_kernel<E><<<blocks_for(count), 256, 0, stream()>>>(dst, Ktot, B, count, g);
      check_launch("concat_kernel");
      g.n = 0;
    };
    for (const Tensor& x : xs) {
      const int64_t k = x.shape()[static_cast<size_t>(ax)];
      if (k > 0) {
        if (g.n == 0) g.k0[0] = off;
        g.src[g.n] = x.device_ptr();
        g.k0[g.n + 1] = off + k;
        if (++g.n == kCatGroup) flush();
      }
      off += k;
    }
    flush();
  });
  return out;
}

}  // namespace seqlab::cuda
