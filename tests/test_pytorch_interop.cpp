// seqlab checkpoints in PyTorch (scripts/to_pytorch.py): a tiny sine run of each registry family (and
// of the wrapper's options: RevIN, RMSNorm, variate tokens, the flatten head, patches, channel
// independence, bidir; and a token task) is trained here, reloaded with load_run_model and run on a
// test batch; the batch with seqlab's output goes to an HDF5 file, and the script rebuilds the model
// in PyTorch from the run directory alone and must give the same output (float64 and float32, each
// within 1e-5 of the output's scale, max(1, max |y|); measured: below 4e-7 for every case) and the
// same parameter count. Where /usr/bin/python3 (or $SEQLAB_PYTHON) cannot import torch and h5py
// (Debian: python3-torch python3-h5py) each case prints SKIPPED and CTest reports it skipped.
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/trainer.h"
#include "autograd/node.h"
#include "layers/registry.h"
#include "run_testing.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::app;
namespace fs = std::filesystem;

namespace {

std::string python() {
  const char* p = std::getenv("SEQLAB_PYTHON");
  return p && *p ? p : "/usr/bin/python3";
}

// Runs `cmd` through the shell; its exit status, stdout and stderr in `out`.
int run_command(const std::string& cmd, std::string& out) {
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int status = ::pclose(f);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

const std::string kSine = "task = \"sine\"\nrows = 300\nseq_len = 16\npred_len = 4\nchannels = 2\n";

// Trains `model_toml` (the [model] table's lines after type and d_model) a few steps on the sine
// task, then compares seqlab's and PyTorch's outputs on a test batch.
void round_trip(const std::string& name, const std::string& type, const std::string& model_toml,
                const std::string& data_toml = kSine) {
  testing::RunScope scope(spdlog::level::warn);
  fs::path dir = testing::scratch("pytorch_" + name);
  std::string toml = str("[data]\n", data_toml,
                         "[model]\ntype = \"", type, "\"\nd_model = 8\n", model_toml,
                         "[optim]\nlr = 1e-2\n",  // far enough from the initial values (D = 1, norms 1 and 0)
                         "[train]\nepochs = 1\nmax_steps = 4\nbatch_size = 8\neval_batch_size = 64\nthreads = 1\n",
                         "seed = 3\n[output]\ndir = \"", dir.string(), "\"\n");
  RunResult r = run_train(parse_config(toml, name + ".toml"), {.quiet = true});
  REQUIRE(r.finished);

  LoadedRun run = load_run_model(dir.string(), "best");
  Tensor x;  // a test batch: windows (B, T, C), or token ids (B, T) int32
  if (run.token) {
    REQUIRE(!run.test_batches.empty());
    x = run.test_batches[0].x;
  } else {
    const auto& test = *run.fc.test;
    const int64_t B = std::min<int64_t>(8, test.size());
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < B; ++i) idx.push_back(i * (test.size() / B));
    x = Tensor::empty({B, test.seq_len(), test.input_channels()});
    Tensor y_true = Tensor::empty({B, test.pred_len(), test.output_channels()});
    test.gather(idx, x, y_true);
  }
  Tensor y;
  {
    NoGradGuard ng;
    y = run.model->forward(x);  // (B, P, C) forecast or (B, T, V) logits, eval mode
  }
  Checkpoint batch;
  batch.params = {{"x", x}, {"y", y}};
  const fs::path file = dir / "batch.h5";
  save_checkpoint(file, batch);

  std::string out;
  const std::string script = std::string(SEQLAB_SOURCE_DIR) + "/scripts/to_pytorch.py";
  int rc = run_command(python() + " " + script + " " + dir.string() + " --check " + file.string(), out);
  if (rc == 77 || rc == 127) {  // the script cannot import torch or h5py, or there is no python
    // CTest's SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt) turns this line into "Skipped".
    std::cout << "SKIPPED: " << python() << " cannot import torch and h5py (Debian: python3-torch python3-h5py)\n"
              << out;
    return;
  }
  INFO(name, ": ", out);
  CHECK(rc == 0);
  CHECK(out.find(str("parameters: ", run.model->num_parameters(), "\n")) != std::string::npos);
  MESSAGE(name, ": ", out);
}

}  // namespace

TEST_SUITE_BEGIN("python");

TEST_CASE("pytorch/rnn: to_pytorch.py gives seqlab's outputs (2 blocks)") {
  round_trip("rnn", "rnn", "n_layers = 2\n");
}
TEST_CASE("pytorch/lstm: to_pytorch.py gives seqlab's outputs (2 stacked layers and RevIN)") {
  round_trip("lstm", "lstm", "n_layers = 1\nnum_layers = 2\nrevin = true\n");
}
TEST_CASE("pytorch/gru: to_pytorch.py gives seqlab's outputs (RMSNorm and 2 blocks)") {
  round_trip("gru", "gru", "n_layers = 2\nnorm = \"rmsnorm\"\n");
}
TEST_CASE("pytorch/mlp: to_pytorch.py gives seqlab's outputs (flatten head)") {
  round_trip("mlp", "mlp", "n_layers = 2\nhead = \"flatten\"\n");
}
TEST_CASE("pytorch/transformer: to_pytorch.py gives seqlab's outputs (causal with learned positions)") {
  round_trip("transformer", "transformer",
             "n_layers = 2\nn_heads = 2\nd_ff = 16\ncausal = true\npos_encoding = \"learned\"\nmax_len = 32\n");
}
TEST_CASE("pytorch/transformer: to_pytorch.py gives seqlab's outputs (variate tokens with sinusoidal positions and RevIN)") {
  round_trip("transformer_variate", "transformer",
             "n_layers = 1\nn_heads = 2\nembed = \"variate\"\nhead = \"token\"\npos_encoding = \"sinusoidal\"\nrevin = true\n");
}
TEST_CASE("pytorch/s4d: to_pytorch.py gives seqlab's outputs (RevIN)") {
  round_trip("s4d", "s4d", "n_layers = 2\nd_state = 8\nrevin = true\n");
}
TEST_CASE("pytorch/s4d: to_pytorch.py gives seqlab's outputs (bidirectional kernel with S4D-Inv and the flatten head)") {
  round_trip("s4d_bidirectional", "s4d", "n_layers = 1\nd_state = 8\nbidirectional = true\ninit = \"inv\"\nhead = \"flatten\"\n");
}
TEST_CASE("pytorch/s4: to_pytorch.py gives seqlab's outputs") {
  round_trip("s4", "s4", "n_layers = 2\nd_state = 8\n");
}
TEST_CASE("pytorch/lssl: to_pytorch.py gives seqlab's outputs") {
  round_trip("lssl", "lssl", "n_layers = 2\nd_state = 8\n");
}
TEST_CASE("pytorch/mamba: to_pytorch.py gives seqlab's outputs (RevIN)") {
  round_trip("mamba", "mamba", "n_layers = 2\nd_state = 4\nrevin = true\n");
}
TEST_CASE("pytorch/mamba: to_pytorch.py gives seqlab's outputs (bidir with overlapping patches and channel independence)") {
  round_trip("mamba_patches", "mamba",
             "n_layers = 1\nd_state = 4\nbidir = true\npatch_len = 4\npatch_stride = 2\nchannel_independent = true\n");
}

TEST_CASE("pytorch/mamba: to_pytorch.py gives seqlab's outputs (a token task: embedding and logits)") {
  round_trip("mamba_tokens", "mamba", "n_layers = 2\nd_state = 4\n",
             "task = \"selective-copying\"\nseq_len = 32\nn_train_batches = 4\nn_eval_batches = 1\n");
}

TEST_CASE("pytorch/mamba: to_pytorch.py gives seqlab's outputs (a token task with the head tied to the embedding)") {
  round_trip("mamba_tied", "mamba", "n_layers = 1\nd_state = 4\ntie_embeddings = true\nembed_init_std = 0.02\n",
             "task = \"induction-heads\"\nseq_len = 32\nn_train_batches = 4\nn_eval_batches = 1\n");
}

TEST_CASE("pytorch: every registry family has a round-trip case above") {
  // A family added to layers/registry without a case here (and in to_pytorch.py) fails this test.
  const std::vector<std::string> covered = {"rnn", "lstm", "gru", "mlp", "transformer", "s4d", "s4", "lssl", "mamba"};
  for (const nn::LayerType& t : nn::layer_types()) {
    CAPTURE(t.name);
    CHECK(std::find(covered.begin(), covered.end(), t.name) != covered.end());
  }
}

TEST_SUITE_END();
