// Unary maths kernels: one flat parallel map per function (core/kernels/loops.h), the maths in a
// generic lambda so float and double share it. Derivatives use the output where that is cheaper.
#include "core/kernels/unary.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "core/cuda/unary.h"
#include "core/device.h"
#include "core/kernels/activation_vec.h"
#include "core/kernels/loops.h"
#include "core/kernels/vmath.h"

namespace seqlab::kernels {
namespace {

// The float maths are branch-free so these loops vectorise (core/kernels/vmath.h).
using vmath::exp_of;
using vmath::tanh_of;
using vmath::sigmoid_of;
using vmath::erf_of;
}  // namespace

Tensor exp_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("exp", x)) return cuda::exp_forward(x);
  return unary_map(x, "exp", [](auto v) { return exp_of(v); });
}
Tensor exp_backward(const Tensor& dy, const Tensor& y) {
  if constexpr (kCuda) if (on_cuda("exp_backward", dy, y)) return cuda::exp_backward(dy, y);
  return binary_map(dy, y, "exp_backward", [](auto g, auto v) { return g * v; });
}

Tensor log_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("log", x)) return cuda::log_forward(x);
  return unary_map(x, "log", [](auto v) { return std::log(v); });
}
Tensor log_backward(const Tensor& dy, const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("log_backward", dy, x)) return cuda::log_backward(dy, x);
  return binary_map(dy, x, "log_backward", [](auto g, auto v) { return g / v; });
}

Tensor sqrt_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("sqrt", x)) return cuda::sqrt_forward(x);
  return unary_map(x, "sqrt", [](auto v) { return std::sqrt(v); });
}
Tensor sqrt_backward(const Tensor& dy, const Tensor& y) {
  if constexpr (kCuda) if (on_cuda("sqrt_backward", dy, y)) return cuda::sqrt_backward(dy, y);
  return binary_map(dy, y, "sqrt_backward", [](auto g, auto v) { return g / (v + v); });
}

Tensor tanh_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("tanh", x)) return cuda::tanh_forward(x);
  return unary_map(x, "tanh", [](auto v) { return tanh_of(v); });
}
Tensor tanh_backward(const Tensor& dy, const Tensor& y) {
  if constexpr (kCuda) if (on_cuda("tanh_backward", dy, y)) return cuda::tanh_backward(dy, y);
  return binary_map(dy, y, "tanh_backward", [](auto g, auto v) { return g * (decltype(v)(1) - v * v); });
}

Tensor sigmoid_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("sigmoid", x)) return cuda::sigmoid_forward(x);
  return unary_map(x, "sigmoid", [](auto v) { return sigmoid_of(v); });
}
Tensor sigmoid_backward(const Tensor& dy, const Tensor& y) {
  if constexpr (kCuda) if (on_cuda("sigmoid_backward", dy, y)) return cuda::sigmoid_backward(dy, y);
  return binary_map(dy, y, "sigmoid_backward", [](auto g, auto v) { return g * v * (decltype(v)(1) - v); });
}

Tensor silu_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("silu", x)) return cuda::silu_forward(x);
  return unary_map(x, "silu", [](auto v) { return v * sigmoid_of(v); });
}
Tensor silu_backward(const Tensor& dy, const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("silu_backward", dy, x)) return cuda::silu_backward(dy, x);
  return binary_map(dy, x, "silu_backward", [](auto g, auto v) {
    using T = decltype(v);
    T s = sigmoid_of(v);
    return g * s * (T(1) + v * (T(1) - s));
  });
}

// float32 runs the explicit vector loops of core/kernels/activation_vec.cpp on the ISA path in use.
Tensor gelu_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("gelu", x)) return cuda::gelu_forward(x);
  if (x.dtype() == DType::f32) {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    gelu_forward_f32(x.data<float>(), y.data<float>(), x.numel());
    return y;
  }
  return unary_map(x, "gelu", [](auto v) {
    using T = decltype(v);
    return T(0.5) * v * (T(1) + erf_of(v * T(M_SQRT1_2)));
  });
}
Tensor gelu_backward(const Tensor& dy, const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("gelu_backward", dy, x)) return cuda::gelu_backward(dy, x);
  if (x.dtype() == DType::f32 && dy.dtype() == DType::f32 && dy.shape() == x.shape()) {
    Tensor dx = Tensor::empty(x.shape(), x.dtype());
    gelu_backward_f32(dy.data<float>(), x.data<float>(), dx.data<float>(), x.numel());
    return dx;
  }
  return binary_map(dy, x, "gelu_backward", [](auto g, auto v) {
    using T = decltype(v);
    T e;  // e^{-v^2/2}, from the erf's own exponential
    const T cdf = T(0.5) * (T(1) + vmath::erf_exp_of(v * T(M_SQRT1_2), e));
    const T pdf = T(0.5 * M_2_SQRTPI * M_SQRT1_2) * e;  // 1/sqrt(2 pi) e^{-v^2/2}
    return g * (cdf + v * pdf);
  });
}

Tensor softplus_forward(const Tensor& x, double threshold) {
  if constexpr (kCuda) if (on_cuda("softplus", x)) return cuda::softplus_forward(x, threshold);
  return unary_map(x, "softplus", [threshold](auto v) {
    using T = decltype(v);
    return v > T(threshold) ? v : std::log1p(std::exp(v));
  });
}
Tensor softplus_backward(const Tensor& dy, const Tensor& x, double threshold) {
  if constexpr (kCuda) if (on_cuda("softplus_backward", dy, x)) return cuda::softplus_backward(dy, x, threshold);
  return binary_map(dy, x, "softplus_backward", [threshold](auto g, auto v) {
    using T = decltype(v);
    return v > T(threshold) ? g : g * sigmoid_of(v);
  });
}

Tensor relu_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("relu", x)) return cuda::relu_forward(x);
  return unary_map(x, "relu", [](auto v) { return v < decltype(v)(0) ? decltype(v)(0) : v; });  // NaN passes
}
Tensor relu_backward(const Tensor& dy, const Tensor& y) {
  if constexpr (kCuda) if (on_cuda("relu_backward", dy, y)) return cuda::relu_backward(dy, y);
  return binary_map(dy, y, "relu_backward", [](auto g, auto v) { return v > decltype(v)(0) ? g : decltype(v)(0); });
}

Tensor abs_forward(const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("abs", x)) return cuda::abs_forward(x);
  return unary_map(x, "abs", [](auto v) { return std::abs(v); });
}
Tensor abs_backward(const Tensor& dy, const Tensor& x) {
  if constexpr (kCuda) if (on_cuda("abs_backward", dy, x)) return cuda::abs_backward(dy, x);
  return binary_map(dy, x, "abs_backward", [](auto g, auto v) {
    using T = decltype(v);
    return v > T(0) ? g : (v < T(0) ? -g : T(0));
  });
}

}  // namespace seqlab::kernels
