// Shape copies on the device (core/cuda/shape.h). Elements are moved as 4- or 8-byte words, so any
// dtype works. Checks and plans are the CPU's (core/kernels/shape_plan.h). permute (size-1 axes
// dropped, axes that stay contiguous merged): a plain gather (one thread per output element, writes
// coalesced) unless the last axis moves, where 32 x 32 tiles go through shared memory so that both
// reads and writes are coalesced. flip, slice, slice_backward and concat are (A, K, B) copies, one
// thread per output element; concat copies up to 16 inputs per launch.
#include "core/cuda/shape.h"

#include <algorithm>
#include <vector>

#include "core/cuda/common.cuh"
#include "core/kernels/shape.h"
#include "core/kernels/shape_plan.h"

namespace seqlab::cuda {
namespace {

constexpr int kMaxDims = 16;
constexpr int kTile = 32;
constexpr int kCatGroup = 16;

using kernels::AxisPlan;
using kernels::by_size;
using kernels::split_at;

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

// Up to kCatGroup non-empty parts of a concat or split: ptr[j] is part j's storage, k0[j] .. k0[j + 1]
// its range along the axis.
struct PartGroup {
  int n = 0;
  void* ptr[kCatGroup];
  int64_t k0[kCatGroup + 1];
};

// Calls launch(g) for consecutive groups of the parts of sizes ks (empty parts skipped); ptr_of(i) is
// part i's storage.
template <typename PtrOf, typename Launch>
void for_part_groups(const std::vector<int64_t>& ks, PtrOf ptr_of, Launch launch) {
  PartGroup g;
  int64_t off = 0;
  for (size_t i = 0; i < ks.size(); ++i) {
    const int64_t k = ks[i];
    if (k > 0) {
      if (g.n == 0) g.k0[0] = off;
      g.ptr[g.n] = ptr_of(i);
      g.k0[g.n + 1] = off + k;
      if (++g.n == kCatGroup) {
        launch(g);
        g.n = 0;
      }
    }
    off += k;
  }
  if (g.n > 0) launch(g);
}

// Element i of a group's copy: its offset in the whole tensor (Ktot along the axis) and, in part j,
// its offset there.
struct PartElement {
  int j;
  int64_t whole, part;
};
__device__ inline PartElement part_element(int64_t i, int64_t Ktot, int64_t B, const PartGroup& g) {
  const int64_t first = g.k0[0], Kg = g.k0[g.n] - first;
  const int64_t b = i % B, q = i / B, k = first + q % Kg, a = q / Kg;
  int j = 0;
  while (j + 1 < g.n && g.k0[j + 1] <= k) ++j;
  const int64_t kj = g.k0[j + 1] - g.k0[j];
  return {j, (a * Ktot + k) * B + b, (a * kj + (k - g.k0[j])) * B + b};
}

// concat: the group's inputs placed at [k0[j], k0[j + 1]) along the output's axis
template <typename E>
__global__ void concat_kernel(E* __restrict__ out, int64_t Ktot, int64_t B, int64_t count, PartGroup g) {
  SEQLAB_CUDA_LOOP(i, count) {
    const PartElement e = part_element(i, Ktot, B, g);
    out[e.whole] = static_cast<const E*>(g.ptr[e.j])[e.part];
  }
}

// split: the inverse of concat_kernel
template <typename E>
__global__ void split_kernel(const E* __restrict__ in, int64_t Ktot, int64_t B, int64_t count, PartGroup g) {
  SEQLAB_CUDA_LOOP(i, count) {
    const PartElement e = part_element(i, Ktot, B, g);
    static_cast<E*>(g.ptr[e.j])[e.part] = in[e.whole];
  }
}

}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  const Shape& xs = x.shape();
  const kernels::PermutePlan plan = kernels::plan_permute(xs, dims);
  const std::vector<int64_t>& size = plan.size;
  const std::vector<int64_t>& st = plan.st;
  Tensor out = empty(plan.out, x.dtype());
  if (out.numel() == 0) return out;
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
  return permute(x, kernels::transpose_permutation(x.shape(), axis0, axis1));
}

Tensor flip(const Tensor& x, int64_t axis) {
  const AxisPlan p = kernels::plan_flip(x.shape(), axis);
  const int64_t K = p.K, B = p.B;
  Tensor out = empty(p.out, x.dtype());
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
  const AxisPlan p = kernels::plan_slice(x.shape(), axis, start, end);
  const int64_t K = p.K, B = p.B, s = p.start, e = p.start + p.len;
  Tensor out = empty(p.out, x.dtype());
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
  const AxisPlan p = kernels::plan_slice_backward(dy.shape(), x_shape, axis, start);
  const int64_t K = p.K, B = p.B, s = p.start, len = p.len;
  Tensor dx = empty(p.out, dy.dtype());
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
  Tensor out = empty(os, xs[0].dtype());
  int64_t A, Ktot, B;
  split_at(os, ax, A, Ktot, B);
  if (out.numel() == 0) return out;
  std::vector<int64_t> ks;
  for (const Tensor& x : xs) ks.push_back(x.shape()[static_cast<size_t>(ax)]);
  by_size(out.dtype(), [&]<typename E>() {
    E* dst = static_cast<E*>(out.device_ptr());
    for_part_groups(ks, [&](size_t i) { return xs[i].device_ptr(); }, [&](const PartGroup& g) {
      const int64_t count = A * (g.k0[g.n] - g.k0[0]) * B;
      concat_kernel<E><<<blocks_for(count), 256, 0, stream()>>>(dst, Ktot, B, count, g);
      check_launch("concat_kernel");
    });
  });
  return out;
}

std::vector<Tensor> split(const Tensor& x, int64_t ax, const std::vector<int64_t>& sizes) {
  const Shape& xs = x.shape();
  int64_t A, Ktot, B;
  split_at(xs, ax, A, Ktot, B);
  std::vector<Tensor> ys;
  ys.reserve(sizes.size());
  for (int64_t k : sizes) {
    Shape s = xs;
    s[static_cast<size_t>(ax)] = k;
    ys.push_back(empty(s, x.dtype()));
  }
  if (x.numel() == 0) return ys;
  by_size(x.dtype(), [&]<typename E>() {
    const E* src = static_cast<const E*>(x.device_ptr());
    for_part_groups(sizes, [&](size_t i) { return ys[i].device_ptr(); }, [&](const PartGroup& g) {
      const int64_t count = A * (g.k0[g.n] - g.k0[0]) * B;
      split_kernel<E><<<blocks_for(count), 256, 0, stream()>>>(src, Ktot, B, count, g);
      check_launch("split_kernel");
    });
  });
  return ys;
}

}  // namespace seqlab::cuda
