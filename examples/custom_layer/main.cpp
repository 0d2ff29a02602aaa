// A program of the user's own, built against an installed seqlab (find_package(seqlab)): it
// registers ShortConv, builds a model that names it, and trains it on a noisy sine for a few steps.
// Exit status 0 when the loss fell by at least half.
#include <cmath>
#include <cstdio>

#include "autograd/ops.h"
#include "core/random.h"
#include "layers/model.h"
#include "optim/adam.h"
#include "short_conv.h"

int main() {
  using namespace seqlab;
  example::register_short_conv();
  manual_seed(0);

  nn::ModelOptions o;
  o.layer = "short_conv";
  o.layer_args = nn::LayerArgs("examples/custom_layer");
  o.layer_args.set("width", int64_t{4});
  o.in_channels = 1;
  o.d_model = 16;
  o.n_layers = 2;
  o.pred_len = 4;
  nn::SequenceModel model(o);
  optim::AdamW opt(model.named_parameters(), {.lr = 1e-2});

  // windows of 32 steps of sin(0.3 t) + noise; target: the next 4 clean values
  const int64_t B = 16, T = 32, P = 4;
  Generator gen(1);
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    std::vector<double> xs, ys;
    for (int64_t b = 0; b < B; ++b) {
      double t0 = 100 * gen.uniform();
      for (int64_t t = 0; t < T; ++t) xs.push_back(std::sin(0.3 * (t0 + t)) + 0.05 * gen.normal());
      for (int64_t p = 0; p < P; ++p) ys.push_back(std::sin(0.3 * (t0 + T + p)));
    }
    Tensor x = Tensor::from_vector(xs, {B, T, 1}), y = Tensor::from_vector(ys, {B, P, 1});
    Tensor loss = mse_loss(model.forward(x), y);
    opt.zero_grad();
    backward(loss);
    opt.step();
    if (step == 0) first = loss.item();
    last = loss.item();
  }
  std::printf("short_conv: %lld parameters, loss %.4f -> %.4f\n", static_cast<long long>(model.num_parameters()),
              first, last);
  return last < 0.5 * first ? 0 : 1;
}
