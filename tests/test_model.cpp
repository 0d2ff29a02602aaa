// The model wrapper (input -> pre-norm residual blocks -> final norm -> head), RevIN, embedding and
// the layer registry, with a small pointwise mixer registered at run time as a user would.
#include "autograd/ops.h"
#include "autograd/ops/embedding.h"
#include "core/random.h"
#include "layers/linear.h"
#include "layers/model.h"
#include "layers/registry.h"
#include "layers/revin.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::nn;

namespace {
// y_t = tanh(W x_t + b): no mixing over time, so step mode is trivially the forward per step.
class PointwiseMixer : public SequenceLayer {
 public:
  explicit PointwiseMixer(int64_t d) : d_(d) { proj_ = register_module("proj", std::make_shared<Linear>(LinearOptions{d, d})); }
  Tensor forward(const Tensor& x) override { return tanh(proj_->forward(x)); }
  int64_t d_model() const override { return d_; }
  bool has_step() const override { return true; }
  StepState init_state(int64_t, DType) const override { return {}; }
  Tensor step(const Tensor& x_t, StepState&) override { return tanh(proj_->forward(x_t)); }

 private:
  int64_t d_;
  std::shared_ptr<Linear> proj_;
};

void ensure_registered() {
  static bool done = [] {
    register_layer({"test_pointwise", "tanh(Linear) per step (tests only)", [](int64_t d, LayerArgs& args) {
                      args.get_int("unused_but_known", 0);
                      return std::make_shared<PointwiseMixer>(d);
                    }});
    return true;
  }();
  (void)done;
}

std::vector<Tensor> with_params(const Tensor& x, Module& m) {
  std::vector<Tensor> in{x};
  for (auto& p : m.parameters()) in.push_back(p);
  return in;
}
}  // namespace

TEST_CASE("model: parameter names follow the documented layout") {
  ensure_registered();
  ModelOptions o;
  o.layer = "test_pointwise";
  o.in_channels = 3;
  o.d_model = 4;
  o.n_layers = 2;
  o.pred_len = 5;
  o.revin = true;
  SequenceModel m(o);
  std::vector<std::string> names;
  for (auto& p : m.named_parameters()) names.push_back(p.name);
  std::vector<std::string> expect = {"input.weight", "input.bias", "blocks.0.norm.weight", "blocks.0.norm.bias",
                                     "blocks.0.mixer.proj.weight", "blocks.0.mixer.proj.bias",
                                     "blocks.1.norm.weight", "blocks.1.norm.bias", "blocks.1.mixer.proj.weight",
                                     "blocks.1.mixer.proj.bias", "norm_f.weight", "norm_f.bias", "head.weight",
                                     "head.bias", "revin.weight", "revin.bias"};
  CHECK(names == expect);
  Tensor y = m.forward(randn({2, 7, 3}));
  CHECK(y.shape() == Shape{2, 5, 3});
}

TEST_CASE("model: gradcheck of every head, input and every parameter") {
  ensure_registered();
  for (std::string head : {"last", "flatten"}) {
    for (bool revin : {false, true}) {
      CAPTURE(head);
      CAPTURE(revin);
      manual_seed(1);
      ModelOptions o;
      o.layer = "test_pointwise";
      o.in_channels = 2;
      o.d_model = 3;
      o.n_layers = 2;
      o.seq_len = 4;
      o.pred_len = 2;
      o.head = head;
      o.revin = revin;
      o.revin_detach_stats = false;  // detached statistics are not the true gradient
      SequenceModel m(o);
      m.to(DType::f64);
      Tensor x = randn({2, 4, 2}, 0, 1, DType::f64).set_requires_grad();
      CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return m.forward(in[0]); }, with_params(x, m));
    }
  }
  manual_seed(2);
  ModelOptions o;
  o.layer = "test_pointwise";
  o.vocab_size = 5;
  o.d_model = 3;
  o.n_layers = 1;
  o.head = "token";
  o.norm = "rmsnorm";
  SequenceModel m(o);
  m.to(DType::f64);
  Tensor ids = Tensor::from_vector({0, 4, 2, 1, 1, 3}, {2, 3}, DType::i32);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return m.forward(in[0]); }, with_params(ids, m));
}

TEST_CASE("model: token step mode equals the forward") {
  ensure_registered();
  ModelOptions o;
  o.layer = "test_pointwise";
  o.vocab_size = 6;
  o.d_model = 4;
  o.head = "token";
  SequenceModel m(o);
  m.eval();
  Tensor ids = Tensor::from_vector({0, 5, 2, 1, 3, 3, 4, 0}, {2, 4}, DType::i32);
  Tensor full = m.forward(ids);  // (2, 4, 6)
  REQUIRE(m.has_step());
  auto state = m.init_state(2, DType::f32);
  for (int64_t t = 0; t < 4; ++t) {
    Tensor ids_t = Tensor::from_vector({ids.to_vector()[t], ids.to_vector()[4 + t]}, {2}, DType::i32);
    Tensor y = m.step(ids_t, state);  // (2, 6)
    CHECK_CLOSE(y, reshape(slice(full, 1, t, t + 1), {2, 6}), 1e-5, 1e-6);
  }
}

TEST_CASE("registry: unknown type and unknown option are clear errors") {
  ensure_registered();
  LayerArgs args("configs/x.toml [model]");
  CHECK_THROWS_WITH_AS(make_layer("no_such_layer", 4, args), doctest::Contains("unknown layer type 'no_such_layer'"),
                       Error);
  LayerArgs args2("configs/x.toml [model]");
  args2.set("d_sate", int64_t{4});
  CHECK_THROWS_WITH_AS(make_layer("test_pointwise", 4, args2), doctest::Contains("unknown option(s) d_sate"), Error);
  CHECK_THROWS_AS(register_layer({"test_pointwise", "", [](int64_t d, LayerArgs&) {
                                    return std::make_shared<PointwiseMixer>(d);
                                  }}),
                  Error);
  LayerArgs args3("here");
  args3.set("n", std::string("four"));
  CHECK_THROWS_WITH_AS(args3.get_int("n", 1), doctest::Contains("'n' must be an integer"), Error);
}

TEST_CASE("revin: denormalize(normalize(x)) == x and statistics are per instance and channel") {
  for (bool affine : {false, true}) {
    RevIN r(RevINOptions{3, affine});
    Tensor x = randn({2, 8, 3}, 5, 3);
    Tensor n = r.normalize(x);
    Tensor m = mean(n, {1});
    for (double v : m.to_vector()) CHECK(std::abs(v) < 1e-5);
    CHECK_CLOSE(r.denormalize(n), x, 1e-5, 1e-5);
  }
  RevIN r(RevINOptions{2, true, 1e-5, /*detach_stats=*/false});
  r.to(DType::f64);
  Tensor x = randn({2, 5, 2}, 1, 2, DType::f64).set_requires_grad();
  std::vector<Tensor> in{x};
  for (auto& p : r.parameters()) in.push_back(p);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& v) { return r.denormalize(tanh(r.normalize(v[0]))); }, in);
  // With detached statistics (the default, as the reference code) no gradient flows through them:
  // d/dx of normalize(x) is then w / std exactly.
  RevIN rd(RevINOptions{2, false});
  rd.to(DType::f64);
  Tensor x2 = randn({1, 4, 2}, 1, 2, DType::f64).set_requires_grad();
  backward(sum(rd.normalize(x2)));
  Tensor stdev = sqrt(add_scalar(mean(pow_scalar(sub(x2.detach(), mean(x2.detach(), {1}, true)), 2.0), {1}, true), 1e-5));
  CHECK_CLOSE(x2.grad(), div(Tensor::ones({1, 4, 2}, DType::f64), stdev), 1e-12, 1e-12);
}

TEST_CASE("ops/embedding: gradcheck and bad ids") {
  Tensor w = randn({5, 3}, 0, 1, DType::f64).set_requires_grad();
  Tensor ids = Tensor::from_vector({1, 4, 1, 0}, {2, 2}, DType::i32);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return embedding(in[0], ids); }, (std::vector<Tensor>{w}));
  Tensor y = embedding(w, ids);
  CHECK(y.shape() == Shape{2, 2, 3});
  CHECK(y.to_vector()[0] == w.to_vector()[3]);
  Tensor bad = Tensor::from_vector({1, 5}, {2}, DType::i32);
  CHECK_THROWS_WITH_AS(embedding(w, bad), doctest::Contains("id 5"), Error);
}
