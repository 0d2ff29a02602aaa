// Data-parallel training and the distributed compare, run by CTest under
// `mpirun -np 2 seqlab_mpi_tests` (tests/CMakeLists.txt; only built with SEQLAB_MPI). Every rank
// runs every test case (the collectives must match). Checks: two ranks with global batch 2b give
// the losses of one process with batch 2b (within 1e-5 relative; float summation order differs),
// for an MLP forecaster, a small GRU, for Mamba and for a token task (ranks score different numbers of tokens); the
// parameters are bit-identical on both ranks after training (each rank dumps them to a file, rank 0
// compares the bytes); the distributed compare's table has every row.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/config.h"
#include "apps/distributed.h"
#include "apps/trainer.h"
#include "core/error.h"
#include "core/parallel.h"
#include "run_testing.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::app;
using seqlab::testing::TestObserver;
namespace fs = std::filesystem;

namespace {

// One directory shared by every rank (named after rank 0's pid; the ranks share the file system).
fs::path shared_root() {
  static fs::path root = [] {
    double pid = dist::rank() == 0 ? static_cast<double>(::getpid()) : 0.0;
    dist::allreduce_sum(&pid, 1);
    return fs::temp_directory_path() / ("seqlab_test_mpi_" + std::to_string(static_cast<int64_t>(pid)));
  }();
  return root;
}

void check_close(double a, double b, double rel, const std::string& what) {
  const double d = std::abs(a - b) / std::max(std::abs(b), 1e-12);
  CHECK_MESSAGE(d <= rel, what, ": ", a, " (2 ranks) vs ", b, " (1 process), relative difference ", d);
}

// Trains `text` (a config whose [output] dir is DIR) data-parallel on every rank and single-process
// (each rank its own copy), then compares step losses, metrics and the ranks' parameters.
void check_data_parallel(const std::string& name, const std::string& text_with_dir) {
  REQUIRE(dist::size() == 2);
  const fs::path root = shared_root() / name;
  if (dist::rank() == 0) {
    fs::remove_all(root);
    fs::create_directories(root);
  }
  dist::barrier();
  auto config_for = [&](const fs::path& dir) {
    std::string t = text_with_dir;
    t.replace(t.find("DIR"), 3, dir.string());
    return parse_config(t, name + ".toml");
  };

  TestObserver dp_obs, sp_obs;
  RunResult dp = run_train(config_for(root / "dp"), {.quiet = true, .data_parallel = true, .observer = &dp_obs});
  const fs::path single = root / ("single_rank" + std::to_string(dist::rank()));
  RunResult sp = run_train(config_for(single), {.quiet = true, .observer = &sp_obs});
  const std::vector<double>& dp_losses = dp_obs.losses;
  const std::vector<double>& sp_losses = sp_obs.losses;
  const std::vector<Tensor>& params = dp_obs.final_params;

  REQUIRE(dp_losses.size() == sp_losses.size());
  CHECK(dp_losses.size() >= 6);
  for (size_t i = 0; i < dp_losses.size(); ++i) check_close(dp_losses[i], sp_losses[i], 1e-5, str("step ", i + 1, " loss"));
  check_close(dp.val_mse, sp.val_mse, 1e-5, "val_mse");
  check_close(dp.test_mse, sp.test_mse, 1e-5, "test_mse");
  if (sp.test_acc >= 0) check_close(dp.test_acc, sp.test_acc, 1e-5, "test_acc");
  CHECK(dp.epochs == sp.epochs);

  // Every rank dumps its parameters; rank 0 compares the bytes.
  {
    std::ofstream out(root / ("params.rank" + std::to_string(dist::rank()) + ".bin"), std::ios::binary);
    for (const Tensor& p : params) out.write(static_cast<const char*>(p.raw_data()), static_cast<std::streamsize>(p.nbytes()));
  }
  dist::barrier();
  if (dist::rank() == 0) {
    const std::string a = testing::read_file(root / "params.rank0.bin"), b = testing::read_file(root / "params.rank1.bin");
    CHECK(a.size() > 0);
    CHECK_MESSAGE(a == b, name, ": the parameters differ between rank 0 and rank 1");
    // Only rank 0 wrote the data-parallel run directory: one of each file, no leftovers.
    for (const char* f : {"config.resolved.toml", "metrics.h5", "checkpoint-best.h5", "checkpoint-last.h5", "results.csv"})
      CHECK_MESSAGE(fs::is_regular_file(root / "dp" / f), f);
  }
  dist::barrier();
}

}  // namespace

TEST_CASE("distributed: 2 ranks with global batch 2b train an MLP forecaster like 1 process with batch 2b") {
  // The "mlp" layer type (position-wise) with the flatten head: an MLP from the whole window to
  // the horizon. (No dropout: each rank draws its own masks, so with dropout the runs differ.)
  check_data_parallel(
      "mlp", str("[data]\ntask = \"sine\"\nrows = 600\nseq_len = 24\npred_len = 8\nchannels = 2\n",
                 "[model]\ntype = \"mlp\"\nd_model = 8\nn_layers = 2\nhead = \"flatten\"\n",
                 "[optim]\nlr = 3e-3\n",
                 "[train]\nepochs = 3\nbatch_size = 16\neval_batch_size = 50\nmax_steps = 4\nthreads = 1\n",
                 "patience = 0\nseed = 11\n[output]\ndir = \"DIR\"\n"));
}

TEST_CASE("distributed: 2 ranks with global batch 2b train a small GRU like 1 process with batch 2b") {
  check_data_parallel(
      "gru", str("[data]\ntask = \"sine\"\nrows = 600\nseq_len = 24\npred_len = 8\nchannels = 2\n",
                 "[model]\ntype = \"gru\"\nd_model = 8\nn_layers = 2\n",
                 "[optim]\nschedule = \"cosine\"\nwarmup_steps = 2\nlr = 3e-3\n",
                 "[train]\nepochs = 3\nbatch_size = 16\neval_batch_size = 50\nmax_steps = 4\nthreads = 1\n",
                 "patience = 0\nseed = 7\ncheckpoint_every = 3\n[output]\ndir = \"DIR\"\n"));
}

TEST_CASE("distributed: 2 ranks with global batch 2b train Mamba like 1 process with batch 2b") {
  check_data_parallel(
      "mamba", str("[data]\ntask = \"sine\"\nrows = 500\nseq_len = 16\npred_len = 4\nchannels = 2\n",
                   "[model]\ntype = \"mamba\"\nd_model = 8\nn_layers = 1\nd_state = 4\nrevin = true\n",
                   "[optim]\nlr = 3e-3\n",
                   "[train]\nepochs = 2\nbatch_size = 8\neval_batch_size = 33\nmax_steps = 4\nthreads = 1\n",
                   "patience = 0\nseed = 3\n[output]\ndir = \"DIR\"\n"));
}

TEST_CASE("distributed: a token task (ranks score different token counts) trains like 1 process") {
  check_data_parallel(
      "tokens", str("[data]\ntask = \"selective-copying\"\nseq_len = 40\nn_train_batches = 4\nn_eval_batches = 3\n",
                    "[model]\ntype = \"lstm\"\nd_model = 8\nn_layers = 1\n",
                    "[train]\nepochs = 2\nbatch_size = 6\neval_batch_size = 16\nthreads = 1\nseed = 1\n",
                    "[output]\ndir = \"DIR\"\n"));
}

#ifdef SEQLAB_BINARY
TEST_CASE("distributed: compare deals the models to the ranks and rank 0 gathers every row") {
  const fs::path dir = shared_root() / "compare";
  std::string text = str("[data]\ntask = \"sine\"\nrows = 500\nseq_len = 16\npred_len = 4\n",
                         "[model]\nd_model = 8\nn_layers = 1\n",
                         "[[models]]\ntype = \"gru\"\n[[models]]\nname = \"ssm\"\ntype = \"s4d\"\nd_state = 8\n",
                         "[[models]]\ntype = \"mamba\"\nd_state = 4\n",
                         "[train]\nepochs = 2\nmax_steps = 3\nbatch_size = 8\nthreads = 1\n",
                         "[output]\ndir = \"", dir.string(), "\"\n");
  Config c = parse_config(text, "cmp.toml");
  // Child processes (the default of `seqlab compare`): they must start single-process.
  auto rows = run_compare(c, {.quiet = true}, SEQLAB_BINARY, {"--log-level", "warn"});
  if (dist::rank() == 0) {
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].model == "gru");
    CHECK(rows[1].model == "ssm");
    CHECK(rows[2].model == "mamba");
    for (const auto& r : rows) {
      CAPTURE(r.model);
      CHECK(r.epochs == 2);
      CHECK(std::isfinite(r.test_mse));
      CHECK(fs::is_regular_file(dir / r.model / "checkpoint-best.h5"));
    }
    auto csv = read_results_csv((dir / "results.csv").string());
    REQUIRE(csv.size() == 3);
    CHECK(csv[2].model == "mamba");
    CHECK(csv[1].test_mse == doctest::Approx(rows[1].test_mse).epsilon(1e-8));
  } else {
    CHECK(rows.empty());
  }
  dist::barrier();
}
#endif

int main(int argc, char** argv) {
  dist::Session mpi(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  doctest::Context ctx(argc, argv);
  if (dist::rank() != 0) ctx.setOption("reporters", "console"), ctx.setOption("minimal", true);
  int rc = 0;
  try {
    if (dist::size() != 2) {
      std::fprintf(stderr, "seqlab_mpi_tests: run under mpirun -np 2 (got %d rank(s))\n", dist::size());
      return 1;
    }
    rc = ctx.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", dist::rank(), e.what());
    dist::abort(1);
  }
  dist::barrier();
  if (dist::rank() == 0) {
    std::error_code ec;
    fs::remove_all(shared_root(), ec);
  }
  return rc;
}
