// Optimizers, clipping and schedules against numbers worked out by hand (the arithmetic is in the
// comments), plus parameter groups and state save/restore. Gradients are set directly, so these
// tests do not depend on any op.
#include <cmath>

#include "core/cuda/multi_tensor.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "testing.h"

using namespace seqlab;

namespace {

// A leaf parameter with given values.
Tensor param(const std::vector<double>& v, DType dt = DType::f64) {
  Tensor p = Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, dt);
  p.set_requires_grad(true);
  return p;
}

void set_grad(Tensor& p, const std::vector<double>& g) {
  p.set_grad(Tensor::from_vector(g, p.shape(), p.dtype()));
}

std::vector<optim::ParamGroup> one_group(const Tensor& p, double lr, double wd) {
  return {optim::ParamGroup{{p}, {"p"}, lr, wd}};
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A module with a decayed weight, a no-decay weight and a half-lr weight.
struct Toy : nn::Module {
  Toy() {
    register_parameter("w", Tensor::ones({2, 3}));
    register_parameter("scale", Tensor::ones({3}), {.weight_decay = false});
    register_parameter("slow", Tensor::ones({4}), {.weight_decay = true, .lr_scale = 0.5});
    register_module("norm", std::make_shared<nn::LayerNorm>(nn::NormOptions{3}));
  }
  Tensor forward(const Tensor& x) override { return x; }
};

}  // namespace

TEST_CASE("optim/adamw: one step by hand") {
  // p = (1, -2), g = (0.5, 0.1), lr = 0.1, wd = 0.01, betas (0.9, 0.999), eps 1e-8, t = 1.
  // decay:  p *= 1 - 0.1 * 0.01 = 0.999            -> (0.999, -1.998)
  // m = 0.1 g = (0.05, 0.01);  v = 0.001 g^2 = (0.00025, 0.00001)
  // m_hat = m / 0.1 = (0.5, 0.1);  sqrt(v) / sqrt(0.001) = (0.5, 0.1)
  // p -= 0.1 / 0.1 * m / (sqrt(v) / sqrt(0.001) + 1e-8)
  //   p0 = 0.999 - 0.05 / 0.50000001 = 0.999 - 0.099999998000000040 = 0.899000001999999960
  //   p1 = -1.998 - 0.01 / 0.10000001 = -1.998 - 0.099999990000001000 = -2.097999990000001
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(std::string(dtype_name(dt)));
    Tensor p = param({1, -2}, dt);
    set_grad(p, {0.5, 0.1});
    optim::AdamW opt(one_group(p, 0.1, 0.01), {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8});
    opt.step();
    double tol = dt == DType::f64 ? 1e-14 : 1e-7;
    CHECK_CLOSE(p, std::vector<double>({0.899000002, -2.09799999000000100}), tol, 0);
    auto st = opt.state_dict();
    CHECK_CLOSE(st.at("exp_avg.p"), std::vector<double>({0.05, 0.01}), tol, 0);
    CHECK_CLOSE(st.at("exp_avg_sq.p"), std::vector<double>({0.00025, 0.00001}), tol, 0);
    CHECK(st.at("step").item() == 1);
    CHECK(opt.step_count() == 1);
  }
}

TEST_CASE("optim/adam: L2 weight decay is added to the gradient") {
  // p = 1, g = 0.5, lr = 0.1, wd = 0.1: g' = 0.5 + 0.1 * 1 = 0.6
  // m = 0.06, v = 0.001 * 0.36 = 0.00036;  m_hat = 0.6, sqrt(v_hat) = 0.6
  // p = 1 - 0.1 * 0.6 / (0.6 + 1e-8) = 1 - 0.099999998333333336 = 0.900000001666666664
  // Second step, g = 0.5: g' = 0.5 + 0.1 * 0.9000000016666667 = 0.59000000016666667
  // m = 0.9 * 0.06 + 0.1 g' = 0.113000000016666667;  v = 0.999 * 0.00036 + 0.001 g'^2
  //   = 0.00035964 + 0.000348100000196667 = 0.000707740000196667
  // bc1 = 1 - 0.81 = 0.19, bc2 = 1 - 0.998001 = 0.001999
  // p -= 0.1 / 0.19 * m / (sqrt(v) / sqrt(0.001999) + 1e-8)  (checked below with the same formula)
  Tensor p = param({1});
  set_grad(p, {0.5});
  optim::Adam opt(one_group(p, 0.1, 0.1), {.lr = 0.1});
  opt.step();
  CHECK_CLOSE(p, std::vector<double>({0.900000001666666664}), 1e-14, 0);
  set_grad(p, {0.5});
  opt.step();
  double m = 0.113000000016666667, v = 0.000707740000196667;
  double expect = 0.900000001666666664 - 0.1 / 0.19 * m / (std::sqrt(v) / std::sqrt(0.001999) + 1e-8);
  CHECK_CLOSE(p, std::vector<double>({expect}), 1e-12, 0);

  // AdamW with the same numbers decays the parameter instead: 1 * (1 - 0.01) - 0.1 * 0.5 / (0.5 + 1e-8).
  Tensor q = param({1});
  set_grad(q, {0.5});
  optim::AdamW optw(one_group(q, 0.1, 0.1), {.lr = 0.1});
  optw.step();
  CHECK_CLOSE(q, std::vector<double>({0.99 - 0.1 * 0.5 / (0.5 + 1e-8)}), 1e-14, 0);
}

TEST_CASE("optim/sgd: momentum and Nesterov, two steps by hand") {
  // lr = 0.1, momentum 0.9, g1 = 0.5, g2 = 0.25, p0 = 1.
  // momentum: buf1 = g1 = 0.5,  p1 = 1 - 0.1 * 0.5 = 0.95
  //           buf2 = 0.9 * 0.5 + 0.25 = 0.7,  p2 = 0.95 - 0.07 = 0.88
  // nesterov: buf1 = 0.5, d = 0.5 + 0.9 * 0.5 = 0.95,  p1 = 1 - 0.095 = 0.905
  //           buf2 = 0.7, d = 0.25 + 0.9 * 0.7 = 0.88,  p2 = 0.905 - 0.088 = 0.817
  // dampening 0.5: buf1 = g1 = 0.5 (no dampening at the first step), p1 = 0.95
  //           buf2 = 0.9 * 0.5 + 0.5 * 0.25 = 0.575,  p2 = 0.95 - 0.0575 = 0.8925
  struct Case {
    bool nesterov;
    double dampening;
    double p1, p2;
  };
  for (Case c : {Case{false, 0, 0.95, 0.88}, Case{true, 0, 0.905, 0.817}, Case{false, 0.5, 0.95, 0.8925}}) {
    CAPTURE(c.nesterov);
    CAPTURE(c.dampening);
    Tensor p = param({1});
    optim::SGD opt(one_group(p, 0.1, 0),
                   {.lr = 0.1, .momentum = 0.9, .dampening = c.dampening, .nesterov = c.nesterov});
    set_grad(p, {0.5});
    opt.step();
    CHECK_CLOSE(p, std::vector<double>({c.p1}), 1e-14, 0);
    set_grad(p, {0.25});
    opt.step();
    CHECK_CLOSE(p, std::vector<double>({c.p2}), 1e-14, 0);
  }
  // Plain SGD with L2: d = 0.5 + 0.1 * 1 = 0.6, p = 1 - 0.1 * 0.6 = 0.94.
  Tensor p = param({1});
  optim::SGD opt(one_group(p, 0.1, 0.1), {.lr = 0.1, .weight_decay = 0.1});
  set_grad(p, {0.5});
  opt.step();
  CHECK_CLOSE(p, std::vector<double>({0.94}), 1e-14, 0);
  CHECK(opt.state_dict().size() == 1);  // only "step": no momentum buffer without momentum
}

TEST_CASE("optim/sgd: options are validated") {
  CHECK(error_of([] { optim::SGDOptions{.lr = -1}.validate(); }).find("SGDOptions.lr") != std::string::npos);
  CHECK(error_of([] { optim::SGDOptions{.nesterov = true}.validate(); }).find("SGDOptions.nesterov") !=
        std::string::npos);
  CHECK(error_of([] { optim::AdamOptions{.beta2 = 1.0}.validate(); }).find("AdamOptions.beta2") !=
        std::string::npos);
}

TEST_CASE("optim/optimizer: parameters without a gradient are skipped") {
  Tensor a = param({1}), b = param({2});
  optim::AdamW opt({optim::ParamGroup{{a, b}, {"a", "b"}, 0.1, 0.5}}, {.lr = 0.1});
  set_grad(a, {1});
  opt.step();
  CHECK(b.item() == 2);  // not even decayed
  CHECK(a.item() != 1);
  opt.zero_grad();
  CHECK(!a.grad().defined());
}

TEST_CASE("optim/optimizer: groups from named parameters honour ParamOptions") {
  Toy toy;
  optim::AdamW opt(toy.named_parameters(), {.lr = 0.01, .weight_decay = 0.1});
  const auto& groups = opt.param_groups();
  REQUIRE(groups.size() == 3);
  CHECK(groups[0].names == std::vector<std::string>{"w"});
  CHECK(groups[0].weight_decay == 0.1);
  CHECK(groups[0].lr == 0.01);
  CHECK(groups[1].names == std::vector<std::string>{"scale", "norm.weight", "norm.bias"});
  CHECK(groups[1].weight_decay == 0);
  CHECK(groups[2].names == std::vector<std::string>{"slow"});
  CHECK(groups[2].lr == doctest::Approx(0.005));
  opt.set_lr(0.1);
  CHECK(opt.base_lr() == 0.1);
  CHECK(groups[0].lr == 0.1);
  CHECK(groups[2].lr == doctest::Approx(0.05));
}

TEST_CASE("optim/clip_grad_norm: by hand") {
  // grads (3, 4) and (12): norm = sqrt(9 + 16 + 144) = 13.
  // max_norm 6.5: scale by 6.5 / (13 + 1e-6) -> about (1.5, 2) and (6).
  Tensor a = param({0, 0}), b = param({0}), c = param({5});  // c has no gradient
  set_grad(a, {3, 4});
  set_grad(b, {12});
  double n = optim::clip_grad_norm({a, b, c}, 20);
  CHECK(n == doctest::Approx(13).epsilon(1e-15));
  CHECK_CLOSE(a.grad(), std::vector<double>({3, 4}), 0, 0);  // below max_norm: untouched
  n = optim::clip_grad_norm({a, b, c}, 6.5);
  CHECK(n == doctest::Approx(13).epsilon(1e-15));
  double s = 6.5 / (13 + 1e-6);
  CHECK_CLOSE(a.grad(), std::vector<double>({3 * s, 4 * s}), 1e-15, 0);
  CHECK_CLOSE(b.grad(), std::vector<double>({12 * s}), 1e-15, 0);
  CHECK(!c.grad().defined());
}

TEST_CASE("optim/schedule: multipliers at chosen steps") {
  optim::Schedule constant;
  CHECK(constant.lr_at(0) == 1.0);
  CHECK(constant.lr_at(12345) == 1.0);

  // step: gamma^floor(step / 10)
  optim::Schedule step({.name = "step", .step_size = 10, .gamma = 0.5});
  CHECK(step.lr_at(9) == 1.0);
  CHECK(step.lr_at(10) == 0.5);
  CHECK(step.lr_at(25) == 0.25);

  // cosine, warm-up 10, total 110, min 0.1:
  //   step 0: 1/10; step 9 (last warm-up step): 10/10 = 1; step 10 (warm-up end): progress 0 -> 1
  //   step 60 (half-way): 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55; step 110 (end) and after: 0.1
  optim::Schedule cos({.name = "cosine", .warmup_steps = 10, .total_steps = 110, .min_lr_ratio = 0.1});
  CHECK(cos.lr_at(0) == doctest::Approx(0.1));
  CHECK(cos.lr_at(4) == doctest::Approx(0.5));
  CHECK(cos.lr_at(9) == doctest::Approx(1.0));
  CHECK(cos.lr_at(10) == doctest::Approx(1.0));
  CHECK(cos.lr_at(60) == doctest::Approx(0.55));
  CHECK(cos.lr_at(35) == doctest::Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI / 4))));
  CHECK(cos.lr_at(110) == doctest::Approx(0.1));
  CHECK(cos.lr_at(500) == doctest::Approx(0.1));
}

TEST_CASE("optim/schedule: unknown names and bad options are errors") {
  std::string e = error_of([] { optim::Schedule({.name = "linear"}); });
  CHECK(e.find("'linear'") != std::string::npos);
  CHECK(e.find("constant, step, cosine") != std::string::npos);
  CHECK(error_of([] { optim::Schedule({.name = "cosine", .warmup_steps = 10, .total_steps = 10}); })
            .find("ScheduleOptions.total_steps") != std::string::npos);
  CHECK(error_of([] { optim::Schedule({.name = "step", .step_size = 0}); }).find("ScheduleOptions.step_size") !=
        std::string::npos);
}

TEST_CASE("optim/state_dict: save/restore gives identical continued updates") {
  for (int which = 0; which < 2; ++which) {
    CAPTURE(which);
    Generator gen(7);
    Tensor a0 = randn({5, 3}, 0, 1, DType::f32, gen), b0 = randn({4}, 0, 1, DType::f32, gen);
    std::vector<Tensor> grads;
    for (int i = 0; i < 10; ++i) grads.push_back(randn({5, 3}, 0, 1, DType::f32, gen));
    auto make = [&](const Tensor& a, const Tensor& b) -> std::unique_ptr<optim::Optimizer> {
      std::vector<optim::ParamGroup> groups{{{a}, {"a"}, 0.01, 0.1}, {{b}, {"b"}, 0.01, 0.0}};
      if (which == 0) return std::make_unique<optim::AdamW>(groups, optim::AdamOptions{.lr = 0.01});
      return std::make_unique<optim::SGD>(groups, optim::SGDOptions{.lr = 0.01, .momentum = 0.9, .nesterov = true});
    };
    auto feed = [&](Tensor& a, Tensor& b, int i) {
      a.set_grad(grads[i].clone());
      Tensor gb = Tensor::empty({4});
      for (int k = 0; k < 4; ++k) gb.data<float>()[k] = grads[i].data<float>()[k];
      b.set_grad(gb);
    };
    Tensor a = a0.clone(), b = b0.clone();
    a.set_requires_grad(true);
    b.set_requires_grad(true);
    auto opt = make(a, b);
    for (int i = 0; i < 5; ++i) {
      feed(a, b, i);
      opt->step();
    }
    // Snapshot, then a fresh optimizer on copies of the parameters.
    auto saved = opt->state_dict();
    Tensor a2 = a.clone(), b2 = b.clone();
    a2.set_requires_grad(true);
    b2.set_requires_grad(true);
    auto opt2 = make(a2, b2);
    opt2->load_state_dict(saved);
    CHECK(opt2->step_count() == 5);
    for (int i = 5; i < 10; ++i) {
      feed(a, b, i);
      opt->step();
      feed(a2, b2, i);
      opt2->step();
    }
    CHECK(a.to_vector() == a2.to_vector());
    CHECK(b.to_vector() == b2.to_vector());

    // Errors name the key.
    auto missing = saved;
    missing.erase(which == 0 ? "exp_avg_sq.b" : "momentum_buffer.b");
    CHECK(error_of([&] { opt2->load_state_dict(missing); }).find("missing key '") != std::string::npos);
    auto extra = saved;
    extra["exp_avg.zzz"] = Tensor::zeros({1});
    CHECK(error_of([&] { opt2->load_state_dict(extra); }).find("unexpected key 'exp_avg.zzz'") != std::string::npos);
    auto bad = saved;
    std::string key = which == 0 ? "exp_avg.a" : "momentum_buffer.a";
    bad[key] = Tensor::zeros({3, 5});
    std::string e = error_of([&] { opt2->load_state_dict(bad); });
    CHECK(e.find("shape mismatch for '" + key + "'") != std::string::npos);
    CHECK(e.find("(3, 5)") != std::string::npos);
    CHECK(e.find("(5, 3)") != std::string::npos);
    auto nostep = saved;
    nostep.erase("step");
    CHECK(error_of([&] { opt2->load_state_dict(nostep); }).find("'step'") != std::string::npos);
  }
}

TEST_CASE("optim/optimizer: large parameters update identically with 1 and 2 threads") {
  Generator gen(3);
  Tensor p0 = randn({300000}, 0, 1, DType::f32, gen), g = randn({300000}, 0, 1, DType::f32, gen);
  std::vector<std::vector<double>> results;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Tensor p = p0.clone();
    p.set_requires_grad(true);
    optim::AdamW opt(one_group(p, 1e-3, 0.01), {.lr = 1e-3});
    for (int i = 0; i < 3; ++i) {
      p.set_grad(g.clone());
      double n = optim::clip_grad_norm({p}, 1.0);
      CHECK(n > 1.0);
      opt.step();
    }
    results.push_back(p.to_vector());
  }
  set_num_threads(0);
  CHECK(results[0] == results[1]);
}

TEST_CASE("optim/multi-tensor plan: groups in order, one kind each, every block owned by its tensor once") {
  Generator gen(17);
  for (int trial = 0; trial < 40; ++trial) {
    const size_t count = static_cast<size_t>(gen.randint(120));
    const int64_t per_block = trial % 2 ? 2048 : 32768;
    std::vector<int64_t> sizes;
    std::vector<int> kinds;
    for (size_t i = 0; i < count; ++i) {
      sizes.push_back(gen.randint(4) == 0 ? 0 : static_cast<int64_t>(gen.randint(100000)));
      kinds.push_back(gen.randint(10) == 0 ? 1 : 0);
    }
    auto groups = cuda::plan_tensor_groups(sizes, kinds, per_block);
    size_t next = 0;
    int64_t offset = 0, chunks_before = 0;
    for (const auto& g : groups) {
      CHECK(g.begin == next);
      CHECK(g.end > g.begin);
      CHECK(g.end - g.begin <= static_cast<size_t>(cuda::kMaxTensors));
      CHECK(g.tb.count == static_cast<int>(g.end - g.begin));
      CHECK(g.block_offset == offset);
      for (size_t i = g.begin; i < g.end; ++i) CHECK(kinds[i] == kinds[g.begin]);
      // Every block of the launch: its tensor, its chunk, and the partial index a per-tensor layout gives.
      std::vector<int64_t> seen(g.end - g.begin, 0);
      for (int64_t b = 0; b < g.tb.blocks(); ++b) {
        const int t = cuda::block_owner(g.tb, b);
        REQUIRE(t >= 0);
        REQUIRE(t < g.tb.count);
        CHECK(g.tb.first[t] <= b);
        CHECK(b < g.tb.first[t + 1]);
        CHECK(g.tb.n[t] == sizes[g.begin + static_cast<size_t>(t)]);
        CHECK((b - g.tb.first[t]) * per_block < g.tb.n[t]);  // a block never starts past its tensor's end
        CHECK(seen[static_cast<size_t>(t)] == b - g.tb.first[t]);  // chunks in order, none twice
        ++seen[static_cast<size_t>(t)];
      }
      for (size_t i = g.begin; i < g.end; ++i) {
        const int64_t chunks = (sizes[i] + per_block - 1) / per_block;
        CHECK(seen[i - g.begin] == chunks);
        chunks_before += chunks;
      }
      CHECK(offset + g.tb.blocks() == chunks_before);
      offset += g.tb.blocks();
      next = g.end;
    }
    CHECK(next == count);
  }
}
