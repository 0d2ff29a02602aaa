// Shape kernels: byte copies planned like the elementwise ones (size-1 axes dropped, axes that stay
// contiguous merged). A permute that moves the last axis copies 32 x 32 tiles, so both the reads
// and the writes of a tile stay in cache.
#include "core/kernels/shape.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/cuda/shape.h"
#include "core/device.h"
#include "core/kernels/loops.h"
#include "core/kernels/shape_plan.h"

namespace seqlab::kernels {
namespace {

constexpr int64_t kTile = 32;

// Offset into the input of outer row `r` (row-major over size[0..d)).
int64_t offset_of(int64_t r, const std::vector<int64_t>& size, const std::vector<int64_t>& st, size_t d) {
  int64_t off = 0;
  for (size_t k = d; k-- > 0;) {
    off += (r % size[k]) * st[k];
    r /= size[k];
  }
  return off;
}

// out (contiguous, iteration sizes `size`) = in read with element strides `st`.
template <typename E>
void strided_copy(const E* in, E* out, const std::vector<int64_t>& size, const std::vector<int64_t>& st) {
  const size_t d = size.size();
  const int64_t inner = size[d - 1], s = st[d - 1];
  int64_t n = 1;
  for (int64_t v : size) n *= v;
  if (d >= 2 && st[d - 2] == 1 && s != 1) {
    // The last two output axes are a transpose of the input's: copy tiles.
    const int64_t R = size[d - 2], C = inner, rt = (R + kTile - 1) / kTile;
    const int64_t outer = n / (R * C);
    parallel_for(0, outer * rt, std::max<int64_t>(1, kGrain / (kTile * C)), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t o = u / rt, r0 = (u % rt) * kTile, r1 = std::min(R, r0 + kTile);
        const E* src = in + offset_of(o, size, st, d - 2);
        E* dst = out + o * R * C;
        for (int64_t c0 = 0; c0 < C; c0 += kTile) {
          const int64_t c1 = std::min(C, c0 + kTile);
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) dst[r * C + c] = src[r + c * s];
        }
      }
    });
    return;
  }
  const int64_t rows = n / inner;
  parallel_for(0, rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const E* src = in + offset_of(r, size, st, d - 1);
      E* dst = out + r * inner;
      if (s == 1) std::memcpy(dst, src, static_cast<size_t>(inner) * sizeof(E));
      else
        for (int64_t j = 0; j < inner; ++j) dst[j] = src[j * s];
    }
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Plans (shape_plan.h), shared with the CUDA twins

void split_at(const Shape& s, int64_t axis, int64_t& A, int64_t& K, int64_t& B) {
  A = 1;
  B = 1;
  for (int64_t i = 0; i < axis; ++i) A *= s[static_cast<size_t>(i)];
  K = s[static_cast<size_t>(axis)];
  for (size_t i = static_cast<size_t>(axis) + 1; i < s.size(); ++i) B *= s[i];
}

PermutePlan plan_permute(const Shape& xs, const std::vector<int64_t>& dims) {
  std::vector<int64_t> p = norm_permutation(dims, xs, "permute");
  std::vector<int64_t> xst = strides_of(xs);
  Shape os(p.size());
  for (size_t i = 0; i < p.size(); ++i) os[i] = xs[static_cast<size_t>(p[i])];
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
  return {std::move(os), std::move(size), std::move(st)};
}

std::vector<int64_t> transpose_permutation(const Shape& s, int64_t axis0, int64_t axis1) {
  const int64_t rank = static_cast<int64_t>(s.size());
  const int64_t a0 = axis0 < 0 ? axis0 + rank : axis0, a1 = axis1 < 0 ? axis1 + rank : axis1;
  SEQLAB_CHECK(a0 >= 0 && a0 < rank && a1 >= 0 && a1 < rank, "transpose: axes (", axis0, ", ", axis1,
               ") out of range for a tensor of shape ", to_string(s));
  std::vector<int64_t> p(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) p[static_cast<size_t>(i)] = i;
  std::swap(p[static_cast<size_t>(a0)], p[static_cast<size_t>(a1)]);
  return p;
}

AxisPlan plan_flip(const Shape& xs, int64_t axis) {
  const int64_t rank = static_cast<int64_t>(xs.size());
  const int64_t ax = axis < 0 ? axis + rank : axis;
  SEQLAB_CHECK(ax >= 0 && ax < rank, "flip: axis ", axis, " out of range for a tensor of shape ", to_string(xs));
  AxisPlan p;
  p.axis = ax;
  split_at(xs, ax, p.A, p.K, p.B);
  p.out = xs;
  return p;
}

AxisPlan plan_slice(const Shape& xs, int64_t axis, int64_t start, int64_t end) {
  const int64_t rank = static_cast<int64_t>(xs.size());
  const int64_t ax = axis < 0 ? axis + rank : axis;
  SEQLAB_CHECK(ax >= 0 && ax < rank, "slice: axis ", axis, " out of range for a tensor of shape ", to_string(xs));
  const int64_t n = xs[static_cast<size_t>(ax)];
  const int64_t s = start < 0 ? start + n : start, e = end < 0 ? end + n : end;
  SEQLAB_CHECK(0 <= s && s <= e && e <= n, "slice: range [", start, ", ", end, ") out of bounds for axis ", axis,
               " of a tensor of shape ", to_string(xs));
  AxisPlan p;
  p.axis = ax;
  split_at(xs, ax, p.A, p.K, p.B);
  p.start = s;
  p.len = e - s;
  p.out = xs;
  p.out[static_cast<size_t>(ax)] = e - s;
  return p;
}

AxisPlan plan_slice_backward(const Shape& dys, const Shape& x_shape, int64_t axis, int64_t start) {
  const int64_t rank = static_cast<int64_t>(x_shape.size());
  const int64_t ax = axis < 0 ? axis + rank : axis;
  SEQLAB_CHECK(ax >= 0 && ax < rank && static_cast<int64_t>(dys.size()) == rank, "slice_backward: gradient ",
               to_string(dys), " does not fit ", to_string(x_shape), " along axis ", axis);
  AxisPlan p;
  p.axis = ax;
  split_at(x_shape, ax, p.A, p.K, p.B);
  const int64_t len = dys[static_cast<size_t>(ax)];
  const int64_t s = start < 0 ? start + p.K : start;
  SEQLAB_CHECK(0 <= s && s + len <= p.K && numel(dys) == p.A * len * p.B, "slice_backward: gradient ",
               to_string(dys), " does not fit ", to_string(x_shape), " at ", start, " along axis ", axis);
  p.start = s;
  p.len = len;
  p.out = x_shape;
  return p;
}

// ---------------------------------------------------------------------------------------------
// Kernels

Shape resolve_reshape(const Shape& from, const Shape& to, const char* op) {
  Shape r = to;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < r.size(); ++i) {
    if (r[i] == -1) {
      SEQLAB_CHECK(infer < 0, op, ": more than one -1 in ", to_string(to), " (reshaping ", to_string(from), ")");
      infer = static_cast<int64_t>(i);
    } else {
      SEQLAB_CHECK(r[i] >= 0, op, ": negative size in ", to_string(to), " (reshaping ", to_string(from), ")");
      known *= r[i];
    }
  }
  const int64_t n = numel(from);
  if (infer >= 0) {
    SEQLAB_CHECK(known > 0 && n % known == 0, op, ": cannot reshape ", to_string(from), " (", n, " elements) into ",
                 to_string(to));
    r[static_cast<size_t>(infer)] = n / known;
  }
  SEQLAB_CHECK(numel(r) == n, op, ": cannot reshape ", to_string(from), " (", n, " elements) into ", to_string(to));
  return r;
}

std::vector<int64_t> norm_permutation(const std::vector<int64_t>& dims, const Shape& shape, const char* op) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  SEQLAB_CHECK(static_cast<int64_t>(dims.size()) == rank, op, ": ", dims.size(), " axes given for a tensor of shape ",
               to_string(shape));
  std::vector<int64_t> p(dims.size());
  std::vector<char> seen(dims.size(), 0);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t a = dims[i] < 0 ? dims[i] + rank : dims[i];
    SEQLAB_CHECK(a >= 0 && a < rank, op, ": axis ", dims[i], " out of range for a tensor of shape ", to_string(shape));
    SEQLAB_CHECK(!seen[static_cast<size_t>(a)], op, ": axis ", dims[i], " repeated (shape ", to_string(shape), ")");
    seen[static_cast<size_t>(a)] = 1;
    p[i] = a;
  }
  return p;
}

std::vector<int64_t> inverse_permutation(const std::vector<int64_t>& p) {
  std::vector<int64_t> q(p.size());
  for (size_t i = 0; i < p.size(); ++i) q[static_cast<size_t>(p[i])] = static_cast<int64_t>(i);
  return q;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  if constexpr (kCuda) if (on_cuda("permute", x)) return cuda::permute(x, dims);
  const PermutePlan plan = plan_permute(x.shape(), dims);
  Tensor out = Tensor::empty(plan.out, x.dtype());
  if (out.numel() == 0) return out;
  if (plan.size.size() <= 1) {  // the order of elements does not change
    std::memcpy(out.raw_data(), x.raw_data(), x.nbytes());
    return out;
  }
  by_size(x.dtype(), [&]<typename E>() {
    strided_copy<E>(static_cast<const E*>(x.raw_data()), static_cast<E*>(out.raw_data()), plan.size, plan.st);
  });
  return out;
}

Tensor transpose(const Tensor& x, int64_t axis0, int64_t axis1) {
  if constexpr (kCuda) if (on_cuda("transpose", x)) return cuda::transpose(x, axis0, axis1);
  return permute(x, transpose_permutation(x.shape(), axis0, axis1));
}

Tensor flip(const Tensor& x, int64_t axis) {
  if constexpr (kCuda) if (on_cuda("flip", x)) return cuda::flip(x, axis);
  const AxisPlan p = plan_flip(x.shape(), axis);
  const int64_t A = p.A, K = p.K, B = p.B;
  Tensor out = Tensor::empty(p.out, x.dtype());
  const size_t row = static_cast<size_t>(B) * dtype_size(x.dtype());  // one position along axis: B elements
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  if (row == 0 || A * K == 0) return out;
  parallel_for(0, A * K, std::max<int64_t>(1, kGrain / std::max<int64_t>(B, 1)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t a = i / K, k = i % K;
      std::memcpy(dst + static_cast<size_t>(a * K + (K - 1 - k)) * row, src + static_cast<size_t>(i) * row, row);
    }
  });
  return out;
}

Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end) {
  if constexpr (kCuda) if (on_cuda("slice", x)) return cuda::slice(x, axis, start, end);
  const AxisPlan p = plan_slice(x.shape(), axis, start, end);
  const int64_t A = p.A, K = p.K, B = p.B, s = p.start, e = p.start + p.len;
  Tensor out = Tensor::empty(p.out, x.dtype());
  const size_t esz = dtype_size(x.dtype());
  const size_t chunk = static_cast<size_t>((e - s) * B) * esz;
  const char* src = static_cast<const char*>(x.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  if (chunk == 0) return out;
  parallel_for(0, A, std::max<int64_t>(1, kGrain / ((e - s) * B)), [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a)
      std::memcpy(dst + static_cast<size_t>(a) * chunk, src + static_cast<size_t>((a * K + s) * B) * esz, chunk);
  });
  return out;
}

Tensor slice_backward(const Tensor& dy, const Shape& x_shape, int64_t axis, int64_t start) {
  if constexpr (kCuda) if (on_cuda("slice_backward", dy)) return cuda::slice_backward(dy, x_shape, axis, start);
  const AxisPlan p = plan_slice_backward(dy.shape(), x_shape, axis, start);
  const int64_t A = p.A, K = p.K, B = p.B, s = p.start, len = p.len;
  Tensor dx = Tensor::zeros(p.out, dy.dtype());
  const size_t esz = dtype_size(dy.dtype());
  const size_t chunk = static_cast<size_t>(len * B) * esz;
  if (chunk == 0) return dx;
  const char* src = static_cast<const char*>(dy.raw_data());
  char* dst = static_cast<char*>(dx.raw_data());
  parallel_for(0, A, std::max<int64_t>(1, kGrain / (len * B)), [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a)
      std::memcpy(dst + static_cast<size_t>((a * K + s) * B) * esz, src + static_cast<size_t>(a) * chunk, chunk);
  });
  return dx;
}

ConcatShape concat_shape(const std::vector<Tensor>& xs, int64_t axis) {
  SEQLAB_CHECK(!xs.empty(), "concat: no tensors given");
  const Shape& s0 = xs[0].shape();
  const int64_t rank = static_cast<int64_t>(s0.size());
  const int64_t ax = axis < 0 ? axis + rank : axis;
  SEQLAB_CHECK(ax >= 0 && ax < rank, "concat: axis ", axis, " out of range for a tensor of shape ", to_string(s0));
  Shape os = s0;
  os[static_cast<size_t>(ax)] = 0;
  for (const Tensor& x : xs) {
    const Shape& s = x.shape();
    bool ok = s.size() == s0.size();
    for (size_t i = 0; ok && i < s.size(); ++i) ok = static_cast<int64_t>(i) == ax || s[i] == s0[i];
    SEQLAB_CHECK(ok, "concat: shapes ", to_string(s0), " and ", to_string(s), " differ outside axis ", axis);
    SEQLAB_CHECK(x.dtype() == xs[0].dtype(), "concat: dtypes ", dtype_name(xs[0].dtype()), " and ",
                 dtype_name(x.dtype()), " differ");
    os[static_cast<size_t>(ax)] += s[static_cast<size_t>(ax)];
  }
  return {os, ax};
}

std::vector<Tensor> split(const Tensor& x, int64_t ax, const std::vector<int64_t>& sizes) {
  if constexpr (kCuda) if (on_cuda("split", x)) return cuda::split(x, ax, sizes);
  std::vector<Tensor> ys;
  ys.reserve(sizes.size());
  int64_t off = 0;
  for (int64_t n : sizes) {
    ys.push_back(slice(x, ax, off, off + n));
    off += n;
  }
  return ys;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  if constexpr (kCuda) if (on_cuda("concat", xs)) return cuda::concat(xs, axis);
  const auto [os, ax] = concat_shape(xs, axis);
  Tensor out = Tensor::empty(os, xs[0].dtype());
  int64_t A, Ktot, B;
  split_at(os, ax, A, Ktot, B);
  const size_t esz = dtype_size(out.dtype());
  char* dst = static_cast<char*>(out.raw_data());
  int64_t off = 0;
  for (const Tensor& x : xs) {
    const int64_t k = x.shape()[static_cast<size_t>(ax)];
    const size_t chunk = static_cast<size_t>(k * B) * esz;
    const char* src = static_cast<const char*>(x.raw_data());
    if (chunk > 0)
      parallel_for(0, A, std::max<int64_t>(1, kGrain / (k * B)), [&](int64_t a0, int64_t a1) {
        for (int64_t a = a0; a < a1; ++a)
          std::memcpy(dst + static_cast<size_t>((a * Ktot + off) * B) * esz, src + static_cast<size_t>(a) * chunk,
                      chunk);
      });
    off += k;
  }
  return out;
}

}  // namespace seqlab::kernels
