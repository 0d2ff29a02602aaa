// s4d_kernel, conv_skip_gelu and glu over core/kernels/s4d (fused forward, hand-written backward),
// and their composite references from primitive ops. The kernel's reference needs sin and cos, which
// are not primitive ops in seqlab, so two tiny local ops (with their derivatives) live here.
#include "autograd/ops/s4d.h"

#include <cmath>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/ops/long_conv.h"
#include "core/kernels/long_conv.h"
#include "core/kernels/loops.h"
#include "core/kernels/s4d.h"
#include "core/kernels/unary.h"

namespace seqlab {

// K = Vandermonde(C', exp(dtA));  gradients: see kernels::s4d_kernel_backward (stores only the parameters)
Tensor s4d_kernel(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                  int64_t T) {
  Tensor K = kernels::s4d_kernel_forward(log_dt, log_A_real, A_imag, C, T);
  return record("s4d_kernel", K, {log_dt, log_A_real, A_imag, C},
                [log_dt = log_dt.detach(), log_A_real = log_A_real.detach(), A_imag = A_imag.detach(),
                 C = C.detach()](const Tensor& dK) {
                  auto g = kernels::s4d_kernel_backward(dK, log_dt, log_A_real, A_imag, C);
                  return grads{g.dlog_dt, g.dlog_A_real, g.dA_imag, g.dC};
                });
}

// The two ops of S4D's output path replace a chain of elementwise ops and slice copies that cost about
// a fifth of a training step once the convolution was fast (docs/BENCHMARKS.md, "S4D output path").

// h = gelu(causal_conv(x, K) + x ⊙ D);  dpre = dh gelu'(pre), (dx, dK) = conv backward of dpre,
// dx += dpre ⊙ D, dD = Σ_{b,t} dpre ⊙ x  (stores x, K and pre)
Tensor conv_skip_gelu(const Tensor& x, const Tensor& K, const Tensor& D_skip) {
  kernels::SkipGelu r = kernels::s4d_skip_gelu_forward(kernels::causal_conv_forward(x, K), x, D_skip);
  const bool need_x = x.requires_grad(), need_K = K.requires_grad(), need_D = D_skip.requires_grad();
  return record("s4d_conv_skip_gelu", r.h, {x, K, D_skip},
                [x = x.detach(), K = K.detach(), D_skip = D_skip.detach(), pre = r.pre, need_x, need_K,
                 need_D](const Tensor& dh) {
                  Tensor dpre = kernels::gelu_backward(dh, pre);
                  kernels::ConvGrads g = kernels::causal_conv_backward(dpre, x, K, need_x, need_K);
                  Tensor dD = kernels::s4d_skip_backward(g.du, dpre, x, D_skip, need_x, need_D);
                  return grads{g.du, g.dK, dD};
                });
}

// y = a ⊙ σ(b), z = [a, b] on the last axis;  dz = [dy σ(b), dy a σ(b) (1 - σ(b))]  (stores z)
Tensor glu(const Tensor& z) {
  Tensor y = kernels::glu_forward(z);
  return record("glu", y, {z}, [z = z.detach()](const Tensor& dy) { return grads{kernels::glu_backward(dy, z)}; });
}

namespace {

// y = cos(x);  dx = -dy sin(x)
Tensor cos_op(const Tensor& x) {
  Tensor y = kernels::unary_map(x, "cos", [](auto v) { return std::cos(v); });
  return record("cos", y, {x}, [x = x.detach()](const Tensor& dy) {
    Tensor s = kernels::unary_map(x, "cos", [](auto v) { return -std::sin(v); });
    return grads{kernels::binary_map(dy, s, "cos", [](auto a, auto b) { return a * b; })};
  });
}
// y = sin(x);  dx = dy cos(x)
Tensor sin_op(const Tensor& x) {
  Tensor y = kernels::unary_map(x, "sin", [](auto v) { return std::sin(v); });
  return record("sin", y, {x}, [x = x.detach()](const Tensor& dy) {
    Tensor c = kernels::unary_map(x, "sin", [](auto v) { return std::cos(v); });
    return grads{kernels::binary_map(dy, c, "sin", [](auto a, auto b) { return a * b; })};
  });
}

}  // namespace

Tensor s4d_kernel_reference(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C,
                            int64_t T) {
  int64_t D = log_dt.size(0), M = log_A_real.size(1);
  int64_t S = C.dim() == 4 ? C.size(0) : 1;
  std::vector<double> lv(static_cast<size_t>(T));
  for (int64_t l = 0; l < T; ++l) lv[l] = static_cast<double>(l);
  Tensor l = Tensor::from_vector(lv, {1, 1, T}, C.dtype(), C.device());         // (1, 1, T)
  Tensor dt = reshape(exp(log_dt), {D, 1});                                      // (D, 1)
  Tensor ar = neg(exp(log_A_real)), ai = A_imag;                                 // (D, M)
  Tensor xr = ar * dt, xi = ai * dt;                                             // dtA (D, M)
  Tensor ez = exp(xr);
  Tensor zr1 = add_scalar(ez * cos_op(xi), -1.0), zi = ez * sin_op(xi);          // exp(dtA) - 1
  Tensor den = ar * ar + ai * ai;                                                // |A|^2
  Tensor qr = (zr1 * ar + zi * ai) / den, qi = (zi * ar - zr1 * ai) / den;       // (exp(dtA) - 1) / A
  Tensor c = reshape(C, {S, D, M, 2});
  Tensor cr = reshape(slice(c, 3, 0, 1), {S, D, M}), ci = reshape(slice(c, 3, 1, 2), {S, D, M});
  Tensor cpr = cr * qr - ci * qi, cpi = cr * qi + ci * qr;                       // C' (S, D, M)
  Tensor xl_r = reshape(xr, {D, M, 1}) * l, xl_i = reshape(xi, {D, M, 1}) * l;   // dtA l (D, M, T)
  Tensor el = exp(xl_r);
  Tensor wr = el * cos_op(xl_i), wi = el * sin_op(xl_i);                         // exp(dtA l)
  Tensor re = reshape(cpr, {S, D, M, 1}) * wr - reshape(cpi, {S, D, M, 1}) * wi;  // (S, D, M, T)
  Tensor K = mul_scalar(sum(re, {2}), 2.0);                                      // (S, D, T)
  return C.dim() == 4 ? K : reshape(K, {D, T});
}

Tensor conv_skip_gelu_reference(const Tensor& x, const Tensor& K, const Tensor& D_skip) {
  return gelu(causal_conv_fft(x, K) + x * D_skip);  // D_skip (D) broadcasts over (B, T, D)
}

Tensor glu_reference(const Tensor& z) {
  const int64_t D = z.size(-1) / 2;
  return slice(z, -1, 0, D) * sigmoid(slice(z, -1, D, 2 * D));
}

}  // namespace seqlab
