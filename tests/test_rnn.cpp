// Tests of the recurrent layers (tanh RNN, LSTM, GRU): gradcheck of the fused op through the stacked
// layer, fused op vs its composite reference (values and gradients), PyTorch reference values
// (tests/fixtures/gen_rnn.py -> rnn.txt, lstm.txt, gru.txt) and step mode vs the parallel forward.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/ops/rnn.h"
#include "core/parallel.h"
#include "layers/rnn.h"
#include "fixtures.h"
#include "testing.h"

using namespace seqlab;
using seqlab::nn::LayerArgs;
using seqlab::nn::Rnn;
using seqlab::nn::RnnOptions;

namespace {

const RnnCell kCells[] = {RnnCell::tanh, RnnCell::lstm, RnnCell::gru};
// The fixture file and config type of each cell.
std::string key_of(RnnCell cell) { return cell == RnnCell::tanh ? "rnn" : kernels::rnn_cell_name(cell); }

std::shared_ptr<Rnn> make_layer(RnnCell cell, int64_t D, int64_t num_layers, DType dtype, uint64_t seed,
                                bool bias = true) {
  Generator gen(seed);
  RnnOptions o;
  o.cell = cell;
  o.d_model = D;
  o.num_layers = num_layers;
  o.bias = bias;
  auto layer = std::make_shared<Rnn>(o, gen);
  layer->to(dtype);
  return layer;
}

// Input, then every parameter of the layer, all marked for gradients.
std::vector<Tensor> leaves(const Tensor& x, const Rnn& layer) {
  std::vector<Tensor> in{x};
  for (const Tensor& p : layer.parameters()) in.push_back(p);
  for (Tensor& t : in) t.set_requires_grad(true);
  return in;
}

struct Run {
  Tensor y;
  std::vector<Tensor> grads;  // of sum(y * w) w.r.t. each leaf
};

// y = forward (or forward_reference) and the gradients of sum(y * w).
Run run(Rnn& layer, const std::vector<Tensor>& in, const Tensor& w, bool reference) {
  for (const Tensor& t : in) const_cast<Tensor&>(t).zero_grad();
  Tensor y = reference ? layer.forward_reference(in[0]) : layer.forward(in[0]);
  backward(y, w);
  Run r{y.detach(), {}};
  for (const Tensor& t : in) r.grads.push_back(t.grad().defined() ? t.grad() : Tensor::zeros_like(t));
  return r;
}

}  // namespace

TEST_CASE("layers/rnn: gradcheck of input and every parameter (tanh, lstm, gru, 2 layers, float64)") {
  for (RnnCell cell : kCells) {
    for (bool bias : {true, false}) {
      CAPTURE(key_of(cell));
      CAPTURE(bias);
      auto layer_ptr = make_layer(cell, 4, 2, DType::f64, 7, bias);
      Rnn& layer = *layer_ptr;
      Generator gen(11);
      Tensor x = randn({2, 5, 4}, 0, 1, DType::f64, gen);
      std::vector<Tensor> in = leaves(x, layer);
      CHECK(in.size() == (bias ? 9u : 5u));
      auto g = gradcheck([&](const std::vector<Tensor>& ins) { return layer.forward(ins[0]); }, in);
      CHECK_MESSAGE(g.ok, g.report);
      MESSAGE(key_of(cell), " bias=", bias, ": gradcheck max rel error ", g.max_rel_error);
    }
  }
}

TEST_CASE("layers/rnn: the fused op is one graph node per stacked layer") {
  for (RnnCell cell : kCells) {
    auto layer_ptr = make_layer(cell, 3, 2, DType::f32, 1);
    Rnn& layer = *layer_ptr;
    Tensor x = randn({2, 6, 3}).set_requires_grad(true);
    Tensor y = layer.forward(x);
    REQUIRE(y.grad_fn());
    CHECK(std::string(y.grad_fn()->name) == kernels::rnn_cell_name(cell));
    const Edge& e = y.grad_fn()->edges[0];  // the input of layer 1 is layer 0's node
    REQUIRE(e.fn);
    CHECK(std::string(e.fn->name) == kernels::rnn_cell_name(cell));
    CHECK(!e.fn->edges[0].fn);  // layer 0 reads the leaf x
  }
}

TEST_CASE("layers/rnn: fused op vs composite reference, values and gradients (float64 and float32)") {
  testing::for_each_isa([&] {
    for (RnnCell cell : kCells) {
      for (DType dt : {DType::f64, DType::f32}) {
        CAPTURE(key_of(cell));
        const std::string dtn = dtype_name(dt);
        CAPTURE(dtn);
        // B = 5: one short batch chunk (chunks are 8 rows; the bit-identity test uses three).
        auto layer_ptr = make_layer(cell, 6, 2, dt, 3);
        Rnn& layer = *layer_ptr;
        Generator gen(5);
        Tensor x = randn({5, 9, 6}, 0, 1, dt, gen);
        Tensor w = randn({5, 9, 6}, 0, 1, dt, gen);
        std::vector<Tensor> in = leaves(x, layer);
        Run fused = run(layer, in, w, false);
        Run ref = run(layer, in, w, true);
        double tol = dt == DType::f64 ? 1e-12 : 1e-5;
        CHECK_CLOSE(fused.y, ref.y, tol, tol);
        double worst = 0;
        for (size_t i = 0; i < in.size(); ++i) {
          CAPTURE(i);
          CHECK_CLOSE(fused.grads[i], ref.grads[i], tol, tol);
          auto a = fused.grads[i].to_vector(), b = ref.grads[i].to_vector();
          for (size_t j = 0; j < a.size(); ++j) worst = std::max(worst, std::abs(a[j] - b[j]));
        }
        MESSAGE(key_of(cell), " ", dtn, ": fused vs reference max abs gradient difference ", worst);
      }
    }
  });
}

TEST_CASE("layers/rnn: fused op with input width != hidden width and no biases matches the reference") {
  testing::for_each_isa([&] {
    for (RnnCell cell : kCells) {
      CAPTURE(key_of(cell));
      const int64_t B = 3, T = 4, I = 5, H = 2, G = kernels::rnn_gate_count(cell);
      Generator gen(21);
      Tensor x = randn({B, T, I}, 0, 1, DType::f64, gen).set_requires_grad(true);
      Tensor w_ih = randn({G * H, I}, 0, 0.5, DType::f64, gen).set_requires_grad(true);
      Tensor w_hh = randn({G * H, H}, 0, 0.5, DType::f64, gen).set_requires_grad(true);
      Tensor b_hh = randn({G * H}, 0, 0.5, DType::f64, gen).set_requires_grad(true);
      std::vector<Tensor> in{x, w_ih, w_hh, b_hh};
      auto fused = [&](const std::vector<Tensor>& v) { return rnn_layer(cell, v[0], v[1], v[2], Tensor(), v[3]); };
      auto ref = [&](const std::vector<Tensor>& v) {
        return rnn_layer_reference(cell, v[0], v[1], v[2], Tensor(), v[3]);
      };
      CHECK_GRADCHECK(fused, in);
      CHECK_CLOSE(fused(in), ref(in), 1e-12, 1e-12);
    }
  });
}

TEST_CASE("layers/rnn: backward in time chunks equals the one-chunk backward (float64 and float32)") {
  // The default chunk is ~8192 / B steps, so the small tests above run one chunk; here T = 11 is cut
  // into chunks of 1, 3 and 4 steps (a last, shorter chunk included) and compared with one chunk.
  for (RnnCell cell : kCells) {
    for (DType dt : {DType::f64, DType::f32}) {
      CAPTURE(key_of(cell));
      CAPTURE(dtype_name(dt));
      const int64_t B = 3, T = 11, I = 5, H = 4, G = kernels::rnn_gate_count(cell);
      Generator gen(41);
      Tensor x = randn({B, T, I}, 0, 1, dt, gen), w_ih = randn({G * H, I}, 0, 0.5, dt, gen),
             w_hh = randn({G * H, H}, 0, 0.5, dt, gen), b_ih = randn({G * H}, 0, 0.5, dt, gen),
             b_hh = randn({G * H}, 0, 0.5, dt, gen), dy = randn({B, T, H}, 0, 1, dt, gen);
      kernels::RnnForward f = kernels::rnn_forward(cell, x, w_ih, w_hh, b_ih, b_hh);
      kernels::RnnGrads whole = kernels::rnn_backward(cell, dy, x, w_ih, w_hh, f, true, true, true, true, true, T);
      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      for (int64_t tc : {1, 3, 4}) {
        CAPTURE(tc);
        kernels::RnnGrads g = kernels::rnn_backward(cell, dy, x, w_ih, w_hh, f, true, true, true, true, true, tc);
        CHECK_CLOSE(g.dx, whole.dx, tol, tol);
        CHECK_CLOSE(g.dw_ih, whole.dw_ih, tol, tol);
        CHECK_CLOSE(g.dw_hh, whole.dw_hh, tol, tol);
        CHECK_CLOSE(g.db_ih, whole.db_ih, tol, tol);
        CHECK_CLOSE(g.db_hh, whole.db_hh, tol, tol);
      }
    }
  }
}

// B = 19: three batch chunks, the last one short, so that 1, 2 and 3 threads share them differently.
TEST_CASE("layers/rnn: float32 output and gradients are bit-identical at 1, 2 and 3 threads") {
  testing::for_each_isa([&] {
    for (RnnCell cell : kCells) {
      CAPTURE(key_of(cell));
      const int64_t B = 19, T = 9, I = 6, H = 8, G = kernels::rnn_gate_count(cell);
      Generator gen(51);
      Tensor x = randn({B, T, I}, 0, 1, DType::f32, gen), w_ih = randn({G * H, I}, 0, 0.5, DType::f32, gen),
             w_hh = randn({G * H, H}, 0, 0.5, DType::f32, gen), b_ih = randn({G * H}, 0, 0.5, DType::f32, gen),
             b_hh = randn({G * H}, 0, 0.5, DType::f32, gen), dy = randn({B, T, H}, 0, 1, DType::f32, gen);
      auto run_at = [&](int threads) {
        set_num_threads(threads);
        kernels::RnnForward f = kernels::rnn_forward(cell, x, w_ih, w_hh, b_ih, b_hh);
        kernels::RnnGrads g = kernels::rnn_backward(cell, dy, x, w_ih, w_hh, f, true, true, true, true, true, 4);
        return std::vector<std::vector<double>>{f.y.to_vector(),     g.dx.to_vector(),    g.dw_ih.to_vector(),
                                                g.dw_hh.to_vector(), g.db_ih.to_vector(), g.db_hh.to_vector()};
      };
      const int prev = num_threads();
      auto one = run_at(1), two = run_at(2), three = run_at(3);
      set_num_threads(prev);
      for (size_t i = 0; i < one.size(); ++i) {
        CHECK(one[i] == two[i]);
        CHECK(one[i] == three[i]);
      }
    }
  });
}

TEST_CASE("layers/rnn: PyTorch nn.RNN/LSTM/GRU reference values (2 layers, float64 and float32)") {
  testing::for_each_isa([&] {
    for (RnnCell cell : kCells) {
      const std::string key = key_of(cell);
      CAPTURE(key);
      auto fx = testing::load_fixture(key + ".txt");
      Tensor x64 = testing::fixture_tensor(fx, key + ".x");
      const int64_t D = x64.size(2);
      for (DType dt : {DType::f64, DType::f32}) {
        const std::string dtn = dtype_name(dt);
        CAPTURE(dtn);
        auto layer_ptr = make_layer(cell, D, 2, dt, 0);
        Rnn& layer = *layer_ptr;
        std::map<std::string, Tensor> state;
        for (const auto& p : layer.named_parameters()) state[p.name] = testing::fixture_tensor(fx, key + "." + p.name);
        layer.load_state_dict(state);
        std::vector<Tensor> in = leaves(x64.to(dt), layer);
        Run r = run(layer, in, testing::fixture_tensor(fx, key + ".w").to(dt), false);
        double tol = dt == DType::f64 ? 1e-12 : 1e-4;
        CHECK_CLOSE(r.y, testing::fixture_tensor(fx, key + ".y"), tol, tol);
        CHECK_CLOSE(r.grads[0], testing::fixture_tensor(fx, key + ".dx"), tol, tol);
        double worst = 0;
        auto named = layer.named_parameters();
        for (size_t i = 0; i < named.size(); ++i) {
          CAPTURE(named[i].name);
          Tensor want = testing::fixture_tensor(fx, key + ".d." + named[i].name);
          CHECK_CLOSE(r.grads[i + 1], want, tol, tol);
          auto a = r.grads[i + 1].to_vector(), b = want.to_vector();
          for (size_t j = 0; j < a.size(); ++j) worst = std::max(worst, std::abs(a[j] - b[j]) / std::max(std::abs(b[j]), 1e-3));
        }
        MESSAGE(key, " ", dtn, ": vs PyTorch, max relative parameter-gradient difference ", worst);
      }
    }
  });
}

TEST_CASE("layers/rnn: step mode equals the parallel forward (2 layers)") {
  testing::for_each_isa([&] {
    for (RnnCell cell : kCells) {
      for (DType dt : {DType::f64, DType::f32}) {
        CAPTURE(key_of(cell));
        const std::string dtn = dtype_name(dt);
        CAPTURE(dtn);
        const int64_t B = 3, T = 7, D = 5;
        auto layer_ptr = make_layer(cell, D, 2, dt, 9);
        Rnn& layer = *layer_ptr;
        Generator gen(13);
        Tensor x = randn({B, T, D}, 0, 1, dt, gen);
        Tensor y;
        {
          NoGradGuard ng;
          y = layer.forward(x);
        }
        REQUIRE(layer.has_step());
        nn::StepState s = layer.init_state(B, dt);
        CHECK(s.tensors.size() == (cell == RnnCell::lstm ? 4u : 2u));
        double tol = dt == DType::f64 ? 1e-12 : 1e-5;
        for (int64_t t = 0; t < T; ++t) {
          CAPTURE(t);
          Tensor yt = layer.step(reshape(slice(x, 1, t, t + 1), {B, D}), s);
          CHECK(!yt.requires_grad());
          CHECK_CLOSE(yt, reshape(slice(y, 1, t, t + 1), {B, D}), tol, tol);
        }
      }
    }
  });
}

TEST_CASE("layers/rnn: dropout between stacked layers only in training") {
  RnnOptions o;
  o.cell = RnnCell::lstm;
  o.d_model = 4;
  o.num_layers = 2;
  o.dropout = 0.5;
  Rnn layer(o);
  Tensor x = randn({2, 6, 4});
  Tensor a = layer.forward(x), b = layer.forward(x);
  CHECK(a.to_vector() != b.to_vector());  // two dropout masks
  layer.eval();
  CHECK(layer.forward(x).to_vector() == layer.forward(x).to_vector());
}

TEST_CASE("layers/rnn: options and factories") {
  RnnOptions o;
  o.d_model = 4;
  o.num_layers = 0;
  CHECK_THROWS_WITH_AS(o.validate(), doctest::Contains("num_layers"), Error);
  o.num_layers = 1;
  o.dropout = 1.0;
  CHECK_THROWS_WITH_AS(o.validate(), doctest::Contains("dropout"), Error);

  LayerArgs args("layer 'gru'");
  args.set("num_layers", int64_t{3}).set("bias", false);
  auto gru = nn::make_gru(8, args);
  CHECK(gru->d_model() == 8);
  auto names = gru->named_parameters();
  REQUIRE(names.size() == 6u);
  CHECK(names[0].name == "weight_ih_l0");
  CHECK(names[5].name == "weight_hh_l2");
  CHECK(names[0].tensor.shape() == Shape{24, 8});

  LayerArgs bad("layer 'lstm'");
  bad.set("hidden", int64_t{3});
  CHECK_THROWS_WITH_AS(nn::make_lstm(8, bad), doctest::Contains("hidden"), Error);
  LayerArgs rnn_args;
  auto rnn = nn::make_rnn(4, rnn_args);
  CHECK(rnn->named_parameters().size() == 4u);
  CHECK(rnn->named_parameters()[2].name == "bias_ih_l0");

  auto lstm_ptr = make_layer(RnnCell::lstm, 4, 1, DType::f32, 0);
  Rnn& lstm = *lstm_ptr;
  CHECK_THROWS_WITH_AS(lstm.forward(Tensor::zeros({2, 3, 5})), doctest::Contains("expected (B, T, 4)"), Error);
}

