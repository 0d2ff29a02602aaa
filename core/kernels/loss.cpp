// Loss kernels. Means are sums over fixed chunks (accumulated in double) added in chunk order, so a
// loss is bit-identical whatever the thread count. Huber follows torch.nn.HuberLoss:
// l(d) = d^2 / 2 for |d| < delta, else delta * (|d| - delta / 2); dl/dd = clamp(d, -delta, delta).
#include "core/kernels/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/cuda/nn.h"
#include "core/device.h"
#include "core/kernels/loss_check.h"
#include "core/parallel.h"

namespace seqlab::kernels {
namespace {

constexpr int64_t kChunk = 16384;  // elements per partial sum

template <typename T>
double point_value(PointLoss kind, T d, T delta) {
  switch (kind) {
    case PointLoss::mse: return static_cast<double>(d) * static_cast<double>(d);
    case PointLoss::l1: return std::abs(static_cast<double>(d));
    case PointLoss::huber: {
      double a = std::abs(static_cast<double>(d)), dl = static_cast<double>(delta);
      return a < dl ? 0.5 * a * a : dl * (a - 0.5 * dl);
    }
  }
  return 0;
}

template <typename T>
T point_grad(PointLoss kind, T d, T delta) {
  switch (kind) {
    case PointLoss::mse: return T(2) * d;
    case PointLoss::l1: return d > T(0) ? T(1) : d < T(0) ? T(-1) : T(0);
    case PointLoss::huber: return std::clamp(d, -delta, delta);
  }
  return T(0);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Checks (loss_check.h), shared with the CUDA twins

void check_point_loss(PointLoss kind, const Tensor& pred, const Tensor& target, double delta, const char* op) {
  SEQLAB_CHECK(pred.shape() == target.shape(), op, ": pred of shape ", to_string(pred.shape()),
               " and target of shape ", to_string(target.shape()), " differ");
  SEQLAB_CHECK(pred.dtype() == target.dtype(), op, ": pred is ", dtype_name(pred.dtype()), " but target is ",
               dtype_name(target.dtype()));
  SEQLAB_CHECK(kind != PointLoss::huber || delta > 0, op, ": delta must be > 0, got ", delta);
}

void check_cross_entropy(const Tensor& logits, const Tensor& targets) {
  SEQLAB_CHECK(logits.dim() == 2, "cross_entropy: logits must be (N, V), got shape ", to_string(logits.shape()));
  SEQLAB_CHECK(targets.dtype() == DType::i32, "cross_entropy: targets must be int32, got ",
               dtype_name(targets.dtype()));
  SEQLAB_CHECK(targets.shape() == Shape{logits.size(0)}, "cross_entropy: logits of shape ",
               to_string(logits.shape()), " need targets of shape (", logits.size(0), ",), got ",
               to_string(targets.shape()));
}

// ---------------------------------------------------------------------------------------------
// Kernels

Tensor point_loss_forward(PointLoss kind, const Tensor& pred, const Tensor& target, double delta, const char* op) {
  if constexpr (kCuda)
    if (on_cuda(op, pred, target)) return cuda::point_loss_forward(kind, pred, target, delta, op);
  check_point_loss(kind, pred, target, delta, op);
  Tensor out = Tensor::empty({}, pred.dtype());
  dispatch_float(pred.dtype(), op, [&]<typename T>() {
    const T* p = pred.data<T>();
    const T* t = target.data<T>();
    int64_t n = pred.numel();
    T dl = static_cast<T>(delta);
    double s = parallel_sum<double>(0, n, kChunk, [&](int64_t lo, int64_t hi) {
      double acc = 0;
      for (int64_t i = lo; i < hi; ++i) acc += point_value<T>(kind, p[i] - t[i], dl);
      return acc;
    });
    // The mean of nothing is NaN, as in PyTorch.
    out.data<T>()[0] = static_cast<T>(n > 0 ? s / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN());
  });
  return out;
}

std::array<Tensor, 2> point_loss_backward(PointLoss kind, const Tensor& dy, const Tensor& pred, const Tensor& target,
                                          double delta, bool need_pred, bool need_target) {
  if constexpr (kCuda)
    if (on_cuda("loss backward", dy, pred, target))
      return cuda::point_loss_backward(kind, dy, pred, target, delta, need_pred, need_target);
  std::array<Tensor, 2> g;
  if (!need_pred && !need_target) return g;
  if (need_pred) g[0] = Tensor::empty(pred.shape(), pred.dtype());
  if (need_target) g[1] = Tensor::empty(pred.shape(), pred.dtype());
  dispatch_float(pred.dtype(), "loss backward", [&]<typename T>() {
    const T* p = pred.data<T>();
    const T* t = target.data<T>();
    T* gp = need_pred ? g[0].data<T>() : nullptr;
    T* gt = need_target ? g[1].data<T>() : nullptr;
    int64_t n = pred.numel();
    T scale = static_cast<T>(dy.item() / static_cast<double>(std::max<int64_t>(n, 1)));
    T dl = static_cast<T>(delta);
    parallel_for(0, n, kChunk, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        T v = scale * point_grad<T>(kind, p[i] - t[i], dl);
        if (gp) gp[i] = v;
        if (gt) gt[i] = -v;
      }
    });
  });
  return g;
}

CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets, int ignore_index) {
  if constexpr (kCuda)
    if (on_cuda("cross_entropy", logits, targets)) return cuda::cross_entropy_forward(logits, targets, ignore_index);
  check_cross_entropy(logits, targets);
  const int64_t N = logits.size(0), V = logits.size(1);
  const int32_t* pt = targets.data<int32_t>();
  CrossEntropyForward r;
  for (int64_t i = 0; i < N; ++i) {
    if (pt[i] == ignore_index) continue;
    SEQLAB_CHECK(pt[i] >= 0 && pt[i] < V, "cross_entropy: target ", pt[i], " at row ", i,
                 " is out of range for V = ", V, " classes (expected 0 <= target < ", V, " or ignore_index ",
                 ignore_index, ")");
    ++r.count;
  }
  r.lse = Tensor::empty({N}, DType::f64);
  r.loss = Tensor::empty({}, logits.dtype());
  dispatch_float(logits.dtype(), "cross_entropy", [&]<typename T>() {
    const T* px = logits.data<T>();
    double* lse = r.lse.data<double>();
    double s = parallel_sum<double>(0, N, std::max<int64_t>(1, kChunk / std::max<int64_t>(V, 1)),
                                    [&](int64_t lo, int64_t hi) {
      double acc = 0;
      for (int64_t i = lo; i < hi; ++i) {
        const T* xi = px + i * V;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < V; ++j) m = std::max(m, static_cast<double>(xi[j]));
        double e = 0;
        for (int64_t j = 0; j < V; ++j) e += std::exp(static_cast<double>(xi[j]) - m);
        lse[i] = m + std::log(e);
        if (pt[i] != ignore_index) acc += lse[i] - static_cast<double>(xi[pt[i]]);
      }
      return acc;
    });
    // Every row ignored: loss 0 and zero gradients (PyTorch gives NaN, which would poison a step).
    r.loss.data<T>()[0] = static_cast<T>(r.count > 0 ? s / static_cast<double>(r.count) : 0.0);
  });
  return r;
}

Tensor cross_entropy_backward(const Tensor& dy, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t count, int ignore_index) {
  if constexpr (kCuda)
    if (on_cuda("cross_entropy backward", dy, logits, targets, lse))
      return cuda::cross_entropy_backward(dy, logits, targets, lse, count, ignore_index);
  const int64_t N = logits.size(0), V = logits.size(1);
  Tensor dx = Tensor::empty(logits.shape(), logits.dtype());
  dispatch_float(logits.dtype(), "cross_entropy", [&]<typename T>() {
    const T* px = logits.data<T>();
    const int32_t* pt = targets.data<int32_t>();
    const double* pl = lse.data<double>();
    T* pd = dx.data<T>();
    double scale = count > 0 ? dy.item() / static_cast<double>(count) : 0.0;
    parallel_for(0, N, std::max<int64_t>(1, kChunk / std::max<int64_t>(V, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        T* di = pd + i * V;
        if (pt[i] == ignore_index) {
          std::fill(di, di + V, T(0));
          continue;
        }
        const T* xi = px + i * V;
        for (int64_t j = 0; j < V; ++j) di[j] = static_cast<T>(scale * std::exp(static_cast<double>(xi[j]) - pl[i]));
        di[pt[i]] = static_cast<T>(scale * (std::exp(static_cast<double>(xi[pt[i]]) - pl[i]) - 1.0));
      }
    });
  });
  return dx;
}

}  // namespace seqlab::kernels
