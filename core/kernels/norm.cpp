// LayerNorm / RMSNorm over the last axis, one pass per row for the statistics (two-pass variance,
// in double, vectorised sums) and one for the output; backward recomputes xh from x and the saved mean / rstd.
// Row chunks have a size fixed by D alone, and weight/bias partials are added in chunk order, so
// gradients are bit-identical whatever the thread count.
#include "core/kernels/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cuda/nn.h"
#include "core/device.h"
#include "core/kernels/norm_check.h"
#include "core/parallel.h"

namespace seqlab::kernels {

// ---------------------------------------------------------------------------------------------
// Checks and the row plan (norm_check.h), shared with the CUDA twins

NormRows check_norm(const char* op, const Tensor& x, const Tensor& w, const Tensor& b) {
  SEQLAB_CHECK(x.dim() >= 1, op, ": input must have rank >= 1, got shape ", to_string(x.shape()));
  Shape d{x.size(-1)};
  for (const Tensor* p : {&w, &b}) {
    if (!p->defined()) continue;
    const char* what = p == &w ? "weight" : "bias";
    SEQLAB_CHECK(p->shape() == d, op, ": ", what, " of shape ", to_string(p->shape()), " does not fit input of shape ",
                 to_string(x.shape()), " (expected ", to_string(d), ")");
    SEQLAB_CHECK(p->dtype() == x.dtype(), op, ": ", what, " is ", dtype_name(p->dtype()), " but input is ",
                 dtype_name(x.dtype()));
  }
  const int64_t D = x.size(-1), R = D > 0 ? x.numel() / D : 0;
  return {D, R};
}

NormRows check_norm_backward(const char* op, const Tensor& dy, const Tensor& x) {
  SEQLAB_CHECK(dy.shape() == x.shape(), op, " backward: gradient of shape ", to_string(dy.shape()),
               " for an input of shape ", to_string(x.shape()));
  const int64_t D = x.size(-1), R = D > 0 ? x.numel() / D : 0;
  return {D, R};
}

int64_t norm_rows_per_chunk(int64_t D) { return std::max<int64_t>(16, 16384 / std::max<int64_t>(D, 1)); }

namespace {

// Row sums in double over 8 interleaved accumulators, added pairwise at the end: a fixed order
// (per row, so any thread count gives the same bits) that GCC vectorises, where one running double
// sum is a chain of dependent adds. f(j) gives the j-th term.
template <typename F>
[[gnu::always_inline]] inline double row_sum(int64_t D, F&& f) {
  constexpr int L = 8;
  double acc[L] = {};
  const int64_t D8 = D - D % L;
  for (int64_t j0 = 0; j0 < D8; j0 += L)
    for (int l = 0; l < L; ++l) acc[l] += f(j0 + l);
  for (int64_t j = D8; j < D; ++j) acc[j - D8] += f(j);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <bool kCenter>
NormForward norm_forward(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  const NormRows rows = check_norm(op, x, w, b);
  const int64_t D = rows.D, R = rows.R;
  NormForward f;
  f.y = Tensor::empty(x.shape(), x.dtype());
  if (kCenter) f.mean = Tensor::empty({R}, DType::f64);
  f.rstd = Tensor::empty({R}, DType::f64);
  dispatch_float(x.dtype(), op, [&]<typename T>() {
    const T* px = x.data<T>();
    const T* pw = w.defined() ? w.data<T>() : nullptr;
    const T* pb = b.defined() ? b.data<T>() : nullptr;
    T* py = f.y.data<T>();
    double* pm = kCenter ? f.mean.data<double>() : nullptr;
    double* pr = f.rstd.data<double>();
    parallel_for(0, R, norm_rows_per_chunk(D), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const T* xr = px + r * D;
        T* yr = py + r * D;
        double mean = 0;
        if constexpr (kCenter) {
          mean = row_sum(D, [&](int64_t j) { return static_cast<double>(xr[j]); }) / static_cast<double>(D);
          pm[r] = mean;
        }
        const double ss = row_sum(D, [&](int64_t j) {
          const double c = static_cast<double>(xr[j]) - mean;
          return c * c;
        });
        double rstd = 1.0 / std::sqrt(ss / static_cast<double>(D) + eps);
        pr[r] = rstd;
        T m = static_cast<T>(mean), s = static_cast<T>(rstd);
        for (int64_t j = 0; j < D; ++j) {
          T v = (xr[j] - m) * s;
          if (pw) v *= pw[j];
          if (pb) v += pb[j];
          yr[j] = v;
        }
      }
    });
  });
  return f;
}

template <bool kCenter>
std::array<Tensor, 3> norm_backward(const char* op, const Tensor& dy, const Tensor& x, const Tensor& w,
                                    const Tensor& mean, const Tensor& rstd, bool need_dx, bool need_dw,
                                    bool need_db) {
  const NormRows rows = check_norm_backward(op, dy, x);
  const int64_t D = rows.D, R = rows.R;
  std::array<Tensor, 3> g;
  if (need_dx) g[0] = Tensor::empty(x.shape(), x.dtype());
  const int64_t chunk = norm_rows_per_chunk(D), n_chunks = (R + chunk - 1) / chunk;
  // Per-chunk partials of dw and db, added in chunk order below.
  std::vector<double> pdw(need_dw ? static_cast<size_t>(n_chunks * D) : 0, 0.0);
  std::vector<double> pdb(need_db ? static_cast<size_t>(n_chunks * D) : 0, 0.0);
  dispatch_float(x.dtype(), op, [&]<typename T>() {
    const T* px = x.data<T>();
    const T* pg = dy.data<T>();
    const T* pw = w.defined() ? w.data<T>() : nullptr;
    const double* pm = kCenter ? mean.data<double>() : nullptr;
    const double* pr = rstd.data<double>();
    T* pdx = need_dx ? g[0].data<T>() : nullptr;
    parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double* dw = need_dw ? pdw.data() + c * D : nullptr;
        double* db = need_db ? pdb.data() + c * D : nullptr;
        for (int64_t r = c * chunk, r1 = std::min(R, r + chunk); r < r1; ++r) {
          const T* xr = px + r * D;
          const T* gr = pg + r * D;
          double m = kCenter ? pm[r] : 0.0, s = pr[r];
          if (dw)
            for (int64_t j = 0; j < D; ++j) dw[j] += static_cast<double>(gr[j]) * (static_cast<double>(xr[j]) - m) * s;
          if (db)
            for (int64_t j = 0; j < D; ++j) db[j] += static_cast<double>(gr[j]);
          if (!pdx) continue;
          // Sums of g and g * xh over the row.
          double sum_g = 0, sum_gx = 0;
          auto sums = [&](auto gw) {  // gw(j): g times the weight; one instance per case, so both vectorise
            if (kCenter) sum_g = row_sum(D, gw);
            sum_gx = row_sum(D, [&](int64_t j) { return gw(j) * (static_cast<double>(xr[j]) - m) * s; });
          };
          if (pw) sums([&](int64_t j) { return static_cast<double>(gr[j]) * static_cast<double>(pw[j]); });
          else sums([&](int64_t j) { return static_cast<double>(gr[j]); });
          T mg = kCenter ? static_cast<T>(sum_g / static_cast<double>(D)) : T(0);
          T mgx = static_cast<T>(sum_gx / static_cast<double>(D));
          T tm = static_cast<T>(m), ts = static_cast<T>(s);
          T* dxr = pdx + r * D;
          for (int64_t j = 0; j < D; ++j) {
            T gj = pw ? gr[j] * pw[j] : gr[j];
            T xh = (xr[j] - tm) * ts;
            dxr[j] = ts * (gj - mg - xh * mgx);
          }
        }
      }
    });
    auto reduce = [&](const std::vector<double>& part) {
      Tensor out = Tensor::empty({D}, x.dtype());
      T* po = out.data<T>();
      for (int64_t j = 0; j < D; ++j) {
        double s = 0;
        for (int64_t c = 0; c < n_chunks; ++c) s += part[static_cast<size_t>(c * D + j)];
        po[j] = static_cast<T>(s);
      }
      return out;
    };
    if (need_dw) g[1] = reduce(pdw);
    if (need_db) g[2] = reduce(pdb);
  });
  return g;
}

}  // namespace

NormForward layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  if constexpr (kCuda) if (on_cuda("layer_norm", x, w, b)) return cuda::layer_norm_forward(x, w, b, eps);
  return norm_forward<true>("layer_norm", x, w, b, eps);
}

std::array<Tensor, 3> layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean,
                                          const Tensor& rstd, bool need_dx, bool need_dw, bool need_db) {
  if constexpr (kCuda)
    if (on_cuda("layer_norm backward", dy, x, w, mean, rstd))
      return cuda::layer_norm_backward(dy, x, w, mean, rstd, need_dx, need_dw, need_db);
  return norm_backward<true>("layer_norm", dy, x, w, mean, rstd, need_dx, need_dw, need_db);
}

NormForward rms_norm_forward(const Tensor& x, const Tensor& w, double eps) {
  if constexpr (kCuda) if (on_cuda("rms_norm", x, w)) return cuda::rms_norm_forward(x, w, eps);
  return norm_forward<false>("rms_norm", x, w, Tensor(), eps);
}

std::array<Tensor, 2> rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                                        bool need_dx, bool need_dw) {
  if constexpr (kCuda)
    if (on_cuda("rms_norm backward", dy, x, w, rstd)) return cuda::rms_norm_backward(dy, x, w, rstd, need_dx, need_dw);
  auto g = norm_backward<false>("rms_norm", dy, x, w, Tensor(), rstd, need_dx, need_dw, false);
  return {g[0], g[1]};
}

Tensor dropout_mask(const Shape& shape, DType dtype, double p, Generator& gen) {
  SEQLAB_CHECK(p >= 0 && p <= 1, "dropout: p must be in [0, 1], got ", p);
  Tensor mask = Tensor::empty(shape, dtype);
  dispatch_float(dtype, "dropout", [&]<typename T>() {
    T keep = p < 1 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
    T* pm = mask.data<T>();
    // Sequential on purpose: one generator stream, so the mask depends on the seed alone.
    for (int64_t i = 0, n = mask.numel(); i < n; ++i) pm[i] = gen.uniform() < p ? T(0) : keep;
  });
  return mask;
}

Tensor dropout_mask(const Shape& shape, DType dtype, double p, Generator& gen, Device device) {
  if constexpr (kCuda)
    if (device == Device::cuda) return cuda::dropout_mask(shape, dtype, p, gen);
  return dropout_mask(shape, dtype, p, gen);
}

Tensor apply_mask(const Tensor& x, const Tensor& mask) {
  if constexpr (kCuda) if (on_cuda("dropout", x, mask)) return cuda::apply_mask(x, mask);
  SEQLAB_CHECK(x.shape() == mask.shape() && x.dtype() == mask.dtype(), "dropout: mask of shape ",
               to_string(mask.shape()), " for a tensor of shape ", to_string(x.shape()));
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "dropout", [&]<typename T>() {
    const T* px = x.data<T>();
    const T* pm = mask.data<T>();
    T* py = y.data<T>();
    parallel_for(0, x.numel(), 32768, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) py[i] = px[i] * pm[i];
    });
  });
  return y;
}

}  // namespace seqlab::kernels
