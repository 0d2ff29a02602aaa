// attention op over core/kernels/attention: fused forward, hand-written backward that recomputes
// the probabilities tile by tile from the saved row logsumexp. Plus the composite reference.
#include "autograd/ops/attention.h"

#include <cmath>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/linalg.h"
#include "autograd/ops/softmax.h"
#include "core/kernels/attention.h"

namespace seqlab {

// o = P v, P = softmax(s), s = q k^T / sqrt(Dh);  dv = P^T do, ds = P * (do v^T - rowsum(do * o)),
// dq = ds k / sqrt(Dh), dk = ds^T q / sqrt(Dh)
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  kernels::AttentionForward f = kernels::attention_forward(q, k, v, causal);
  return record("attention", f.out, {q, k, v},
                [q = q.detach(), k = k.detach(), v = v.detach(), out = f.out.detach(), lse = f.lse,
                 causal](const Tensor& dout) {
                  auto [dq, dk, dv] = kernels::attention_backward(dout, q, k, v, out, lse, causal);
                  return grads{dq, dk, dv};
                });
}

Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  SEQLAB_CHECK(q.dim() == 4 && k.dim() == 4, "attention_reference: expected (B, H, T, Dh) inputs");
  const int64_t Tq = q.size(2), Tk = k.size(2), Dh = q.size(3);
  Tensor s = mul_scalar(matmul(q, k, false, true), 1.0 / std::sqrt(static_cast<double>(Dh)));  // (B, H, Tq, Tk)
  if (causal) {
    std::vector<double> mask(static_cast<size_t>(Tq * Tk), 0.0);
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = i + (Tk - Tq) + 1; j < Tk; ++j) mask[static_cast<size_t>(i * Tk + j)] = -1e30;
    s = add(s, Tensor::from_vector(mask, {Tq, Tk}, q.dtype()));  // broadcast over (B, H)
  }
  return matmul(softmax(s, -1), v);
}

// [q, k, v] = permute(reshape(x)): a copy;  dx = the inverse copy of [dq, dk, dv]
std::vector<Tensor> split_heads(const Tensor& x, int64_t n, int64_t H) {
  std::vector<Tensor> parts = kernels::split_heads(x, n, H);
  return record_multi("split_heads", parts, {x}, [](const std::vector<Tensor>& dys) {
    return grads{kernels::merge_heads(dys)};
  });
}

// y = permute(o): a copy;  do = the inverse copy of dy
Tensor merge_heads(const Tensor& o) {
  Tensor y = kernels::merge_heads({o});
  return record("merge_heads", y, {o}, [H = o.size(1)](const Tensor& dy) {
    return grads{kernels::split_heads(dy, 1, H)[0]};
  });
}

// y = x + table[offset + t];  dx = dy, dtable[offset + t] = sum_b dy[b, t]
Tensor add_positions(const Tensor& x, const Tensor& table, int64_t offset) {
  Tensor y = kernels::add_positions_forward(x, table, offset);
  return record("add_positions", y, {x, table},
                [shape = table.shape(), offset, need_t = table.requires_grad()](const Tensor& dy) {
                  return grads{dy, need_t ? kernels::add_positions_backward_table(dy, shape, offset) : Tensor()};
                });
}

}  // namespace seqlab
