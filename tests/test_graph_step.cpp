// apps/graph_step.h where no graph can be used: a CPU model's GraphedStep is train_step (the same
// outcome and bits) and says why. The captured step itself is tested on a GPU (tests/cuda/test_cuda_graph.cpp).
#include <memory>
#include <string>
#include <vector>

#include "apps/graph_step.h"
#include "apps/run.h"
#include "core/random.h"
#include "layers/model.h"
#include "optim/adam.h"
#include "testing.h"
#include "tests/cuda/cuda_test.h"  // small_model

using namespace seqlab;

TEST_CASE("graph step: on a CPU model every step is train_step and the reason is given") {
  auto build = [] {
    manual_seed(3);
    return std::make_shared<nn::SequenceModel>(test::small_model("mamba"));
  };
  auto a = build(), b = build();
  optim::AdamW oa(a->named_parameters(), {.lr = 1e-2});
  optim::AdamW ob(b->named_parameters(), {.lr = 1e-2});
  app::GraphedStep step(*b, ob, app::mse_objective(), {.grad_clip = 1.0});
  for (int s = 0; s < 3; ++s) {
    manual_seed(100 + s);
    const data::Batch batch{randn({2, 24, 3}, 0, 1), randn({2, 6, 3}, 0, 1), 2};
    const app::StepOutcome ra = app::train_step(*a, oa, batch, app::mse_objective(), {.grad_clip = 1.0});
    const app::StepOutcome rb = step(batch);
    CHECK(rb.applied);
    CHECK(rb.loss == ra.loss);
  }
  CHECK_FALSE(step.captured());
  CHECK(step.replays() == 0);
  CHECK(step.why_eager() == "the model is not on the GPU");
  CHECK(ob.step_count() == 3);
  const auto pa = a->parameters(), pb = b->parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) CHECK(pa[i].to_vector() == pb[i].to_vector());
}
