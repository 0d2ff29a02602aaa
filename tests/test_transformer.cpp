// Tests of the fused attention op (against the composite matmul-softmax-matmul reference, forward
// and gradients, over several key/query tiles), of MultiHeadAttention and the pre-LN Transformer
// layer (float64 gradchecks of the input and every parameter, PyTorch reference values from
// tests/fixtures/gen_transformer.py, KV-cache step mode against the parallel forward), and of the
// position encodings.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <cmath>
#include <ctime>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/ops/attention.h"
#include "core/kernels/attention.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/attention.h"
#include "layers/transformer.h"
#include "fixtures.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::nn;

namespace {

// Max |a - b| / max(max |b|, 1e-300): the number the test reports.
double rel_err(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  double d = 0, m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    d = std::max(d, std::abs(va[i] - vb[i]));
    m = std::max(m, std::abs(vb[i]));
  }
  return d / std::max(m, 1e-300);
}

struct AttnGrads {
  Tensor out, dq, dk, dv;
};

// out and the gradients of sum(out * w) for the fused op or the reference.
AttnGrads run_attention(bool fused, const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& w,
                        bool causal) {
  Tensor q = q0.clone().set_requires_grad(), k = k0.clone().set_requires_grad(), v = v0.clone().set_requires_grad();
  Tensor out = fused ? attention(q, k, v, causal) : attention_reference(q, k, v, causal);
  backward(sum(mul(out, w)));
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

void compare_fused_reference(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t Dh, bool causal, DType dt,
                             double tol) {
  Generator gen(7 + Tq * 31 + Tk);
  Tensor q = randn({B, H, Tq, Dh}, 0, 1, dt, gen), k = randn({B, H, Tk, Dh}, 0, 1, dt, gen);
  Tensor v = randn({B, H, Tk, Dh}, 0, 1, dt, gen), w = randn({B, H, Tq, Dh}, 0, 1, dt, gen);
  AttnGrads f = run_attention(true, q, k, v, w, causal), r = run_attention(false, q, k, v, w, causal);
  double e = std::max({rel_err(f.out, r.out), rel_err(f.dq, r.dq), rel_err(f.dk, r.dk), rel_err(f.dv, r.dv)});
  MESSAGE("attention fused vs reference ", std::string(dtype_name(dt)), " Tq=", Tq, " Tk=", Tk, " causal=", causal,
          ": max rel error ", e);
  CHECK_CLOSE(f.out, r.out, tol, tol);
  CHECK_CLOSE(f.dq, r.dq, tol, tol);
  CHECK_CLOSE(f.dk, r.dk, tol, tol);
  CHECK_CLOSE(f.dv, r.dv, tol, tol);
}

// Float64 gradcheck of the input and every parameter of a module; returns the max relative error.
double gradcheck_layer(Module& m, const Tensor& x) {
  m.to(DType::f64);
  std::vector<Tensor> inputs{x.to(DType::f64).set_requires_grad()};
  for (auto& p : m.parameters()) inputs.push_back(p);
  auto r = gradcheck([&](const std::vector<Tensor>& in) { return m.forward(in[0]); }, inputs);
  CHECK_MESSAGE(r.ok, r.report);
  return r.max_rel_error;
}

}  // namespace

TEST_CASE("ops/attention: fused vs composite reference, float64") {
  for (bool causal : {false, true}) {
    compare_fused_reference(2, 2, 5, 5, 3, causal, DType::f64, 1e-11);
    compare_fused_reference(1, 3, 150, 150, 8, causal, DType::f64, 1e-11);  // 3 x 3 tiles, ragged last
    compare_fused_reference(2, 1, 64, 128, 4, causal, DType::f64, 1e-11);  // exact tiles, Tk > Tq
    compare_fused_reference(1, 2, 3, 130, 5, causal, DType::f64, 1e-11);   // few queries on many keys
  }
  compare_fused_reference(1, 1, 100, 7, 4, false, DType::f64, 1e-11);  // Tq > Tk (non-causal only)
}

TEST_CASE("ops/attention: fused vs composite reference, float32") {
  testing::for_each_isa([&] {
    for (bool causal : {false, true}) {
      compare_fused_reference(2, 2, 5, 5, 3, causal, DType::f32, 1e-4);
      compare_fused_reference(1, 3, 150, 150, 8, causal, DType::f32, 1e-4);
    }
  });
}

TEST_CASE("ops/attention: float32 vector kernels (Dh a multiple of 16) vs composite reference") {
  testing::for_each_isa([&] {
    for (bool causal : {false, true}) {
      compare_fused_reference(2, 2, 5, 5, 16, causal, DType::f32, 1e-4);      // one partial block
      compare_fused_reference(1, 3, 150, 150, 16, causal, DType::f32, 1e-4);  // ragged blocks and tiles
      compare_fused_reference(2, 1, 64, 300, 16, causal, DType::f32, 1e-4);   // Tk > Tq, 3 forward blocks
      compare_fused_reference(1, 2, 3, 130, 32, causal, DType::f32, 1e-4);    // few queries on many keys
      compare_fused_reference(1, 1, 37, 37, 48, causal, DType::f32, 1e-4);
      compare_fused_reference(1, 2, 70, 70, 64, causal, DType::f32, 1e-4);
    }
    compare_fused_reference(1, 1, 100, 7, 16, false, DType::f32, 1e-4);  // Tq > Tk (non-causal only)
  });
}

TEST_CASE("ops/attention_packed: equals split_heads -> attention -> merge_heads, forward and gradients") {
  testing::for_each_isa([&] {
    // float32 with Dh = 16, 32 runs the strided vector kernels; float64 and Dh = 8 the split fallback.
    struct Case {
      int64_t B, T, H, Dh;
      DType dt;
      double tol;
    };
    for (const Case& c : {Case{2, 150, 4, 16, DType::f32, 1e-4}, Case{1, 37, 2, 32, DType::f32, 1e-4},
                          Case{2, 20, 2, 8, DType::f32, 1e-4}, Case{2, 30, 2, 16, DType::f64, 1e-12}})
      for (bool causal : {false, true}) {
        Generator gen(13 + c.T);
        const int64_t D = c.H * c.Dh;
        Tensor x0 = randn({c.B, c.T, 3 * D}, 0, 1, c.dt, gen), w = randn({c.B, c.T, D}, 0, 1, c.dt, gen);
        Tensor xa = x0.clone().set_requires_grad(), xb = x0.clone().set_requires_grad();
        Tensor ya = attention_packed(xa, c.H, causal);
        std::vector<Tensor> p = split_heads(xb, 3, c.H);
        Tensor yb = merge_heads(attention(p[0], p[1], p[2], causal));
        backward(sum(mul(ya, w)));
        backward(sum(mul(yb, w)));
        MESSAGE("attention_packed Dh=", c.Dh, " ", std::string(dtype_name(c.dt)), " causal=", causal,
                ": rel error out ", rel_err(ya, yb), ", grad ", rel_err(xa.grad(), xb.grad()));
        CHECK_CLOSE(ya, yb, c.tol, c.tol);
        CHECK_CLOSE(xa.grad(), xb.grad(), c.tol, c.tol);
      }
    Generator gen(4);
    std::vector<Tensor> in{randn({2, 9, 12}, 0, 1, DType::f64, gen).set_requires_grad()};
    auto r = gradcheck([&](const std::vector<Tensor>& x) { return attention_packed(x[0], 2, true); }, in);
    CHECK_MESSAGE(r.ok, r.report);
    CHECK_THROWS_AS(attention_packed(Tensor::zeros({1, 4, 10}), 2, false), Error);  // 10 % (3 * 2) != 0
  });
}

TEST_CASE("ops/attention: gradcheck") {
  for (bool causal : {false, true})
    for (int64_t T : {5, 70}) {
      Generator gen(3);
      std::vector<Tensor> in{randn({2, 2, T, 3}, 0, 1, DType::f64, gen).set_requires_grad(),
                             randn({2, 2, T, 3}, 0, 1, DType::f64, gen).set_requires_grad(),
                             randn({2, 2, T, 3}, 0, 1, DType::f64, gen).set_requires_grad()};
      auto r = gradcheck([&](const std::vector<Tensor>& x) { return attention(x[0], x[1], x[2], causal); }, in);
      MESSAGE("attention gradcheck T=", T, " causal=", causal, ": max rel error ", r.max_rel_error);
      CHECK_MESSAGE(r.ok, r.report);
    }
}

TEST_CASE("ops/attention: bit-identical across thread counts") {
  testing::for_each_isa([&] {
    // Dh = 8 runs the GEMM tile loops, Dh = 16 the vector kernels; B H = 2 splits the forward's queries.
    for (int64_t B : {2, 1})
      for (int64_t Dh : {8, 16}) {
        const int64_t H = B == 2 ? 3 : 2;
        Generator gen(9);
        Tensor q = randn({B, H, 200, Dh}, 0, 1, DType::f32, gen), k = randn({B, H, 200, Dh}, 0, 1, DType::f32, gen);
        Tensor v = randn({B, H, 200, Dh}, 0, 1, DType::f32, gen), w = randn({B, H, 200, Dh}, 0, 1, DType::f32, gen);
        const int before = num_threads();
        set_num_threads(1);
        AttnGrads one = run_attention(true, q, k, v, w, true);
        set_num_threads(2);
        AttnGrads two = run_attention(true, q, k, v, w, true);
        AttnGrads again = run_attention(true, q, k, v, w, true);
        set_num_threads(before);
        CHECK(one.out.to_vector() == two.out.to_vector());
        CHECK(one.dq.to_vector() == two.dq.to_vector());
        CHECK(one.dk.to_vector() == two.dk.to_vector());
        CHECK(one.dv.to_vector() == two.dv.to_vector());
        CHECK(again.dq.to_vector() == two.dq.to_vector());
      }
  });
}

TEST_CASE("ops/attention: bad shapes are errors") {
  Tensor q = Tensor::zeros({1, 2, 4, 3}, DType::f64), k = Tensor::zeros({1, 2, 3, 3}, DType::f64);
  CHECK_THROWS_AS(attention(q, k, k, true), Error);                                         // causal, Tk < Tq
  CHECK_THROWS_AS(attention(q, Tensor::zeros({1, 2, 4, 2}, DType::f64), q, false), Error);  // Dh differs
  CHECK_THROWS_AS(attention(q.view({2, 4, 3}), q, q, false), Error);                        // not 4-d
}

TEST_CASE("layers/attention: sinusoidal table and learned positions") {
  auto fx = testing::load_fixture("transformer.txt");
  Tensor pe = testing::fixture_tensor(fx, "sinusoidal.pe");
  CHECK_CLOSE(sinusoidal_positions(pe.size(0), pe.size(1), DType::f64), pe, 1e-12, 1e-12);

  Generator gen(5);
  PositionalEncoding learned(PositionalEncodingOptions{4, PosEncodingKind::learned, 6}, gen);
  CHECK(learned.named_parameters().size() == 1);
  CHECK_THROWS_AS(learned.forward(Tensor::zeros({1, 7, 4})), Error);  // T > max_len
  CHECK_THROWS_AS(parse_pos_encoding("rotary"), Error);
  double e = gradcheck_layer(learned, randn({2, 5, 4}, 0, 1, DType::f64, gen));
  MESSAGE("learned positions gradcheck: max rel error ", e);
  // the step-mode lookup agrees with forward
  Tensor x = randn({2, 5, 4}, 0, 1, DType::f64, gen);
  PositionalEncoding sinus(PositionalEncodingOptions{4, PosEncodingKind::sinusoidal, 6});
  for (PositionalEncoding* m : {&learned, &sinus}) {
    NoGradGuard ng;
    Tensor y = m->forward(x);
    for (int64_t t = 0; t < 5; ++t)
      CHECK_CLOSE(m->at(slice(x, 1, t, t + 1).view({2, 4}), t), slice(y, 1, t, t + 1), 1e-12, 1e-12);
  }
}

TEST_CASE("layers/attention: options are validated") {
  CHECK_THROWS_AS(MultiHeadAttention(MultiHeadAttentionOptions{6, 4}), Error);  // 6 % 4 != 0
  CHECK_THROWS_AS(MultiHeadAttention(MultiHeadAttentionOptions{8, 0}), Error);
  LayerArgs bad("test");
  bad.set("n_heads", int64_t{3});
  CHECK_THROWS_AS(make_transformer(8, bad), Error);
  LayerArgs unknown("test");
  unknown.set("heads", int64_t{2});
  CHECK_THROWS_AS(make_transformer(8, unknown), Error);
  LayerArgs pos("test");
  pos.set("pos_encoding", std::string("rope"));
  CHECK_THROWS_AS(make_transformer(8, pos), Error);
}

TEST_CASE("layers/transformer: gradcheck") {
  for (bool causal : {false, true}) {
    Generator gen(11);
    TransformerOptions o;
    o.d_model = 4;
    o.n_heads = 2;
    o.d_ff = 6;
    o.dropout = 0.0;
    o.causal = causal;
    o.pos_encoding = "learned";
    o.max_len = 8;
    Transformer layer(o, gen);
    double e = gradcheck_layer(layer, randn({2, 5, 4}, 0, 1, DType::f64, gen));
    MESSAGE("transformer gradcheck causal=", causal, ": max rel error ", e);
  }
}

TEST_CASE("layers/transformer: float32 with Dh = 16 is bit-identical at 1 and 2 threads and run to run") {
  testing::for_each_isa([&] {
    auto run = [](int threads) {
      set_num_threads(threads);
      Generator gen(17);
      TransformerOptions o;
      o.d_model = 32;
      o.n_heads = 2;  // Dh = 16: the vector attention kernels
      o.dropout = 0.0;
      Transformer layer(o, gen);
      return testing::forward_backward_values(layer, randn({3, 70, 32}, 0, 1, DType::f32, gen));
    };
    const int before = num_threads();
    auto one = run(1), two = run(2), again = run(2);
    set_num_threads(before);
    CHECK(one == two);
    CHECK(two == again);
  });
}

TEST_CASE("layers/transformer: PyTorch reference") {
  auto fx = testing::load_fixture("transformer.txt");
  const std::vector<std::string> names{"norm1.weight",         "norm1.bias",         "attn.in_proj.weight",
                                       "attn.in_proj.bias",    "attn.out_proj.weight", "attn.out_proj.bias",
                                       "norm2.weight",         "norm2.bias",         "linear1.weight",
                                       "linear1.bias",         "linear2.weight",     "linear2.bias"};
  std::map<std::string, Tensor> state;
  for (const auto& n : names) state[n] = testing::fixture_tensor(fx, "param." + n);
  Tensor x0 = testing::fixture_tensor(fx, "x"), w0 = testing::fixture_tensor(fx, "w");
  for (const std::string c : {"full", "causal"})
    for (DType dt : {DType::f64, DType::f32}) {
      const double tol = dt == DType::f64 ? 1e-10 : 1e-4;
      TransformerOptions o;
      o.d_model = 4;
      o.n_heads = 2;
      o.d_ff = 8;
      o.dropout = 0.0;
      o.causal = c == "causal";
      Transformer layer(o);
      layer.to(dt);
      layer.load_state_dict(state);
      Tensor x = x0.to(dt).set_requires_grad();
      Tensor y = layer.forward(x);
      backward(sum(mul(y, w0.to(dt))));
      double e = rel_err(y, testing::fixture_tensor(fx, c + ".out"));
      CHECK_CLOSE(y, testing::fixture_tensor(fx, c + ".out"), tol, tol);
      CHECK_CLOSE(x.grad(), testing::fixture_tensor(fx, c + ".grad.x"), tol, tol);
      e = std::max(e, rel_err(x.grad(), testing::fixture_tensor(fx, c + ".grad.x")));
      for (const auto& np : layer.named_parameters()) {
        Tensor ref = testing::fixture_tensor(fx, c + ".grad." + np.name);
        CHECK_MESSAGE(testing::close(np.tensor.grad().to_vector(), ref.to_vector(), tol, tol).ok, np.name);
        e = std::max(e, rel_err(np.tensor.grad(), ref));
      }
      MESSAGE("transformer vs PyTorch ", c, " ", std::string(dtype_name(dt)), ": max rel error ", e);
    }
}

TEST_CASE("layers/transformer: step mode equals the parallel forward") {
  testing::for_each_isa([&] {
    for (std::string pe : {"none", "sinusoidal", "learned"}) {
      Generator gen(21);
      TransformerOptions o;
      o.d_model = 8;
      o.n_heads = 2;
      o.dropout = 0.0;
      o.causal = true;
      o.pos_encoding = pe;
      o.max_len = 40;
      Transformer layer(o, gen);
      layer.to(DType::f64);
      CHECK(layer.has_step());
      const int64_t B = 2, T = 37;  // crosses the cache's growth from 16 to 32 to 64 rows
      Tensor x = randn({B, T, 8}, 0, 1, DType::f64, gen);
      NoGradGuard ng;
      Tensor y = layer.forward(x);
      StepState st = layer.init_state(B, DType::f64);
      double e = 0;
      for (int64_t t = 0; t < T; ++t) {
        Tensor yt = layer.step(slice(x, 1, t, t + 1).view({B, 8}), st);
        Tensor ref = slice(y, 1, t, t + 1);
        CHECK_CLOSE(yt, ref, 1e-10, 1e-10);
        e = std::max(e, rel_err(yt, ref));
      }
      MESSAGE("transformer step vs forward (pos ", pe, "): max rel error ", e);
    }
    Transformer full(TransformerOptions{8, 2});
    CHECK_FALSE(full.has_step());
    CHECK_THROWS_AS(full.init_state(1, DType::f32), Error);
  });
}

