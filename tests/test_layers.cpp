// Layers: Module bookkeeping (names, counts, train/eval, dtype moves, state dicts), options
// validation, and float64 gradchecks of Linear, LayerNorm, RMSNorm and MLP with respect to the
// input and every parameter.
#include <memory>

#include "autograd/ops.h"
#include "core/random.h"
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/mlp.h"
#include "layers/norm.h"
#include "layers/registry.h"
#include "fixtures.h"
#include "testing.h"

using namespace seqlab;

namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<std::string> names_of(const nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& p : m.named_parameters()) out.push_back(p.name);
  return out;
}

// Gradcheck of m(x) w.r.t. x and every parameter, in float64 (moves m to float64).
void gradcheck_module(nn::Module& m, const Shape& x_shape, uint64_t seed = 11) {
  m.to(DType::f64);
  Generator gen(seed);
  Tensor x = randn(x_shape, 0, 1, DType::f64, gen);
  x.set_requires_grad(true);
  std::vector<Tensor> inputs{x};
  for (const Tensor& p : m.parameters()) {
    REQUIRE(p.dtype() == DType::f64);
    REQUIRE(p.requires_grad());
    inputs.push_back(p);
  }
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return m.forward(in[0]); }, inputs);
}

// Two blocks with a nested mixer, to check dotted names and recursion.
struct Mixer : nn::Module {
  Mixer() {
    register_parameter("A_log", Tensor::zeros({2, 3}), {.weight_decay = false});
    register_module("proj", std::make_shared<nn::Linear>(nn::LinearOptions{3, 3, false}));
  }
  Tensor forward(const Tensor& x) override { return x; }
};
struct Net : nn::Module {
  Net() {
    auto blocks = register_module("blocks", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < 2; ++i) {
      auto b = blocks->push_back(std::make_shared<Block>());
      (void)b;
    }
    register_parameter("scale", Tensor::ones({3}));
  }
  struct Block : nn::Module {
    Block() {
      register_module("norm", std::make_shared<nn::LayerNorm>(nn::NormOptions{3}));
      register_module("mixer", std::make_shared<Mixer>());
    }
    Tensor forward(const Tensor& x) override { return x; }
  };
  Tensor forward(const Tensor& x) override { return x; }
};

}  // namespace

TEST_CASE("layers/module: dotted names in registration order, counts, options") {
  Net net;
  std::vector<std::string> expect{"blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.0.mixer.A_log",
                                  "blocks.0.mixer.proj.weight", "blocks.1.norm.weight", "blocks.1.norm.bias",
                                  "blocks.1.mixer.A_log", "blocks.1.mixer.proj.weight", "scale"};
  CHECK(names_of(net) == expect);
  CHECK(net.num_parameters() == 2 * (3 + 3 + 6 + 9) + 3);
  auto np = net.named_parameters();
  CHECK(!np[0].options.weight_decay);  // LayerNorm weight
  CHECK(!np[1].options.weight_decay);  // LayerNorm bias
  CHECK(!np[2].options.weight_decay);  // A_log
  CHECK(np[3].options.weight_decay);
  CHECK(net.parameters().size() == expect.size());
  for (const Tensor& p : net.parameters()) CHECK(p.requires_grad());

  CHECK(contains(error_of([&] { net.register_parameter("scale", Tensor::ones({1})); }), "'scale' is already registered"));
  CHECK(contains(error_of([&] { net.register_parameter("a.b", Tensor::ones({1})); }), "contains '.'"));
}

TEST_CASE("layers/module: train/eval reach every descendant") {
  Net net;
  auto children = net.named_children();
  REQUIRE(children.size() == 1);
  auto& blocks = dynamic_cast<nn::ModuleList&>(*children[0].second);
  CHECK(net.is_training());
  net.eval();
  CHECK(!net.is_training());
  CHECK(!blocks[1].is_training());
  CHECK(!blocks[1].named_children()[1].second->is_training());
  net.train();
  CHECK(blocks[0].named_children()[0].second->is_training());
}

TEST_CASE("layers/module: to(f64) converts in place and keeps names") {
  nn::Linear lin({3, 2});
  Tensor w_handle = lin.weight();
  std::vector<double> before = w_handle.to_vector();
  auto names = names_of(lin);
  lin.to(DType::f64);
  CHECK(names_of(lin) == names);
  CHECK(w_handle.dtype() == DType::f64);  // the old handle follows
  CHECK(lin.weight().dtype() == DType::f64);
  CHECK(lin.bias().dtype() == DType::f64);
  CHECK(w_handle.to_vector() == before);   // float32 -> float64 is exact
  CHECK(w_handle.requires_grad());
  CHECK(contains(error_of([&] { lin.to(DType::i32); }), "int32"));
}

TEST_CASE("layers/module: state_dict round trip and load errors") {
  manual_seed(1);
  nn::MLP a({.in = 4, .hidden = {8}, .out = 2});
  manual_seed(2);
  nn::MLP b({.in = 4, .hidden = {8}, .out = 2});
  auto sa = a.state_dict();
  CHECK(sa.size() == 4);
  CHECK(a.parameters()[0].to_vector() != b.parameters()[0].to_vector());
  b.load_state_dict(sa);
  for (const auto& p : b.named_parameters()) CHECK(p.tensor.to_vector() == sa.at(p.name).to_vector());
  // state_dict holds copies: changing the module later does not change them.
  a.parameters()[0].fill(0);
  CHECK(sa.at("layers.0.weight").to_vector() != a.parameters()[0].to_vector());

  auto missing = sa;
  missing.erase("layers.1.bias");
  std::string e = error_of([&] { b.load_state_dict(missing); });
  CHECK(contains(e, "missing key 'layers.1.bias'"));
  auto extra = sa;
  extra["layers.2.weight"] = Tensor::zeros({2, 2});
  CHECK(contains(error_of([&] { b.load_state_dict(extra); }), "unexpected key 'layers.2.weight'"));
  auto bad = sa;
  bad["layers.0.weight"] = Tensor::zeros({4, 8});
  e = error_of([&] { b.load_state_dict(bad); });
  CHECK(contains(e, "shape mismatch for 'layers.0.weight'"));
  CHECK(contains(e, "(4, 8)"));
  CHECK(contains(e, "(8, 4)"));
  // A failed load changes nothing.
  bad["layers.0.bias"] = Tensor::full({8}, 42.0);
  CHECK_THROWS_AS(b.load_state_dict(bad), Error);
  CHECK(b.named_parameters()[1].tensor.to_vector() == sa.at("layers.0.bias").to_vector());
}

TEST_CASE("layers/mlp: names, counts and seeded initialisation") {
  manual_seed(5);
  nn::MLP mlp({.in = 4, .hidden = {8}, .out = 2});
  // 4*8 + 8 + 8*2 + 2 = 58
  CHECK(mlp.num_parameters() == 58);
  CHECK(names_of(mlp) == std::vector<std::string>{"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"});
  nn::MLP deep({.in = 3, .hidden = {5, 7}, .out = 1, .activation = "tanh", .dropout = 0.1});
  // 3*5+5 + 5*7+7 + 7*1+1 = 20 + 42 + 8 = 70
  CHECK(deep.num_parameters() == 70);

  manual_seed(5);
  nn::MLP again({.in = 4, .hidden = {8}, .out = 2});
  for (size_t i = 0; i < 4; ++i) CHECK(again.parameters()[i].to_vector() == mlp.parameters()[i].to_vector());
  Generator gen(5);
  nn::MLP from_gen({.in = 4, .hidden = {8}, .out = 2}, gen);
  for (size_t i = 0; i < 4; ++i) CHECK(from_gen.parameters()[i].to_vector() == mlp.parameters()[i].to_vector());
}

TEST_CASE("layers/linear: PyTorch-style initialisation bounds") {
  nn::Linear lin({16, 32});
  CHECK(lin.weight().shape() == Shape{32, 16});
  CHECK(lin.bias().shape() == Shape{32});
  for (double v : lin.weight().to_vector()) CHECK(std::abs(v) <= 0.25);  // 1 / sqrt(16)
  for (double v : lin.bias().to_vector()) CHECK(std::abs(v) <= 0.25);
  nn::Linear nobias({16, 32, false});
  CHECK(!nobias.bias().defined());
  CHECK(nobias.num_parameters() == 512);
  nn::LayerNorm ln({5});
  CHECK(ln.named_parameters()[0].tensor.to_vector() == std::vector<double>(5, 1.0));
  CHECK(ln.named_parameters()[1].tensor.to_vector() == std::vector<double>(5, 0.0));
}

TEST_CASE("layers/options: validation names the field") {
  CHECK(contains(error_of([] { nn::Linear({0, 3}); }), "LinearOptions.in"));
  CHECK(contains(error_of([] { nn::Linear({3, -1}); }), "LinearOptions.out"));
  CHECK(contains(error_of([] { nn::LayerNorm({0}); }), "NormOptions.dim"));
  CHECK(contains(error_of([] { nn::RMSNorm({4, -1e-5}); }), "NormOptions.eps"));
  CHECK(contains(error_of([] { nn::MLP({.in = 2, .hidden = {4, 0}, .out = 1}); }), "MLPOptions.hidden[1]"));
  CHECK(contains(error_of([] { nn::MLP({.in = 2, .hidden = {}, .out = 1, .dropout = 1.0}); }), "MLPOptions.dropout"));
  std::string e = error_of([] { nn::MLP({.in = 2, .hidden = {}, .out = 1, .activation = "swish"}); });
  CHECK(contains(e, "MLPOptions.activation"));
  CHECK(contains(e, "'swish'"));
  e = error_of([] { nn::Activation("Relu"); });
  CHECK(contains(e, "relu, gelu, silu, tanh, sigmoid, identity"));
  CHECK(contains(error_of([] { nn::Dropout({-0.1}); }), "DropoutOptions.p"));
}

TEST_CASE("layers/linear: gradcheck") {
  nn::Linear lin({3, 4});
  gradcheck_module(lin, {2, 5, 3});
  nn::Linear nobias({3, 2, false});
  gradcheck_module(nobias, {4, 3});
  CHECK(contains(error_of([&] { lin.forward(Tensor::zeros({2, 4}, DType::f64)); }), "in = 3"));
}

TEST_CASE("layers/layernorm: gradcheck") {
  nn::LayerNorm ln({5});
  // Non-trivial scale and shift, so their gradients are checked away from the identity.
  Generator gen(3);
  ln.named_parameters()[0].tensor.copy_from(randn({5}, 1, 0.5, DType::f32, gen));
  ln.named_parameters()[1].tensor.copy_from(randn({5}, 0, 0.5, DType::f32, gen));
  gradcheck_module(ln, {2, 3, 5});
}

TEST_CASE("layers/rmsnorm: gradcheck") {
  nn::RMSNorm rms({4});
  Generator gen(4);
  rms.named_parameters()[0].tensor.copy_from(randn({4}, 1, 0.5, DType::f32, gen));
  gradcheck_module(rms, {3, 4});
}

TEST_CASE("layers/mlp: gradcheck for every activation") {
  for (const std::string& act : nn::activation_names()) {
    CAPTURE(act);
    Generator gen(9);
    nn::MLP mlp({.in = 3, .hidden = {4, 5}, .out = 2, .activation = act}, gen);
    gradcheck_module(mlp, {4, 3});
  }
}

TEST_CASE("layers/mlp layer type: registry options, shapes, step, gradcheck and PyTorch reference values") {
  nn::LayerArgs args("configs/x.toml [model]");
  args.set("expand", int64_t{3}).set("activation", std::string("relu"));
  auto made = nn::make_layer("mlp", 4, args);
  CHECK(made->d_model() == 4);
  CHECK(names_of(*made) == std::vector<std::string>{"mlp.layers.0.weight", "mlp.layers.0.bias",
                                                    "mlp.layers.1.weight", "mlp.layers.1.bias"});
  CHECK(made->named_parameters()[0].tensor.shape() == Shape{12, 4});
  nn::LayerArgs bad("configs/x.toml [model]");
  bad.set("expand", int64_t{0});
  CHECK(contains(error_of([&] { nn::make_layer("mlp", 4, bad); }), "configs/x.toml [model]: expand"));
  nn::LayerArgs bad_act("configs/x.toml [model]");
  bad_act.set("activation", std::string("swish2"));
  CHECK(contains(error_of([&] { nn::make_layer("mlp", 4, bad_act); }), "activation"));

  // No mixing across time: step at each position equals the forward.
  Generator gen(3);
  Tensor x = randn({2, 5, 4}, 0, 1, DType::f32, gen);
  Tensor full = made->forward(x);
  CHECK(full.shape() == Shape{2, 5, 4});
  nn::StepState st = made->init_state(2, DType::f32);
  for (int64_t t = 0; t < 5; ++t)
    CHECK_CLOSE(made->step(reshape(slice(x, 1, t, t + 1), {2, 4}), st), reshape(slice(full, 1, t, t + 1), {2, 4}),
                1e-6, 1e-7);
  gradcheck_module(*made, {2, 3, 4});

  auto fx = testing::load_fixture("mlp_layer.txt");
  for (DType dt : {DType::f64, DType::f32}) {
    nn::LayerArgs a("fixture");
    auto layer = nn::make_layer("mlp", 4, a);
    layer->to(dt);
    std::map<std::string, Tensor> state;
    for (const auto& np : layer->named_parameters()) state[np.name] = testing::fixture_tensor(fx, np.name);
    layer->load_state_dict(state);
    Tensor xin = testing::fixture_tensor(fx, "x").to(dt).set_requires_grad();
    Tensor out = layer->forward(xin);
    backward(out, testing::fixture_tensor(fx, "w").to(dt));
    const double rtol = dt == DType::f64 ? 1e-12 : 1e-5, atol = dt == DType::f64 ? 1e-13 : 1e-6;
    CAPTURE(std::string(dtype_name(dt)));
    CHECK_CLOSE(out, testing::fixture_tensor(fx, "out"), rtol, atol);
    CHECK_CLOSE(xin.grad(), testing::fixture_tensor(fx, "grad.x"), rtol, atol);
    for (const auto& np : layer->named_parameters()) {
      CAPTURE(np.name);
      CHECK_CLOSE(np.tensor.grad(), testing::fixture_tensor(fx, "grad." + np.name), rtol, atol);
    }
  }
}

TEST_CASE("layers/dropout: follows the training flag") {
  manual_seed(0);
  nn::MLP mlp({.in = 3, .hidden = {64}, .out = 2, .activation = "identity", .dropout = 0.5});
  Tensor x = randn({8, 3});
  mlp.eval();
  Tensor y1 = mlp.forward(x), y2 = mlp.forward(x);
  CHECK(y1.to_vector() == y2.to_vector());  // eval: deterministic
  mlp.train();
  Tensor y3 = mlp.forward(x);
  CHECK(y3.to_vector() != y1.to_vector());
  nn::Dropout d({0.5});
  d.eval();
  CHECK(d.forward(x).to_vector() == x.to_vector());
}
