// Float64 finite-difference gradient checks ON the device: autograd's gradcheck with cuda inputs
// (each perturbed value sent to the device, every evaluation and the analytic backward run by the
// CUDA kernels), for the fused ops of every layer family, the norms, the GEMMs, the losses and
// softmax. The per-op comparisons with the CPU kernels are in the other files of tests/cuda.
#include <functional>
#include <memory>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops/attention.h"
#include "autograd/ops/conv1d.h"
#include "autograd/ops/linalg.h"
#include "autograd/ops/long_conv.h"
#include "autograd/ops/loss.h"
#include "autograd/ops/nn.h"
#include "autograd/ops/rnn.h"
#include "autograd/ops/s4.h"
#include "autograd/ops/s4d.h"
#include "autograd/ops/scan.h"
#include "autograd/ops/softmax.h"
#include "core/kernels/hippo.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// float64 cuda leaves from host values in [lo, hi).
Tensor leaf(const Shape& s, uint64_t seed, double lo = -1, double hi = 1) {
  Tensor t = rand_cpu(s, seed, DType::f64, lo, hi).to(Device::cuda);
  t.set_requires_grad();
  return t;
}

void check_on_device(const char* op, const Fn& f, const std::vector<Tensor>& in) {
  for (const Tensor& t : in)
    if (t.defined()) REQUIRE(t.device() == Device::cuda);
  GradcheckResult g = gradcheck(f, in);
  CHECK_MESSAGE(g.ok, op << ":\n" << g.report);
  MESSAGE(op << ": max rel error " << g.max_rel_error);
}

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda gradcheck: linear - layer_norm - rms_norm - softmax and the losses on the device") {
  SEQLAB_REQUIRE_GPU();
  check_on_device("linear", [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                  {leaf({2, 3, 5}, 1), leaf({4, 5}, 2), leaf({4}, 3)});
  check_on_device("layer_norm", [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); },
                  {leaf({3, 7}, 4), leaf({7}, 5), leaf({7}, 6)});
  check_on_device("rms_norm", [](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1]); },
                  {leaf({3, 7}, 7), leaf({7}, 8)});
  check_on_device("softmax", [](const std::vector<Tensor>& in) { return softmax(in[0], -1); }, {leaf({3, 6}, 9)});
  Tensor target = rand_cpu({3, 4}, 10, DType::f64).to(Device::cuda);
  check_on_device("mse_loss", [&](const std::vector<Tensor>& in) { return mse_loss(in[0], target); },
                  {leaf({3, 4}, 11)});
  check_on_device("huber_loss", [&](const std::vector<Tensor>& in) { return huber_loss(in[0], target, 0.5); },
                  {leaf({3, 4}, 12)});
  Tensor ids = Tensor::from_vector({0, 3, 1, 2, 4}, {5}, DType::i32, Device::cuda);
  check_on_device("cross_entropy", [&](const std::vector<Tensor>& in) { return cross_entropy(in[0], ids); },
                  {leaf({5, 6}, 13)});
}

TEST_CASE("cuda gradcheck: attention (split and packed heads - causal) on the device") {
  SEQLAB_REQUIRE_GPU();
  check_on_device("attention", [](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], true); },
                  {leaf({1, 2, 5, 4}, 20), leaf({1, 2, 5, 4}, 21), leaf({1, 2, 5, 4}, 22)});
  check_on_device("attention_packed", [](const std::vector<Tensor>& in) { return attention_packed(in[0], 2, false); },
                  {leaf({2, 4, 3 * 2 * 3}, 23)});
}

TEST_CASE("cuda gradcheck: the selective scan and the causal conv1d on the device") {
  SEQLAB_REQUIRE_GPU();
  SelectiveScanOptions o;
  o.delta_softplus = true;
  o.chunk = 3;  // several chunks: the backward's recompute from checkpoints
  const int64_t B = 1, T = 7, E = 3, N = 2;
  Tensor z = leaf({B, T, E}, 30), bias = leaf({E}, 31);
  o.z = z;
  o.delta_bias = bias;
  check_on_device("selective_scan",
                  [&](const std::vector<Tensor>& in) { return selective_scan(in[0], in[1], in[2], in[3], in[4], in[5], o); },
                  {leaf({B, T, E}, 32), leaf({B, T, E}, 33, -0.5, 0.5), leaf({E, N}, 34, -1.5, -0.5), leaf({B, T, N}, 35),
                   leaf({B, T, N}, 36), leaf({E}, 37), z, bias});
  check_on_device("causal_conv1d", [](const std::vector<Tensor>& in) { return causal_conv1d(in[0], in[1], in[2], true); },
                  {leaf({2, 6, 3}, 38), leaf({3, 4}, 39), leaf({3}, 40)});
}

TEST_CASE("cuda gradcheck: tanh RNN - LSTM and GRU recurrences on the device") {
  SEQLAB_REQUIRE_GPU();
  for (RnnCell cell : {RnnCell::tanh, RnnCell::lstm, RnnCell::gru}) {
    const int64_t G = kernels::rnn_gate_count(cell), H = 3, I = 2;
    check_on_device("rnn_layer",
                    [cell](const std::vector<Tensor>& in) { return rnn_layer(cell, in[0], in[1], in[2], in[3], in[4]); },
                    {leaf({2, 5, I}, 50), leaf({G * H, I}, 51), leaf({G * H, H}, 52), leaf({G * H}, 53), leaf({G * H}, 54)});
  }
}

TEST_CASE("cuda gradcheck: the S4D - S4 and LSSL kernels and the long convolution on the device") {
  SEQLAB_REQUIRE_GPU();
  const int64_t D = 2, M = 3, T = 6;
  check_on_device("s4d_kernel",
                  [](const std::vector<Tensor>& in) { return s4d_kernel(in[0], in[1], in[2], in[3], 6); },
                  {leaf({D}, 60, std::log(0.01), std::log(0.1)), leaf({D, M}, 61, -1, 0.5), leaf({D, M}, 62, 0, 3),
                   leaf({D, M, 2}, 63)});
  check_on_device("s4_kernel",
                  [](const std::vector<Tensor>& in) { return s4_kernel(in[0], in[1], in[2], in[3], in[4], in[5], 6); },
                  {leaf({D}, 64, std::log(0.01), std::log(0.1)), leaf({D, M}, 65, -1, 0.5), leaf({D, M}, 66, 0, 3),
                   leaf({D, M, 2}, 67, -0.3, 0.3), leaf({D, M, 2}, 68), leaf({D, M, 2}, 69)});
  auto hp = std::make_shared<const kernels::HippoLegs>(kernels::hippo_legs(4));
  check_on_device("lssl_kernel", [hp](const std::vector<Tensor>& in) { return lssl_kernel(in[0], in[1], hp, 6); },
                  {leaf({D}, 70, std::log(0.1), std::log(0.6)), leaf({D, 4}, 71)});
  check_on_device("causal_conv (long convolution)",
                  [](const std::vector<Tensor>& in) { return causal_conv_fft(in[0], in[1]); },
                  {leaf({2, T, D}, 72), leaf({D, T}, 73)});
  check_on_device("conv_skip_gelu", [](const std::vector<Tensor>& in) { return conv_skip_gelu(in[0], in[1], in[2]); },
                  {leaf({2, T, D}, 74), leaf({D, T}, 75), leaf({D}, 76)});
}

}  // TEST_SUITE
