// Whole layers and training on the device against the CPU: every registry type's forward, its
// parameter gradients and a few AdamW steps through app::train_step; a GPU run bit-identical to
// itself; the device memory of the fused scan and of attention (allocator peak at two lengths: no
// B*T*E*N and no T*T term); a run trained on the GPU resumed on the CPU and the reverse.
#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/run.h"
#include "apps/trainer.h"
#include "autograd/node.h"
#include "autograd/ops/attention.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/scan.h"
#include "core/cuda/runtime.h"
#include "core/random.h"
#include "layers/model.h"
#include "layers/registry.h"
#include "optim/adam.h"
#include "optim/sgd.h"
#include "tests/cuda/cuda_test.h"
#include "tests/run_testing.h"

using namespace seqlab;
using namespace seqlab::test;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<nn::SequenceModel> build(const std::string& type, Device dev) {
  manual_seed(7);
  auto m = std::make_shared<nn::SequenceModel>(small_model(type));
  m->to(dev);
  return m;
}

const std::vector<std::string> kTypes{"rnn", "lstm", "gru", "mlp", "transformer", "s4d", "s4", "lssl", "mamba"};

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda layers: every registry type's forward - gradients and three SGD steps match the CPU") {
  SEQLAB_REQUIRE_GPU();
  for (const auto& t : nn::layer_types())
    CHECK_MESSAGE(std::find(kTypes.begin(), kTypes.end(), t.name) != kTypes.end(), "registry type ", t.name,
                  " has no case here");
  const Tensor x = rand_cpu({4, 24, 3}, 11), y = rand_cpu({4, 6, 3}, 12);
  for (const auto& type : kTypes) {
    CAPTURE(type);
    auto cpu = build(type, Device::cpu), gpu = build(type, Device::cuda);
    // Forward and every parameter's gradient of one MSE loss.
    Tensor lc = app::mse_objective().loss(cpu->forward(x), y);
    Tensor lg = app::mse_objective().loss(gpu->forward(x.to(Device::cuda)), y.to(Device::cuda));
    check_close(lg, lc, 1e-4, 1e-6, type + " loss");
    backward(lc);
    backward(lg);
    auto pc = cpu->named_parameters(), pg = gpu->named_parameters();
    REQUIRE(pc.size() == pg.size());
    for (size_t i = 0; i < pc.size(); ++i) {
      CHECK(pg[i].tensor.device() == Device::cuda);
      check_close(pg[i].tensor.grad(), pc[i].tensor.grad(), 2e-3, 2e-5, type + " grad " + pc[i].name);
    }
    // Three training steps (SGD with momentum, clipping at 1) on each device. Not Adam here: Adam
    // moves every weight by about lr whatever its gradient's size, so a gradient that is float32
    // round-off (a transformer's key bias) would move differently on the two devices; the fused Adam
    // update itself is compared in test_cuda_optim.cpp.
    optim::SGD oc(cpu->named_parameters(), {.lr = 0.05, .momentum = 0.9});
    optim::SGD og(gpu->named_parameters(), {.lr = 0.05, .momentum = 0.9});
    for (int s = 0; s < 3; ++s) {
      const data::Batch b{rand_cpu({4, 24, 3}, 20 + s), rand_cpu({4, 6, 3}, 30 + s), 4};
      auto rc = app::train_step(*cpu, oc, b, app::mse_objective(), {.grad_clip = 1.0});
      auto rg = app::train_step(*gpu, og, b, app::mse_objective(), {.grad_clip = 1.0});
      CHECK(rg.applied);
      CHECK(std::abs(rg.loss - rc.loss) <= 1e-4 * (1 + std::abs(rc.loss)));
    }
    for (size_t i = 0; i < pc.size(); ++i)
      check_close(pg[i].tensor, pc[i].tensor, 1e-3, 1e-4, type + " after 3 steps " + pc[i].name);
  }
}

TEST_CASE("cuda layers: a token model with the head tied to the embedding and mimetic init matches the CPU") {
  // The tied table gets two gradients (lookup and head) that the device must sum as the CPU does.
  SEQLAB_REQUIRE_GPU();
  nn::ModelOptions mo;
  mo.layer = "mamba";
  mo.vocab_size = 16;
  mo.d_model = 16;
  mo.n_layers = 2;
  mo.head = "token";
  mo.embed_init_std = 0.02;
  mo.tie_embeddings = true;
  mo.layer_args = nn::LayerArgs("cuda test tied mamba");
  mo.layer_args.set("a_init_scale", 0.01).set("tie_bc_init", true).set("d_state", int64_t{8});
  auto make = [&](Device dev) {
    manual_seed(5);
    auto m = std::make_shared<nn::SequenceModel>(mo);
    m->to(dev);
    return m;
  };
  auto cpu = make(Device::cpu), gpu = make(Device::cuda);
  std::vector<double> ids(2 * 40), tgt(2 * 40, -100.0);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<double>((i * 7 + 3) % 16);
  tgt[39] = 5;
  tgt[79] = 11;
  const data::Batch b{Tensor::from_vector(ids, {2, 40}, DType::i32), Tensor::from_vector(tgt, {2, 40}, DType::i32), 2};
  Tensor lc = app::token_objective().loss(cpu->forward(b.x), b.y);
  Tensor lg = app::token_objective().loss(gpu->forward(b.x.to(Device::cuda)), b.y.to(Device::cuda));
  check_close(lg, lc, 1e-4, 1e-6, "tied loss");
  backward(lc);
  backward(lg);
  auto pc = cpu->named_parameters(), pg = gpu->named_parameters();
  REQUIRE(pc.size() == pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    CHECK(pc[i].name != "head.weight");
    check_close(pg[i].tensor.grad(), pc[i].tensor.grad(), 2e-3, 2e-5, "tied grad " + pc[i].name);
  }
}

TEST_CASE("cuda layers: a GPU training run is bit-identical to itself at the same seed") {
  SEQLAB_REQUIRE_GPU();
  for (const std::string type : {"lstm", "transformer", "s4d", "mamba"}) {
    CAPTURE(type);
    std::vector<std::vector<double>> runs;
    for (int r = 0; r < 2; ++r) {
      auto m = build(type, Device::cuda);
      optim::AdamW opt(m->named_parameters(), {.lr = 1e-2});
      for (int s = 0; s < 3; ++s) {
        const data::Batch b{rand_cpu({4, 24, 3}, 40 + s), rand_cpu({4, 6, 3}, 50 + s), 4};
        app::train_step(*m, opt, b, app::mse_objective(), {.grad_clip = 1.0});
      }
      std::vector<double> all;
      for (const Tensor& p : m->parameters()) {
        auto v = p.to_vector();
        all.insert(all.end(), v.begin(), v.end());
      }
      runs.push_back(all);
    }
    CHECK(runs[0] == runs[1]);
  }
}

TEST_CASE("cuda layers: the fused scan keeps no (B - T - E - N) tensor and attention no (T - T) one") {
  SEQLAB_REQUIRE_GPU();
  // Device memory allocated during one forward and backward, beyond the inputs.
  auto peak_of = [](const std::function<void()>& f) {
    cuda::synchronize();
    const size_t base = cuda::device_allocator_stats().allocated;
    cuda::reset_device_peak();
    f();
    cuda::synchronize();
    return static_cast<double>(cuda::device_allocator_stats().peak - base);
  };
  const int64_t B = 2, E = 64, N = 16;
  auto scan = [&](int64_t T) {
    Tensor u = rand_cpu({B, T, E}, 1).to(Device::cuda).set_requires_grad();
    Tensor dt = rand_cpu({B, T, E}, 2, DType::f32, 0.001, 0.1).to(Device::cuda).set_requires_grad();
    Tensor A = rand_cpu({E, N}, 3, DType::f32, -2, -0.5).to(Device::cuda).set_requires_grad();
    Tensor Bm = rand_cpu({B, T, N}, 4).to(Device::cuda).set_requires_grad();
    Tensor Cm = rand_cpu({B, T, N}, 5).to(Device::cuda).set_requires_grad();
    Tensor D = rand_cpu({E}, 6).to(Device::cuda).set_requires_grad();
    return peak_of([&] { backward(sum(selective_scan(u, dt, A, Bm, Cm, D))); });
  };
  const double s1 = scan(1024), s4 = scan(4096);
  const double bten = 4.0 * B * 4096 * E * N;
  MESSAGE("selective scan: device memory beyond the inputs ", s1 / 1048576, " MiB at T=1024, ", s4 / 1048576,
          " MiB at T=4096; a (B, T, E, N) float32 tensor at 4096 would be ", bten / 1048576, " MiB");
  CHECK(s4 < bten / 2);
  CHECK(s4 < 5.0 * s1);  // linear in T
  const int64_t H = 2, Dh = 32;
  auto attn = [&](int64_t T) {
    Tensor q = rand_cpu({1, H, T, Dh}, 7).to(Device::cuda).set_requires_grad();
    Tensor k = rand_cpu({1, H, T, Dh}, 8).to(Device::cuda).set_requires_grad();
    Tensor v = rand_cpu({1, H, T, Dh}, 9).to(Device::cuda).set_requires_grad();
    return peak_of([&] { backward(sum(attention(q, k, v, true))); });
  };
  const double a1 = attn(1024), a4 = attn(4096);
  const double tt = 4.0 * H * 4096 * 4096;
  MESSAGE("attention: device memory beyond the inputs ", a1 / 1048576, " MiB at T=1024, ", a4 / 1048576,
          " MiB at T=4096; a (B, H, T, T) float32 tensor at 4096 would be ", tt / 1048576, " MiB");
  CHECK(a4 < tt / 8);
  CHECK(a4 < 5.0 * a1);
}

TEST_CASE("cuda layers: a run trained on the GPU resumes on the CPU and the reverse - continuing the same run") {
  SEQLAB_REQUIRE_GPU();
  testing::RunScope quiet(spdlog::level::warn);
  auto config = [](const fs::path& dir, int64_t steps, const char* device) {
    return app::parse_config(
        str("[data]\ntask = \"sine\"\nrows = 400\nseq_len = 16\npred_len = 4\nchannels = 2\n",
            "[model]\ntype = \"mamba\"\nd_model = 8\nn_layers = 1\n",
            "[train]\nbatch_size = 16\nthreads = 1\nseed = 3\nsteps = ", steps, "\ndevice = \"", device, "\"\n",
            "[output]\ndir = \"", dir.string(), "\"\n"),
        "gpu.toml");
  };
  for (const char* first : {"cuda", "cpu"}) {
    const char* second = std::string(first) == "cuda" ? "cpu" : "cuda";
    CAPTURE(first);
    const fs::path moved = testing::scratch(str("moved_", first)), stay = testing::scratch(str("stay_", first));
    // Stopped after step 4 as if killed (checkpoint-last.h5 written), resumed on the other device.
    testing::TestObserver stop = testing::stop_after(4);
    app::run_train(config(moved, 8, first), {.quiet = true, .observer = &stop});
    app::RunResult r = app::run_train(config(moved, 8, second), {.resume = true, .quiet = true});
    CHECK(r.device == second);
    app::RunResult s = app::run_train(config(stay, 8, first), {.quiet = true});
    // 4 steps on one device then 4 on the other against 8 on the first: float32 noise only.
    CHECK(std::abs(r.val_mse - s.val_mse) <= 1e-3 * s.val_mse);
    app::Checkpoint a = app::load_checkpoint(moved / "checkpoint-last.h5"), b = app::load_checkpoint(stay / "checkpoint-last.h5");
    CHECK(a.counters == b.counters);
    for (const auto& [k, t] : a.params) check_close(t, b.params.at(k), 1e-3, 1e-4, k);
  }
}

TEST_CASE("cuda layers: eval and length extrapolation on the GPU agree with the CPU") {
  SEQLAB_REQUIRE_GPU();
  testing::RunScope quiet(spdlog::level::warn);
  const fs::path dir = testing::scratch("gpu_eval");
  // A token run trained on the CPU (two models: a comparison's directory), evaluated on either device.
  app::Config c = app::parse_config(
      str("[data]\ntask = \"induction-heads\"\nseq_len = 32\nn_train_batches = 6\nn_eval_batches = 2\n",
          "[model]\nd_model = 16\nn_layers = 1\n[[models]]\ntype = \"mamba\"\n",
          "[[models]]\nname = \"attn\"\ntype = \"transformer\"\nn_heads = 2\ncausal = true\npos_encoding = \"sinusoidal\"\n",
          "[train]\nepochs = 1\nbatch_size = 8\neval_batch_size = 16\nthreads = 1\n",
          "[output]\ndir = \"", dir.string(), "\"\n"),
      "gpu_eval.toml");
  app::run_compare(c, {.quiet = true});
  const auto cpu = app::run_eval(dir.string(), "test", 1, "last", "cpu");
  const auto gpu = app::run_eval(dir.string(), "test", 1, "last", "cuda");
  REQUIRE(cpu.size() == 2);
  REQUIRE(gpu.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CAPTURE(cpu[i].model);
    CHECK(gpu[i].model == cpu[i].model);
    CHECK(std::abs(gpu[i].mse - cpu[i].mse) <= 1e-4 * std::abs(cpu[i].mse));  // the loss: float32 noise
    CHECK(std::abs(gpu[i].acc - cpu[i].acc) <= 1.0 / 32);  // at most one argmax tie of 32 scored tokens
  }
  app::ExtrapolateOptions xo;
  xo.seq_lens = {32, 256, 4096};
  xo.n_sequences = 8;
  xo.step = "never";
  xo.checkpoint = "last";
  const auto xc = app::run_extrapolation(dir.string(), xo);
  xo.device = "cuda";
  const auto xg = app::run_extrapolation(dir.string(), xo);
  REQUIRE(xg.size() == xc.size());
  for (size_t i = 0; i < xg.size(); ++i) {
    CAPTURE(xg[i].model);
    CAPTURE(xg[i].seq_len);
    CHECK(xg[i].status == "ok");
    CHECK(xg[i].device == "cuda");
    CHECK(xg[i].mode == "forward");
    CHECK(std::abs(xg[i].accuracy - xc[i].accuracy) <= 1.0 / 8);  // the same 8 sequences
  }
  CHECK(testing::read_file(dir / "mamba" / "extrapolation.csv").find(",forward,ok,0,last,") != std::string::npos);
  xo.step = "always";
  CHECK_THROWS_WITH_AS(app::run_extrapolation(dir.string(), xo), doctest::Contains("step mode runs on the CPU only"),
                       Error);
}

}  // TEST_SUITE
