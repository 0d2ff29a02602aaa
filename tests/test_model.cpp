// The model wrapper (input -> pre-norm residual blocks -> final norm -> head), RevIN, embedding and
// the layer registry, with a small pointwise mixer registered at run time as a user would.
#include <map>

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

namespace {
// A token model small enough for float64 gradchecks: vocabulary 5, d_model 3, one pointwise block.
ModelOptions tiny_token_model() {
  ModelOptions o;
  o.layer = "test_pointwise";
  o.vocab_size = 5;
  o.d_model = 3;
  o.n_layers = 1;
  o.head = "token";
  return o;
}
}  // namespace

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
  ModelOptions o = tiny_token_model();
  o.norm = "rmsnorm";
  SequenceModel m(o);
  m.to(DType::f64);
  Tensor ids = Tensor::from_vector({0, 4, 2, 1, 1, 3}, {2, 3}, DType::i32);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return m.forward(in[0]); }, with_params(ids, m));
}

TEST_CASE("model: tie_embeddings makes the token head the embedding table (one parameter, both gradients)") {
  ensure_registered();
  manual_seed(3);
  ModelOptions o = tiny_token_model();
  o.tie_embeddings = true;
  SequenceModel m(o);
  m.to(DType::f64);
  std::vector<std::string> names;
  for (auto& np : m.named_parameters()) names.push_back(np.name);
  CHECK(std::find(names.begin(), names.end(), "head.weight") == names.end());
  CHECK(std::find(names.begin(), names.end(), "head.bias") == names.end());
  Tensor ids = Tensor::from_vector({0, 4, 2, 1, 1, 3}, {2, 3}, DType::i32);
  // The gradient of the table sums the lookup's and the head's: gradcheck covers both uses.
  CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return m.forward(in[0]); }, with_params(ids, m));
  // The logits are those of an untied model whose head is the table with a zero bias (the same seed
  // gives the same embedding and blocks: the head is initialised last).
  manual_seed(3);
  ModelOptions ou = o;
  ou.tie_embeddings = false;
  SequenceModel untied(ou);
  untied.to(DType::f64);
  {
    NoGradGuard ng;
    std::map<std::string, Tensor> p;
    for (auto& np : untied.named_parameters()) p[np.name] = np.tensor;
    for (auto& np : m.named_parameters()) CHECK_CLOSE(np.tensor, p.at(np.name), 0, 0);
    p.at("head.weight").copy_from(p.at("embedding"));
    p.at("head.bias").copy_from(Tensor::zeros({5}, DType::f64));
  }
  CHECK_CLOSE(m.forward(ids), untied.forward(ids), 1e-14, 1e-14);
  // A series refuses the option, naming it.
  ModelOptions s;
  s.layer = "test_pointwise";
  s.in_channels = 2;
  s.tie_embeddings = true;
  CHECK_THROWS_WITH_AS(s.validate(), doctest::Contains("tie_embeddings"), OptionError);
  // Step mode goes through the same tied head.
  m.eval();
  Tensor full = m.forward(ids);
  auto state = m.init_state(2, DType::f64);
  for (int64_t t = 0; t < 3; ++t) {
    Tensor ids_t = Tensor::from_vector({ids.to_vector()[t], ids.to_vector()[3 + t]}, {2}, DType::i32);
    CHECK_CLOSE(m.step(ids_t, state), reshape(slice(full, 1, t, t + 1), {2, 5}), 1e-12, 1e-12);
  }
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

// ---------------------------------------------------------------------------------------------
// Wrapper options: channel independence (PatchTST), patches, variate tokens (iTransformer,
// S-Mamba), a reversed second mixer per block (bidir).

namespace {

ModelOptions series_options(const std::string& layer, int64_t C, int64_t T, int64_t P) {
  ModelOptions o;
  o.layer = layer;
  o.in_channels = C;
  o.d_model = 3;
  o.n_layers = 2;
  o.seq_len = T;
  o.pred_len = P;
  return o;
}

// Copies every parameter of `from` into `to` by name (same names and shapes required).
void copy_params(SequenceModel& from, SequenceModel& to) {
  auto src = from.named_parameters();
  auto dst = to.named_parameters();
  REQUIRE(src.size() == dst.size());
  for (size_t i = 0; i < src.size(); ++i) {
    REQUIRE(src[i].name == dst[i].name);
    REQUIRE(src[i].tensor.shape() == dst[i].tensor.shape());
    dst[i].tensor.copy_from(src[i].tensor);
  }
}

#define CHECK_THAT_CONTAINS(msg, part)                            \
  do {                                                            \
    std::string m_ = (msg);                                       \
    CHECK_MESSAGE(m_.find(part) != std::string::npos, m_);        \
  } while (0)

// x[:, :, c:c+1] as its own (B, T, 1) tensor.
Tensor channel(const Tensor& x, int64_t c) { return slice(x, 2, c, c + 1).detach(); }

}  // namespace

TEST_CASE("model: channel_independent, patch, variate and bidir shapes") {
  ensure_registered();
  const int64_t B = 2, T = 12, C = 3, P = 5;
  Tensor x = randn({B, T, C});
  struct Case {
    std::string embed, head;
    bool ci;
    int64_t len, stride;
    bool bidir;
    int64_t tokens, token_in, head_in, head_out;
  };
  const int64_t D = 3;
  std::vector<Case> cases = {
      {"time", "last", true, 1, 0, false, T, 1, D, P},                      // CI, a token per step
      {"time", "flatten", true, 4, 2, false, 5, 4, 5 * D, P},              // PatchTST: (12-4)/2+1 = 5 patches
      {"time", "flatten", false, 4, 0, false, 3, 4 * C, 3 * D, P * C},     // patches of all channels
      {"time", "last", false, 5, 3, true, 3, 5 * C, D, P * C},            // start (12-5)%3 = 1, 3 patches
      {"variate", "token", false, 1, 0, false, C, T, D, P},               // iTransformer
      {"variate", "flatten", false, 1, 0, true, C, T, C * D, P * C},
  };
  for (const auto& k : cases) {
    CAPTURE(k.embed);
    CAPTURE(k.head);
    CAPTURE(k.ci);
    CAPTURE(k.len);
    ModelOptions o = series_options("test_pointwise", C, T, P);
    o.embed = k.embed;
    o.head = k.head;
    o.channel_independent = k.ci;
    o.patch_len = k.len;
    o.patch_stride = k.stride;
    o.bidir = k.bidir;
    o.revin = true;
    SequenceModel m(o);
    CHECK(m.num_tokens() == k.tokens);
    std::map<std::string, Shape> shapes;
    for (auto& p : m.named_parameters()) shapes[p.name] = p.tensor.shape();
    CHECK(shapes["input.weight"] == Shape{D, k.token_in});
    CHECK(shapes["head.weight"] == Shape{k.head_out, k.head_in});
    CHECK(shapes.count("blocks.0.mixer_rev.proj.weight") == (k.bidir ? 1u : 0u));
    CHECK(m.forward(x).shape() == Shape{B, P, C});
  }
}

TEST_CASE("model: gradcheck through channel_independent, patches, variate tokens and bidir") {
  ensure_registered();
  struct Case {
    std::string layer, embed, head;
    bool ci;
    int64_t len, stride;
    bool bidir;
  };
  std::vector<Case> cases = {
      {"test_pointwise", "time", "flatten", true, 1, 0, false},
      {"test_pointwise", "time", "last", true, 3, 0, false},   // non-overlapping patches (reshape path)
      {"test_pointwise", "time", "flatten", true, 3, 2, false},  // overlapping patches (slice path)
      {"test_pointwise", "time", "flatten", false, 2, 3, false},  // patches of both channels, stride > len
      {"test_pointwise", "variate", "token", false, 1, 0, false},
      {"test_pointwise", "variate", "flatten", false, 1, 0, false},
      {"gru", "variate", "token", false, 1, 0, true},  // the reversed mixer sees the order: a real recurrence
      {"gru", "time", "last", true, 2, 1, true},
  };
  for (const auto& k : cases) {
    for (bool revin : {false, true}) {
      CAPTURE(k.layer);
      CAPTURE(k.embed);
      CAPTURE(k.head);
      CAPTURE(k.ci);
      CAPTURE(k.len);
      CAPTURE(k.stride);
      CAPTURE(revin);
      manual_seed(3);
      ModelOptions o = series_options(k.layer, 2, 7, 2);
      o.embed = k.embed;
      o.head = k.head;
      o.channel_independent = k.ci;
      o.patch_len = k.len;
      o.patch_stride = k.stride;
      o.bidir = k.bidir;
      o.revin = revin;
      o.revin_detach_stats = false;
      SequenceModel m(o);
      m.to(DType::f64);
      Tensor x = randn({2, 7, 2}, 0, 1, DType::f64).set_requires_grad();
      CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return m.forward(in[0]); }, with_params(x, m));
    }
  }
}

TEST_CASE("model: channel_independent equals the same model run on each channel alone") {
  // PyTorch (PatchTST): x.permute(0, 2, 1).reshape(B * C, T, 1) through shared weights, reshaped back.
  ensure_registered();
  for (int64_t len : {1, 4}) {
    CAPTURE(len);
    const int64_t B = 2, T = 8, C = 3, P = 4;
    ModelOptions o = series_options("gru", C, T, P);
    o.channel_independent = true;
    o.head = "flatten";
    o.patch_len = len;
    o.patch_stride = len == 1 ? 0 : 2;
    SequenceModel ci(o);
    ModelOptions o1 = o;
    o1.in_channels = 1;
    o1.channel_independent = false;
    SequenceModel single(o1);
    copy_params(ci, single);
    Tensor x = randn({B, T, C});
    Tensor y = ci.forward(x);  // (B, P, C)
    for (int64_t c = 0; c < C; ++c) CHECK_CLOSE(channel(y, c), single.forward(channel(x, c)), 1e-6, 1e-6);
  }
}

TEST_CASE("model: patches equal a per-step model on the hand-unfolded window") {
  // Patch l of a window holds steps start + l*stride ... + len - 1 (start = (T - len) mod stride, so the
  // last patch ends at the newest step), step-major: feature j*C + c is step j, channel c. PyTorch:
  // x[:, start:].unfold(1, len, stride).transpose(2, 3).reshape(B, L, len * C).
  ensure_registered();
  const int64_t B = 2, T = 11, C = 2, P = 3, len = 4, stride = 3;
  const int64_t L = (T - len) / stride + 1, start = (T - len) % stride;  // 3 patches from step 1
  ModelOptions o = series_options("gru", C, T, P);
  o.head = "flatten";
  o.patch_len = len;
  o.patch_stride = stride;
  SequenceModel patched(o);
  ModelOptions ot = series_options("gru", len * C, L, P);
  ot.head = "flatten";
  ot.out_channels = C;
  SequenceModel steps(ot);
  copy_params(patched, steps);
  Tensor x = randn({B, T, C});
  std::vector<double> xv = x.to_vector(), u(static_cast<size_t>(B * L * len * C));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t j = 0; j < len; ++j)
        for (int64_t c = 0; c < C; ++c)
          u[static_cast<size_t>(((b * L + l) * len + j) * C + c)] =
              xv[static_cast<size_t>((b * T + start + l * stride + j) * C + c)];
  CHECK_CLOSE(patched.forward(x), steps.forward(Tensor::from_vector(u, {B, L, len * C})), 1e-6, 1e-6);
}

TEST_CASE("model: variate tokens: Linear(T -> D) per variate, Linear(D -> P) per token") {
  ensure_registered();
  const int64_t B = 2, T = 6, C = 3, P = 4;
  Tensor x = randn({B, T, C});
  // With a mixer that does not mix tokens, a variate's forecast depends on its own window only: the same
  // as a channel-independent model whose one patch is the whole window.
  ModelOptions o = series_options("test_pointwise", C, T, P);
  o.embed = "variate";
  o.head = "token";
  SequenceModel variate(o);
  ModelOptions oc = series_options("test_pointwise", C, T, P);
  oc.channel_independent = true;
  oc.patch_len = T;
  SequenceModel ci(oc);
  copy_params(variate, ci);
  CHECK_CLOSE(variate.forward(x), ci.forward(x), 1e-6, 1e-6);
  // One layer by hand: y[b, :, c] = head(norm_f(h + tanh(W norm(h)))), h = W_in x[b, :, c] + b_in.
  ModelOptions o1 = o;
  o1.n_layers = 1;
  SequenceModel one(o1);
  std::map<std::string, Tensor> p;
  for (auto& np : one.named_parameters()) p[np.name] = np.tensor;
  Tensor h = linear(transpose(x, 1, 2), p["input.weight"], p["input.bias"]);  // (B, C, D)
  Tensor n = layer_norm(h, p["blocks.0.norm.weight"], p["blocks.0.norm.bias"]);
  h = add(h, tanh(linear(n, p["blocks.0.mixer.proj.weight"], p["blocks.0.mixer.proj.bias"])));
  h = layer_norm(h, p["norm_f.weight"], p["norm_f.bias"]);
  Tensor y = transpose(linear(h, p["head.weight"], p["head.bias"]), 1, 2);  // (B, P, C)
  CHECK_CLOSE(one.forward(x), y, 1e-6, 1e-6);
  // Attention without positions over variate tokens (iTransformer): permuting the channels permutes the
  // forecast the same way.
  ModelOptions ot = o;
  ot.layer = "transformer";
  ot.d_model = 4;
  ot.layer_args.set("n_heads", int64_t{2});
  SequenceModel itr(ot);
  itr.eval();  // the transformer layer's own dropout (0.1 by default) would draw different masks
  Tensor xp = concat({channel(x, 2), channel(x, 0), channel(x, 1)}, 2);
  Tensor yt = itr.forward(x);
  CHECK_CLOSE(itr.forward(xp), concat({channel(yt, 2), channel(yt, 0), channel(yt, 1)}, 2), 1e-5, 1e-6);
}

TEST_CASE("model: bidir adds a mixer over the reversed tokens") {
  ensure_registered();
  const int64_t B = 2, T = 5, C = 4, P = 3;
  Tensor x = randn({B, T, C});
  Tensor x_rev = concat({channel(x, 3), channel(x, 2), channel(x, 1), channel(x, 0)}, 2);
  auto reversed = [](const Tensor& y) {
    return concat({channel(y, 3), channel(y, 2), channel(y, 1), channel(y, 0)}, 2);
  };
  ModelOptions o = series_options("gru", C, T, P);
  o.embed = "variate";
  o.head = "token";
  o.bidir = true;
  SequenceModel m(o);
  m.eval();
  // With the reversed mixer's weights equal to the forward mixer's, reversing the variates reverses the
  // forecast; a one-directional GRU does not have that symmetry.
  for (auto& np : m.named_parameters()) {
    auto at = np.name.find(".mixer_rev.");
    if (at == std::string::npos) continue;
    std::string fwd = np.name.substr(0, at) + ".mixer." + np.name.substr(at + 11);
    for (auto& q : m.named_parameters())
      if (q.name == fwd) np.tensor.copy_from(q.tensor);
  }
  CHECK_CLOSE(m.forward(x_rev), reversed(m.forward(x)), 1e-5, 1e-6);
  o.bidir = false;
  SequenceModel uni(o);
  Tensor d = sub(uni.forward(x_rev), reversed(uni.forward(x)));
  double worst = 0;
  for (double v : d.to_vector()) worst = std::max(worst, std::abs(v));
  CHECK(worst > 1e-4);
}

TEST_CASE("model: validation rejects option combinations that do not make sense") {
  ensure_registered();
  auto err = [](const ModelOptions& o) {
    try {
      SequenceModel m(o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  auto base = [] {
    ModelOptions o = series_options("test_pointwise", 3, 8, 2);
    return o;
  };
  ModelOptions o = base();
  o.embed = "variate";
  o.head = "last";
  CHECK_THAT_CONTAINS(err(o), "model: head: expected token or flatten with embed = \"variate\"");
  o.head = "token";
  o.patch_len = 2;
  CHECK_THAT_CONTAINS(err(o), "model: patch_len: expected 1 with embed = \"variate\"");
  o.patch_len = 1;
  o.channel_independent = true;
  CHECK_THAT_CONTAINS(err(o), "channel_independent");
  o = base();
  o.head = "token";
  CHECK_THAT_CONTAINS(err(o), "model: head: expected last or flatten with embed = \"time\"");
  o = base();
  o.patch_len = 9;
  CHECK_THAT_CONTAINS(err(o), "model: patch_len: expected at most seq_len = 8, got 9");
  o = base();
  o.channel_independent = true;
  o.out_channels = 1;
  CHECK_THAT_CONTAINS(err(o), "model: channel_independent: forecasts every input channel");
  o = base();
  o.embed = "patch";
  CHECK_THAT_CONTAINS(err(o), "model: embed: expected time or variate");
  ModelOptions t;
  t.layer = "test_pointwise";
  t.vocab_size = 5;
  t.head = "token";
  t.bidir = true;
  CHECK_THAT_CONTAINS(err(t), "model: bidir: expected false for a token task");
  // The variable-length path stays open where nothing depends on T.
  o = base();
  SequenceModel any_t(o);
  CHECK(any_t.forward(randn({1, 5, 3})).shape() == Shape{1, 2, 3});
  o.patch_len = 2;
  SequenceModel fixed_t(o);
  CHECK_THROWS_WITH_AS(fixed_t.forward(randn({1, 6, 3})), doctest::Contains("built for T = 8"), Error);
}
