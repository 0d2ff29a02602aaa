// The fused optimizer updates and the clipping norm on the device against the CPU loops, on the same
// parameters and gradients: Adam, AdamW, SGD (momentum, Nesterov, weight decay) and clip_grad_norm.
#include "autograd/named_param.h"
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

}  // TEST_SUITE
