// Selective scan ops: the fused op (kernels in core/kernels/scan), the plain-loop op that stores all
// states, and the composite reference (mamba's selective_scan_ref) built from primitive ops.
#include "autograd/ops/scan.h"

#include "autograd/ops.h"

namespace seqlab {
namespace {

void check_scan_args(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                     const Tensor& D, const SelectiveScanOptions& o) {
  SEQLAB_CHECK(u.dim() == 3, "selective_scan: u of shape ", to_string(u.shape()), ", expected (B, T, E)");
  const int64_t B = u.size(0), T = u.size(1), E = u.size(2);
  SEQLAB_CHECK(A.dim() == 2 && A.size(0) == E, "selective_scan: A of shape ", to_string(A.shape()),
               ", expected (E, N) with E = ", E);
  const int64_t N = A.size(1);
  SEQLAB_CHECK(delta.shape() == u.shape(), "selective_scan: delta of shape ", to_string(delta.shape()),
               ", expected ", to_string(u.shape()));
  SEQLAB_CHECK(Bm.shape() == Shape({B, T, N}) && Cm.shape() == Shape({B, T, N}), "selective_scan: B of shape ",
               to_string(Bm.shape()), " and C of shape ", to_string(Cm.shape()), ", expected (", B, ", ", T, ", ",
               N, ")");
  SEQLAB_CHECK(D.shape() == Shape({E}), "selective_scan: D of shape ", to_string(D.shape()), ", expected (", E,
               ")");
  SEQLAB_CHECK(!o.z.defined() || o.z.shape() == u.shape(), "selective_scan: z of shape ", to_string(o.z.shape()),
               ", expected ", to_string(u.shape()));
  SEQLAB_CHECK(!o.delta_bias.defined() || o.delta_bias.shape() == Shape({E}),
               "selective_scan: delta_bias of shape ", to_string(o.delta_bias.shape()), ", expected (", E, ")");
  SEQLAB_CHECK(o.chunk >= 1, "selective_scan: chunk must be positive, got ", o.chunk);
  for (const Tensor* t : {&delta, &A, &Bm, &Cm, &D, &o.z, &o.delta_bias})
    SEQLAB_CHECK(!t->defined() || t->dtype() == u.dtype(), "selective_scan: every input must be ",
                 dtype_name(u.dtype()), ", got ", dtype_name(t->dtype()));
}

kernels::ScanExtras extras(const SelectiveScanOptions& o) {
  return {o.z.defined() ? o.z.detach() : Tensor(), o.delta_bias.defined() ? o.delta_bias.detach() : Tensor(),
          o.delta_softplus};
}

}  // namespace

// Backward (per channel c, state n, reverse in t): dh_t = dh_{t+1} e_{t+1} + dout_t C_t,
// e_t = exp(dl_t A); dA += dh_t dl_t e_t h_{t-1}; ddl_t = sum_n dh_t (A e_t h_{t-1} + B_t u_t);
// dB_t += dh_t dl_t u_t; dC_t += dout_t h_t; du_t = dout_t D + sum_n dh_t dl_t B_t; dD += dout_t u_t.
Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                      const Tensor& Dskip, const SelectiveScanOptions& o) {
  check_scan_args(u, delta, A, Bm, Cm, Dskip, o);
  kernels::ScanExtras ex = extras(o);
  bool need_grad = false;  // checkpoints only when a backward can come
  for (const Tensor* t : {&u, &delta, &A, &Bm, &Cm, &Dskip, &o.z, &o.delta_bias})
    need_grad = need_grad || (t->defined() && t->requires_grad());
  need_grad = need_grad && grad_enabled();
  auto fw = kernels::selective_scan_forward(u, delta, A, Bm, Cm, Dskip, ex, o.chunk, need_grad);
  return record("selective_scan", fw.y, {u, delta, A, Bm, Cm, Dskip, o.z, o.delta_bias},
                [u = u.detach(), delta = delta.detach(), A = A.detach(), Bm = Bm.detach(), Cm = Cm.detach(),
                 D = Dskip.detach(), ex, ck = fw.checkpoints, chunk = o.chunk](const Tensor& dy) {
                  auto g = kernels::selective_scan_backward(dy, u, delta, A, Bm, Cm, D, ex, ck, chunk);
                  return grads{g.du, g.ddelta, g.dA, g.dB, g.dC, g.dD, g.dz, g.ddelta_bias};
                });
}

Tensor selective_scan_loop(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                           const Tensor& Cm, const Tensor& Dskip, const SelectiveScanOptions& o) {
  check_scan_args(u, delta, A, Bm, Cm, Dskip, o);
  kernels::ScanExtras ex = extras(o);
  Tensor H;
  auto fw = kernels::selective_scan_loop_forward(u, delta, A, Bm, Cm, Dskip, ex, &H);
  return record("selective_scan_loop", fw.y, {u, delta, A, Bm, Cm, Dskip, o.z, o.delta_bias},
                [u = u.detach(), delta = delta.detach(), A = A.detach(), Bm = Bm.detach(), Cm = Cm.detach(),
                 D = Dskip.detach(), ex, H](const Tensor& dy) {
                  auto g = kernels::selective_scan_loop_backward(dy, u, delta, A, Bm, Cm, D, ex, H);
                  return grads{g.du, g.ddelta, g.dA, g.dB, g.dC, g.dD, g.dz, g.ddelta_bias};
                });
}

Tensor selective_scan_reference(const Tensor& u, const Tensor& delta_in, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm, const Tensor& Dskip, const SelectiveScanOptions& o) {
  check_scan_args(u, delta_in, A, Bm, Cm, Dskip, o);
  const int64_t B = u.size(0), T = u.size(1), E = u.size(2), N = A.size(1);
  Tensor delta = o.delta_bias.defined() ? delta_in + o.delta_bias : delta_in;  // (B, T, E)
  if (o.delta_softplus) delta = softplus(delta);
  Tensor dA = exp(reshape(delta, {B, T, E, 1}) * A);                                   // (B, T, E, N)
  Tensor dBu = reshape(delta * u, {B, T, E, 1}) * reshape(Bm, {B, T, 1, N});           // (B, T, E, N)
  Tensor h = Tensor::zeros({B, E, N}, u.dtype());                                      // (B, E, N)
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < T; ++t) {
    h = reshape(slice(dA, 1, t, t + 1), {B, E, N}) * h + reshape(slice(dBu, 1, t, t + 1), {B, E, N});
    Tensor Ct = reshape(slice(Cm, 1, t, t + 1), {B, 1, N});                             // (B, 1, N)
    ys.push_back(reshape(sum(h * Ct, {-1}), {B, 1, E}));                                 // (B, 1, E)
  }
  Tensor y = concat(ys, 1) + u * Dskip;                                                 // (B, T, E)
  if (o.z.defined()) y = y * silu(o.z);
  return y;
}

}  // namespace seqlab
