// The worked example of docs/EXTENDING.md (examples/custom_layer/short_conv.h), tested like any
// built-in layer: gradcheck of input and every parameter, step mode equal to the forward, and use
// through the registry by name.
#include "../examples/custom_layer/short_conv.h"
#include "layers/model.h"
#include "testing.h"

using namespace seqlab;

TEST_CASE("layers/short_conv (example): gradcheck, step mode, registry") {
  manual_seed(3);
  example::ShortConv layer({4, 3});
  layer.to(DType::f64);
  Tensor x = randn({2, 5, 4}, 0, 1, DType::f64).set_requires_grad();
  std::vector<Tensor> in{x};
  for (auto& p : layer.parameters()) in.push_back(p);
  CHECK_GRADCHECK([&](const std::vector<Tensor>& v) { return layer.forward(v[0]); }, in);

  Tensor full = layer.forward(x.detach());
  auto state = layer.init_state(2, DType::f64);
  for (int64_t t = 0; t < 5; ++t) {
    Tensor y = layer.step(reshape(slice(x.detach(), 1, t, t + 1), {2, 4}), state);
    CHECK_CLOSE(y, reshape(slice(full, 1, t, t + 1), {2, 4}), 1e-12, 1e-12);
  }

  static bool registered = (example::register_short_conv(), true);
  (void)registered;
  nn::LayerArgs args("test");
  args.set("width", int64_t{2});
  auto made = nn::make_layer("short_conv", 8, args);
  CHECK(made->d_model() == 8);
  CHECK(made->num_parameters() == 2 * 8 + 8 * 8 + 8);
}
