// The fused optimizer updates and the clipping norm on the device against the CPU loops, on the same
// parameters and gradients: Adam, AdamW, SGD (momentum, Nesterov, weight decay) and clip_grad_norm.
#include <memory>

#include "autograd/named_param.h"
#include "core/cuda/multi_tensor.h"
#include "core/cuda/optim.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/sgd.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

namespace {

// Two parameters (an odd size and a large one) with fixed gradients, on `dev`.
std::vector<nn::NamedParam> params_on(Device dev, DType d) {
  std::vector<nn::NamedParam> ps;
  int i = 0;
  for (const Shape& s : {Shape{37}, Shape{300, 129}}) {
    Tensor p = rand_cpu(s, 100 + i, d).to(dev);
    p.set_requires_grad();
    ps.push_back({str("p", i), p, {}});
    ++i;
  }
  return ps;
}

void set_grads(std::vector<nn::NamedParam>& ps, int step) {
  int i = 0;
  for (auto& p : ps) p.tensor.set_grad(rand_cpu(p.tensor.shape(), 200 + 10 * step + i++, p.tensor.dtype(), -2, 2)
                                           .to(p.tensor.device()));
}

template <typename Opt, typename O>
void compare(const O& options, DType d, double rtol, const char* what) {
  auto pc = params_on(Device::cpu, d), pg = params_on(Device::cuda, d);
  Opt oc(pc, options), og(pg, options);
  for (int s = 0; s < 4; ++s) {
    set_grads(pc, s);
    set_grads(pg, s);
    oc.step();
    og.step();
  }
  for (size_t i = 0; i < pc.size(); ++i) {
    CHECK(pg[i].tensor.device() == Device::cuda);
    check_close(pg[i].tensor, pc[i].tensor, rtol, rtol, what);
  }
}

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda optim: Adam - AdamW and SGD updates match the CPU in float32 and float64") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64}) {
    const double tol = d == DType::f32 ? 1e-6 : 1e-13;
    compare<optim::Adam>(optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.1}, d, tol, "Adam (L2)");
    compare<optim::AdamW>(optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.1}, d, tol, "AdamW");
    compare<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01}, d, tol, "SGD momentum");
    compare<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true}, d, tol, "SGD Nesterov");
    compare<optim::SGD>(optim::SGDOptions{.lr = 0.1}, d, tol, "SGD plain");
  }
}

TEST_CASE("cuda optim: clip_grad_norm returns the CPU's norm and scales the same - in one order every time") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64}) {
    auto pc = params_on(Device::cpu, d), pg = params_on(Device::cuda, d);
    set_grads(pc, 0);
    set_grads(pg, 0);
    std::vector<Tensor> tc, tg;
    for (auto& p : pc) tc.push_back(p.tensor);
    for (auto& p : pg) tg.push_back(p.tensor);
    const double nc = optim::clip_grad_norm(tc, 1.0), ng = optim::clip_grad_norm(tg, 1.0);
    CHECK(std::abs(ng - nc) <= 1e-12 * nc);
    for (size_t i = 0; i < pc.size(); ++i) check_close(pg[i].tensor.grad(), pc[i].tensor.grad(), 1e-6, 1e-9, "clipped");
    // Under the threshold nothing changes; the norm is bit-identical on a second call.
    const double again = optim::clip_grad_norm(tg, 1e9);
    CHECK(again == optim::clip_grad_norm(tg, 1e9));
  }
}

TEST_CASE("cuda optim: multi-tensor launches give the bits of one launch per tensor - norm - scale - Adam - AdamW") {
  SEQLAB_REQUIRE_GPU();
  const bool was = cuda::multi_tensor();
  // 70 tensors (three groups of at most 32), float32 and float64 runs, empty ones, sizes across the
  // reduction chunk (2^15) and the elementwise block (2048).
  std::vector<Shape> shapes;
  for (int i = 0; i < 70; ++i) {
    const int64_t n = i % 11 == 3 ? 0 : i % 7 == 0 ? 70001 : i % 5 == 0 ? 32768 : 1 + 97 * i;
    shapes.push_back(Shape{n});
  }
  auto make = [&](uint64_t seed) {
    std::vector<nn::NamedParam> ps;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const DType d = (i / 9) % 3 == 2 ? DType::f64 : DType::f32;
      Tensor p = rand_cpu(shapes[i], seed + i, d).to(Device::cuda);
      p.set_requires_grad();
      ps.push_back({str("p", i), p, {}});
    }
    return ps;
  };
  auto bits = [](const std::vector<nn::NamedParam>& ps, bool grads) {
    std::vector<double> all;
    for (const auto& p : ps) {
      auto v = (grads ? p.tensor.grad() : p.tensor).to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  std::vector<double> norm[2], scaled[2], adam[2], adamw[2];
  for (int multi = 0; multi < 2; ++multi) {
    cuda::set_multi_tensor(multi == 1);
    auto ps = make(500);
    set_grads(ps, 1);
    std::vector<Tensor> gs;
    for (auto& p : ps) gs.push_back(p.tensor.grad());
    norm[multi].push_back(cuda::sum_of_squares(gs));
    norm[multi].push_back(optim::clip_grad_norm([&] {
      std::vector<Tensor> t;
      for (auto& p : ps) t.push_back(p.tensor);
      return t;
    }(), 0.5));
    scaled[multi] = bits(ps, true);
    for (int w = 0; w < 2; ++w) {
      auto qs = make(900);
      std::unique_ptr<optim::Optimizer> opt;
      if (w == 0) opt = std::make_unique<optim::Adam>(qs, optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.1});
      else opt = std::make_unique<optim::AdamW>(qs, optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.1});
      for (int s = 0; s < 3; ++s) {
        set_grads(qs, s);
        opt->step();
      }
      (w == 0 ? adam : adamw)[multi] = bits(qs, false);
    }
  }
  cuda::set_multi_tensor(was);
  CHECK(norm[0] == norm[1]);
  CHECK(scaled[0] == scaled[1]);
  CHECK(adam[0] == adam[1]);
  CHECK(adamw[0] == adamw[1]);
  CHECK(norm[0][0] > 0);
}

}  // TEST_SUITE
