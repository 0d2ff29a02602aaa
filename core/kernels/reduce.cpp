// Reduction kernels. Every reduction is planned as (A, K, B) -> (A, B), summing over the middle
// axis, after merging adjacent reduced / kept axes; several separated reduced groups are reduced
// one at a time, innermost first. The summation order is a function of the shape only:
//   contiguous rows (B == 1): 16 lane accumulators over blocks of 1024, blocks added in order into
//     chunks of 32768, chunk partials added in order;
//   columns (B > 1): blocks of 128 rows summed per column, added in order into row chunks of about
//     32768 elements, chunk partials added in order.
// Parallel tasks only ever own whole chunks, so results are bit-identical for any thread count.
// Float sums accumulate in float (as PyTorch does); the cascade keeps the error near sqrt(n) eps.
#include "core/kernels/reduce.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/cuda/reduce.h"
#include "core/device.h"
#include "core/kernels/elementwise.h"
#include "core/kernels/loops.h"
#include "core/kernels/reduce_plan.h"

namespace seqlab::kernels {
namespace {

constexpr int kLanes = 16;
constexpr int64_t kLaneBlock = 1024;
constexpr int64_t kRowChunk = 32768;
constexpr int64_t kColTile = 256;
constexpr int64_t kRowBlock = 128;

// Sum of load(0..n) with independent lane accumulators, so it vectorises without reassociation,
// folded by a fixed tree.
template <typename Acc, typename L>
inline Acc lane_sum(int64_t lo, int64_t hi, const L& load) {
  Acc acc[kLanes] = {};
  int64_t i = lo;
  for (; i + kLanes <= hi; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += load(i + j);
  for (int j = 0; i + j < hi; ++j) acc[j] += load(i + j);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// Sum of load(0..n) for one contiguous row (see the file comment for the order).
template <typename Acc, typename L>
Acc row_sum(int64_t n, const L& load) {
  return parallel_sum<Acc>(0, n, kRowChunk, [&](int64_t lo, int64_t hi) {
    Acc s(0);
    for (int64_t b = lo; b < hi; b += kLaneBlock) s += lane_sum<Acc>(b, std::min(hi, b + kLaneBlock), load);
    return s;
  });
}

// dst[j] = sum over rows [k0, k1) of load(k * B + c0 + j), j < w <= kColTile, in row blocks.
template <typename T, typename L>
void col_block_sum(const L& load, int64_t B, int64_t k0, int64_t k1, int64_t c0, int64_t w, T* dst) {
  T tot[kColTile] = {};
  T blk[kColTile];
  for (int64_t kb = k0; kb < k1; kb += kRowBlock) {
    const int64_t ke = std::min(k1, kb + kRowBlock);
    for (int64_t j = 0; j < w; ++j) blk[j] = T(0);
    for (int64_t k = kb; k < ke; ++k) {
      const int64_t base = k * B + c0;
      for (int64_t j = 0; j < w; ++j) blk[j] += load(base + j);
    }
    for (int64_t j = 0; j < w; ++j) tot[j] += blk[j];
  }
  for (int64_t j = 0; j < w; ++j) dst[j] = tot[j];
}

// out[j] = sum_k load(k * B + j) for a (K, B) block (see the file comment for the order).
template <typename T, typename L>
void col_sum(int64_t K, int64_t B, const L& load, T* out) {
  if (K == 0) {
    std::fill_n(out, B, T(0));
    return;
  }
  const int64_t rows = std::max(kRowBlock, (kRowChunk / B + kRowBlock - 1) / kRowBlock * kRowBlock);
  const int64_t n_chunks = (K + rows - 1) / rows;
  const int64_t n_tiles = (B + kColTile - 1) / kColTile;
  if (n_chunks == 1) {
    parallel_for(0, n_tiles, std::max<int64_t>(1, kRowChunk / (K * kColTile)), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t c0 = t * kColTile;
        col_block_sum<T>(load, B, 0, K, c0, std::min(kColTile, B - c0), out + c0);
      }
    });
    return;
  }
  std::vector<T> part(static_cast<size_t>(n_chunks * B));
  parallel_for(0, n_chunks * n_tiles, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t c = u / n_tiles, c0 = (u % n_tiles) * kColTile;
      col_block_sum<T>(load, B, c * rows, std::min(K, (c + 1) * rows), c0, std::min(kColTile, B - c0),
                       part.data() + c * B + c0);
    }
  });
  parallel_for(0, B, std::max<int64_t>(1, kGrain / n_chunks), [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) out[j] = part[static_cast<size_t>(j)];
    for (int64_t c = 1; c < n_chunks; ++c) {
      const T* p = part.data() + c * B;
      for (int64_t j = j0; j < j1; ++j) out[j] += p[j];
    }
  });
}

// dst[a, b] = sum_k src[a, k, b].
template <typename T>
void reduce_mid(const T* src, T* dst, int64_t A, int64_t K, int64_t B) {
  const int64_t per = std::max<int64_t>(1, K * B);
  parallel_for(0, A, std::max<int64_t>(1, kGrain / per), [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a) {
      const T* p = src + a * K * B;
      auto load = [p](int64_t i) { return p[i]; };
      if (B == 1) dst[a] = row_sum<T>(K, load);
      else col_sum<T>(K, B, load, dst + a * B);
    }
  });
}

// out = sum of x (shape xs) over the sorted axes; out holds numel(xs) / prod(reduced sizes) elements.
template <typename T>
void sum_impl(const T* x, const Shape& xs, const std::vector<int64_t>& axes, T* out) {
  const int64_t n = numel(xs);
  if (n == 0) {
    int64_t on = 1;
    for (size_t i = 0; i < xs.size(); ++i)
      if (!std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(i))) on *= xs[i];
    std::fill_n(out, on, T(0));
    return;
  }
  const std::vector<SumStep> steps = plan_sum(xs, axes);
  if (steps.empty()) {
    std::memcpy(out, x, static_cast<size_t>(n) * sizeof(T));
    return;
  }
  std::vector<T> buf[2];
  const T* src = x;
  for (size_t step = 0; step < steps.size(); ++step) {
    const SumStep& st = steps[step];
    T* dst = out;
    if (step + 1 < steps.size()) {
      buf[step % 2].resize(static_cast<size_t>(st.A * st.B));
      dst = buf[step % 2].data();
    }
    reduce_mid<T>(src, dst, st.A, st.K, st.B);
    src = dst;
  }
}

Tensor sum_into(const Tensor& x, const std::vector<int64_t>& axes, const Shape& out_shape, const char* op) {
  Tensor out = Tensor::empty(out_shape, x.dtype());
  dispatch_float(x.dtype(), op, [&]<typename T>() { sum_impl<T>(x.data<T>(), x.shape(), axes, out.data<T>()); });
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Plans (reduce_plan.h), shared with the CUDA twins

std::vector<SumStep> plan_sum(const Shape& xs, const std::vector<int64_t>& axes) {
  std::vector<int64_t> size;
  std::vector<char> red;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i] == 1) continue;
    const char r = std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(i));
    if (!size.empty() && red.back() == r) size.back() *= xs[i];
    else {
      size.push_back(xs[i]);
      red.push_back(r);
    }
  }
  std::vector<SumStep> steps;
  while (std::count(red.begin(), red.end(), char(1)) > 0) {
    const size_t g = static_cast<size_t>(std::find(red.rbegin(), red.rend(), char(1)).base() - red.begin()) - 1;
    int64_t A = 1, B = 1;
    for (size_t i = 0; i < g; ++i) A *= size[i];
    for (size_t i = g + 1; i < size.size(); ++i) B *= size[i];
    steps.push_back({A, size[g], B});
    size.erase(size.begin() + static_cast<std::ptrdiff_t>(g));
    red.erase(red.begin() + static_cast<std::ptrdiff_t>(g));
  }
  return steps;
}

bool sums_leading_rows(const Shape& s, const Shape& target) {
  size_t t0 = 0;
  while (t0 < target.size() && target[t0] == 1) ++t0;
  const size_t tail = target.size() - t0;
  bool leading = tail <= s.size();
  for (size_t i = 0; leading && i < tail; ++i) leading = target[t0 + i] == s[s.size() - tail + i];
  return leading && target.size() <= s.size();
}

AxisPlan plan_max(const Shape& xs, int64_t axis, bool keepdim) {
  AxisPlan p;
  p.axis = norm_axes({axis}, xs, "max")[0];
  split_at(xs, p.axis, p.A, p.K, p.B);
  SEQLAB_CHECK(p.K > 0, "max: axis ", axis, " has size 0 in shape ", to_string(xs));
  p.out = reduced_shape(xs, {p.axis}, keepdim);
  return p;
}

AxisPlan plan_max_backward(const Tensor& dy, const Tensor& indices, const Shape& x_shape, int64_t axis) {
  AxisPlan p;
  p.axis = norm_axes({axis}, x_shape, "max_backward")[0];
  split_at(x_shape, p.axis, p.A, p.K, p.B);
  SEQLAB_CHECK(dy.numel() == p.A * p.B && indices.numel() == p.A * p.B, "max_backward: gradient of shape ",
               to_string(dy.shape()), " does not match ", to_string(x_shape), " reduced over axis ", axis);
  p.out = x_shape;
  return p;
}

// ---------------------------------------------------------------------------------------------
// Kernels

std::vector<int64_t> norm_axes(const std::vector<int64_t>& axes, const Shape& shape, const char* op) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  std::vector<int64_t> r;
  r.reserve(axes.size());
  for (int64_t a : axes) {
    const int64_t n = a < 0 ? a + rank : a;
    SEQLAB_CHECK(n >= 0 && n < rank, op, ": axis ", a, " out of range for a tensor of shape ", to_string(shape));
    r.push_back(n);
  }
  std::sort(r.begin(), r.end());
  SEQLAB_CHECK(std::adjacent_find(r.begin(), r.end()) == r.end(), op, ": an axis is repeated in the axes for a tensor of shape ",
               to_string(shape));
  return r;
}

Shape reduced_shape(const Shape& x, const std::vector<int64_t>& axes, bool keepdim) {
  Shape s;
  for (size_t i = 0; i < x.size(); ++i) {
    const bool r = std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(i));
    if (!r) s.push_back(x[i]);
    else if (keepdim) s.push_back(1);
  }
  return s;
}

Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  if constexpr (kCuda) if (on_cuda("sum", x)) return cuda::sum(x, axes, keepdim);
  std::vector<int64_t> ax = norm_axes(axes, x.shape(), "sum");
  return sum_into(x, ax, reduced_shape(x.shape(), ax, keepdim), "sum");
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  if constexpr (kCuda) if (on_cuda("mean", x)) return cuda::mean(x, axes, keepdim);
  std::vector<int64_t> ax = norm_axes(axes, x.shape(), "mean");
  Tensor s = sum_into(x, ax, reduced_shape(x.shape(), ax, keepdim), "mean");
  int64_t cnt = 1;
  for (int64_t a : ax) cnt *= x.shape()[static_cast<size_t>(a)];
  scale_(s, 1.0 / static_cast<double>(cnt));
  return s;
}

Tensor sum_all(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("sum", x)) return cuda::sum_all(x);
  Tensor out = Tensor::empty({}, x.dtype());
  dispatch_float(x.dtype(), "sum", [&]<typename T>() {
    const T* p = x.data<T>();
    out.data<T>()[0] = row_sum<T>(x.numel(), [p](int64_t i) { return p[i]; });
  });
  return out;
}

Tensor mean_all(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("mean", x)) return cuda::mean_all(x);
  Tensor s = sum_all(x);
  scale_(s, 1.0 / static_cast<double>(x.numel()));
  return s;
}

double sum_squares(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("sum_squares", x)) return cuda::sum_squares(x);
  return dispatch_float(x.dtype(), "sum_squares", [&]<typename T>() {
    const T* p = x.data<T>();
    return row_sum<double>(x.numel(), [p](int64_t i) {
      const double v = static_cast<double>(p[i]);
      return v * v;
    });
  });
}

std::vector<int64_t> sum_to_axes(const Shape& gs, const Shape& target) {
  SEQLAB_CHECK(target.size() <= gs.size(), "sum_to: cannot reduce ", to_string(gs), " to ", to_string(target));
  const size_t lead = gs.size() - target.size();
  std::vector<int64_t> axes;
  for (size_t i = 0; i < gs.size(); ++i) {
    if (i < lead) {
      axes.push_back(static_cast<int64_t>(i));
      continue;
    }
    const int64_t t = target[i - lead];
    SEQLAB_CHECK(t == gs[i] || t == 1, "sum_to: cannot reduce ", to_string(gs), " to ", to_string(target));
    if (t != gs[i]) axes.push_back(static_cast<int64_t>(i));
  }
  return axes;
}

Tensor sum_to(const Tensor& g, const Shape& target) {
  if constexpr (kCuda) if (on_cuda("sum_to", g)) return cuda::sum_to(g, target);
  const Shape& gs = g.shape();
  if (gs == target) return g;
  return sum_into(g, kernels::sum_to_axes(gs, target), target, "sum_to");
}

Tensor mul_sum_to(const Tensor& a, const Tensor& b, const Shape& target) {
  if constexpr (kCuda) if (on_cuda("mul_sum_to", a, b)) return cuda::mul_sum_to(a, b, target);
  if (!(a.shape() == b.shape() && a.dtype() == b.dtype())) return sum_to(mul(a, b), target);
  const Shape& s = a.shape();
  if (s == target) return mul(a, b);
  if (!sums_leading_rows(s, target)) return sum_to(mul(a, b), target);
  Tensor out = Tensor::empty(target, a.dtype());
  const int64_t B = numel(target), K = B == 0 ? 0 : a.numel() / B;
  dispatch_float(a.dtype(), "mul_sum_to", [&]<typename T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    auto load = [pa, pb](int64_t i) { return pa[i] * pb[i]; };
    if (B == 1) out.data<T>()[0] = row_sum<T>(K, load);
    else if (B > 0) col_sum<T>(K, B, load, out.data<T>());
  });
  return out;
}

MaxResult max(const Tensor& x, int64_t axis, bool keepdim) {
  if constexpr (kCuda) if (on_cuda("max", x)) return cuda::max(x, axis, keepdim);
  const AxisPlan p = plan_max(x.shape(), axis, keepdim);
  const int64_t A = p.A, K = p.K, B = p.B;
  MaxResult r{Tensor::empty(p.out, x.dtype()), Tensor::empty(p.out, DType::i32)};
  dispatch_float(x.dtype(), "max", [&]<typename T>() {
    const T* px = x.data<T>();
    T* pv = r.values.data<T>();
    int32_t* pi = r.indices.data<int32_t>();
    // Strictly greater keeps the first maximum; a NaN wins once and is never displaced.
    auto better = [](T v, T best) { return v > best || (v != v && best == best); };
    parallel_for(0, A, std::max<int64_t>(1, kGrain / (K * std::max<int64_t>(B, 1))), [&](int64_t a0, int64_t a1) {
      for (int64_t a = a0; a < a1; ++a) {
        const T* p = px + a * K * B;
        T* v = pv + a * B;
        int32_t* id = pi + a * B;
        for (int64_t j = 0; j < B; ++j) {
          v[j] = p[j];
          id[j] = 0;
        }
        for (int64_t k = 1; k < K; ++k) {
          const T* row = p + k * B;
          for (int64_t j = 0; j < B; ++j)
            if (better(row[j], v[j])) {
              v[j] = row[j];
              id[j] = static_cast<int32_t>(k);
            }
        }
      }
    });
  });
  return r;
}

Tensor max_backward(const Tensor& dy, const Tensor& indices, const Shape& x_shape, int64_t axis) {
  if constexpr (kCuda) if (on_cuda("max_backward", dy, indices)) return cuda::max_backward(dy, indices, x_shape, axis);
  const AxisPlan p = plan_max_backward(dy, indices, x_shape, axis);
  const int64_t A = p.A, K = p.K, B = p.B;
  Tensor dx = Tensor::zeros(p.out, dy.dtype());
  dispatch_float(dy.dtype(), "max_backward", [&]<typename T>() {
    const T* pg = dy.data<T>();
    const int32_t* pi = indices.data<int32_t>();
    T* pd = dx.data<T>();
    parallel_for(0, A, std::max<int64_t>(1, kGrain / std::max<int64_t>(B, 1)), [&](int64_t a0, int64_t a1) {
      for (int64_t a = a0; a < a1; ++a)
        for (int64_t j = 0; j < B; ++j) pd[(a * K + pi[a * B + j]) * B + j] = pg[a * B + j];
    });
  });
  return dx;
}

}  // namespace seqlab::kernels
