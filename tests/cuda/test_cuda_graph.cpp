// The training step captured as a CUDA graph (apps/graph_step.h) against the eager step on the same
// model, batches and seed: the same losses and the same parameter bits step for step, for each
// family; a non-finite batch skipped on the device as the eager step skips it; a batch of another shape
// run eagerly between replays; dropout replayed with the eager step's masks; SGD says why and stays eager.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "apps/graph_step.h"
#include "apps/run.h"
#include "core/cuda/runtime.h"
#include "core/random.h"
#include "layers/model.h"
#include "optim/adam.h"
#include "optim/sgd.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

namespace {

// small_model (cuda_test.h) on the GPU in training mode, from seed 7.
std::shared_ptr<nn::SequenceModel> build(const std::string& type, double dropout = 0.0) {
  manual_seed(7);
  auto m = std::make_shared<nn::SequenceModel>(small_model(type, dropout));
  m->to(Device::cuda);
  m->train();
  return m;
}

std::vector<double> all_values(const nn::SequenceModel& m) {
  std::vector<double> all;
  for (const Tensor& p : m.parameters()) {
    auto v = p.to_vector();
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

// Batch s of a run: B rows (4 unless a test asks for a short one), NaN in x where poisoned.
data::Batch batch(int s, int64_t B = 4, bool poisoned = false) {
  Tensor x = rand_cpu({B, 24, 3}, 40 + s), y = rand_cpu({B, 6, 3}, 50 + s);
  if (poisoned) {
    std::vector<double> v = x.to_vector();
    v[5] = std::nan("");
    x = Tensor::from_vector(v, x.shape());
  }
  return {x, y, B};
}

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda graph: a captured training step gives the eager step's losses and bits - every family") {
  SEQLAB_REQUIRE_GPU();
  for (const std::string type : {"lstm", "gru", "transformer", "s4d", "s4", "mamba"}) {
    CAPTURE(type);
    auto eager = build(type), graphed = build(type);
    optim::AdamW oe(eager->named_parameters(), {.lr = 1e-2, .weight_decay = 0.01});
    optim::AdamW og(graphed->named_parameters(), {.lr = 1e-2, .weight_decay = 0.01});
    app::GraphedStep step(*graphed, og, app::mse_objective(), {.grad_clip = 0.5});
    for (int s = 0; s < 6; ++s) {
      CAPTURE(s);
      if (s == 3) {  // a schedule: the replay must read the new rate
        oe.set_lr(5e-3);
        og.set_lr(5e-3);
      }
      const data::Batch b = batch(s);
      const app::StepOutcome re = app::train_step(*eager, oe, b, app::mse_objective(), {.grad_clip = 0.5});
      const app::StepOutcome rg = step(b);
      CHECK(rg.applied);
      CHECK(rg.loss == re.loss);
      CHECK(rg.bad_parameter.empty());
    }
    INFO("why eager: " << step.why_eager());
    CHECK(step.captured());
    CHECK(step.replays() == 5);  // the first step warms up, the second is captured and replayed
    CHECK(og.step_count() == oe.step_count());
    CHECK(all_values(*graphed) == all_values(*eager));
  }
}

TEST_CASE("cuda graph: a non-finite batch is skipped on the device and a short batch runs eagerly") {
  SEQLAB_REQUIRE_GPU();
  auto eager = build("mamba"), graphed = build("mamba");
  optim::Adam oe(eager->named_parameters(), {.lr = 1e-2});
  optim::Adam og(graphed->named_parameters(), {.lr = 1e-2});
  app::GraphedStep step(*graphed, og, app::mse_objective(), {.grad_clip = 1.0});
  for (int s = 0; s < 7; ++s) {
    CAPTURE(s);
    const data::Batch b = batch(s, s == 5 ? 3 : 4, s == 3);
    const app::StepOutcome re = app::train_step(*eager, oe, b, app::mse_objective(), {.grad_clip = 1.0});
    const app::StepOutcome rg = step(b);
    CHECK(rg.applied == re.applied);
    CHECK(rg.applied == (s != 3));
    CHECK(rg.bad_gradient == re.bad_gradient);
    CHECK((std::isnan(rg.loss) ? std::isnan(re.loss) : rg.loss == re.loss));
    CHECK(og.step_count() == oe.step_count());
    CHECK(all_values(*graphed) == all_values(*eager));
  }
  CHECK(step.captured());
  CHECK(step.replays() == 5);  // steps 1-4 and 6; 0 warms up, 5 is the short batch
  // After the last replay every grad() is the graph's (clipped) gradient, which the eager step's equals.
  const auto pe = eager->named_parameters(), pg = graphed->named_parameters();
  for (size_t i = 0; i < pe.size(); ++i) {
    CAPTURE(pe[i].name);
    REQUIRE(pg[i].tensor.grad().defined());
    CHECK(pg[i].tensor.grad().to_vector() == pe[i].tensor.grad().to_vector());
  }
}

TEST_CASE("cuda graph: dropout is replayed with the eager step's masks - SGD stays eager and says why") {
  SEQLAB_REQUIRE_GPU();
  {
    // Both runs draw their masks' seeds from the default generator, from the same state: a replay
    // draws them before it runs, as many and in the same order as the eager step.
    auto eager = build("transformer", 0.1), graphed = build("transformer", 0.1);
    optim::AdamW oe(eager->named_parameters(), {.lr = 1e-3});
    optim::AdamW og(graphed->named_parameters(), {.lr = 1e-3});
    std::vector<double> le, lg;
    manual_seed(100);
    for (int s = 0; s < 5; ++s)
      le.push_back(app::train_step(*eager, oe, batch(s), app::mse_objective(), {.grad_clip = 1.0}).loss);
    manual_seed(100);
    app::GraphedStep step(*graphed, og, app::mse_objective(), {.grad_clip = 1.0});
    for (int s = 0; s < 5; ++s) lg.push_back(step(batch(s)).loss);
    INFO("why eager: " << step.why_eager());
    CHECK(step.captured());
    CHECK(step.replays() == 4);
    CHECK(lg == le);
    CHECK(all_values(*graphed) == all_values(*eager));
  }
  {
    auto m = build("mamba");
    optim::SGD opt(m->named_parameters(), {.lr = 1e-2});
    app::GraphedStep step(*m, opt, app::mse_objective(), {});
    CHECK(step(batch(0)).applied);
    CHECK_FALSE(step.captured());
    CHECK(step.why_eager().find("device-side step") != std::string::npos);
  }
}

}  // TEST_SUITE
