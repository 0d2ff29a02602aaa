// seqlab compare with a [sweep]: every model at every point of the product, a row each with the
// swept values and the cell's status; a cell that cannot run leaves a row with its reason and the
// sweep goes on; --resume keeps finished cells and continues a killed one; bad [sweep] input fails
// before anything runs.
#include <doctest/doctest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>
#include <sstream>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/run.h"
#include "apps/trainer.h"
#include "core/error.h"
#include "run_testing.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::app;
namespace fs = std::filesystem;

#define CHECK_THAT_CONTAINS(msg, part)                     \
  do {                                                     \
    std::string m_ = (msg);                                \
    CHECK_MESSAGE(m_.find(part) != std::string::npos, m_); \
  } while (0)

using testing::sweep_config;

namespace {

struct Quiet : testing::RunScope {
  Quiet() : RunScope(spdlog::level::warn) {}
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string error_of(const std::string& text) {
  try {
    parse_config(text, "sweep.toml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("apps/sweep: every model at every point, one row each with the swept values and the status") {
  Quiet q;
  const fs::path dir = testing::scratch("sweep");
  Config c = parse_config(sweep_config(dir, "\"data.seq_len\" = [8, 12]\n\"model.d_model\" = [4, 8]\n"), "sweep.toml");
  REQUIRE(c.sweep.size() == 2);
  CHECK(sweep_cells(c) == 4);
  // The comparison's resolved file keeps the sweep and reads back to the same axes.
  const std::string resolved = to_toml(c);
  CHECK(resolved.find("[sweep]\n\"data.seq_len\" = [8, 12]\n\"model.d_model\" = [4, 8]\n") != std::string::npos);
  CHECK(parse_config(resolved, "resolved.toml").sweep.at(1).values == std::vector<std::string>{"4", "8"});
  std::vector<RunResult> rows = run_sweep(c, {.quiet = true});
  CHECK(rows.size() == 8);
  const auto csv = lines_of(testing::read_file(dir / "results.csv"));
  REQUIRE(csv.size() == 9);
  CHECK(csv[0] == "model,params,epochs,train_seconds,step_ms,peak_rss_mib,val_mse,test_mse,test_mae,data.seq_len,"
                  "model.d_model,status,device");
  // The last axis fastest; both models per cell; each cell a comparison of its own.
  CHECK(csv[1].starts_with("gru,"));
  CHECK(csv[1].ends_with(",8,4,ok,cpu"));
  CHECK(csv[2].starts_with("mlp,"));
  CHECK(csv[3].ends_with(",8,8,ok,cpu"));
  CHECK(csv[8].ends_with(",12,8,ok,cpu"));
  for (const char* cell : {"data.seq_len=8,model.d_model=4", "data.seq_len=12,model.d_model=8"}) {
    CAPTURE(cell);
    CHECK(fs::exists(dir / cell / "results.csv"));
    CHECK(fs::exists(dir / cell / "gru" / "checkpoint-best.h5"));
  }
  // results.md: a row per model and cell, the swept values first.
  const auto md = lines_of(testing::read_file(dir / "results.md"));
  REQUIRE(md.size() >= 10);
  CHECK(md[0] == "| model | data.seq_len | model.d_model | params | ms/step | peak RSS MiB | val | test | test_mae | status |");
  CHECK(md[2].starts_with("| gru | 8 | 4 | "));
  CHECK(md[2].ends_with(" | ok |"));
  // A wider model has more parameters; the same model at another length the same (head last).
  CHECK(rows[2].params > rows[0].params);
  CHECK(rows[4].params == rows[0].params);
}

TEST_CASE("apps/sweep: a cell that cannot run leaves rows with its reason, the sweep goes on, --resume keeps cells") {
  Quiet q;
  const fs::path dir = testing::scratch("sweep_fail");
  // patch_len 32 is longer than the 16-step window: that cell fails at its config, the other runs.
  Config c = parse_config(sweep_config(dir, "\"model.patch_len\" = [32, 4]\n"), "sweep.toml");
  std::vector<RunResult> rows = run_sweep(c, {.quiet = true});
  REQUIRE(rows.size() == 4);
  const auto csv = lines_of(testing::read_file(dir / "results.csv"));
  REQUIRE(csv.size() == 5);
  CHECK(csv[1].find(",32,failed: ") != std::string::npos);
  CHECK(csv[1].find("patch_len") != std::string::npos);
  CHECK(csv[3].ends_with(",4,ok,cpu"));
  CHECK(!fs::exists(dir / "model.patch_len=32" / "results.csv"));
  // --resume: the finished cell is read back (its checkpoint untouched), the failed one tried again.
  const auto before = fs::last_write_time(dir / "model.patch_len=4" / "gru" / "checkpoint-best.h5");
  std::vector<RunResult> again = run_sweep(c, {.resume = true, .quiet = true});
  REQUIRE(again.size() == 4);
  CHECK(fs::last_write_time(dir / "model.patch_len=4" / "gru" / "checkpoint-best.h5") == before);
  CHECK(again[2].test_mse == doctest::Approx(rows[2].test_mse).epsilon(1e-8));  // results.csv: 9 digits
  CHECK(lines_of(testing::read_file(dir / "results.csv"))[1].find("failed: ") != std::string::npos);
}

TEST_CASE("apps/sweep: a token task's sweep adds test_acc after the swept keys, nan in a failed cell") {
  Quiet q;
  const fs::path dir = testing::scratch("sweep_tokens");
  // seq_len 40 runs; 4 is too short for 16 tokens to copy: that cell fails.
  const std::string text =
      str("[data]\ntask = \"selective-copying\"\nseq_len = 40\nn_train_batches = 2\nn_eval_batches = 1\n",
          "[model]\ntype = \"gru\"\nd_model = 8\nn_layers = 1\n",
          "[train]\nepochs = 1\nbatch_size = 8\neval_batch_size = 16\nthreads = 1\n",
          "[output]\ndir = \"", dir.string(), "\"\n[sweep]\n\"data.seq_len\" = [40, 4]\n");
  std::vector<RunResult> rows = run_sweep(parse_config(text, "tokens.toml"), {.quiet = true});
  REQUIRE(rows.size() == 2);
  const auto csv = lines_of(testing::read_file(dir / "results.csv"));
  REQUIRE(csv.size() == 3);
  CHECK(csv[0].ends_with(",test_mae,data.seq_len,test_acc,status,device"));
  CHECK(csv[1].ends_with(str(",40,", app::fmt("%.9g", rows[0].test_acc), ",ok,cpu")));
  CHECK(rows[0].test_acc >= 0);
  CHECK(rows[0].test_acc <= 1);
  CHECK(csv[2].find(",4,nan,failed: ") != std::string::npos);
}

TEST_CASE("apps/sweep: a model that fails in a cell is a row with its reason, the cell's other models run") {
  Quiet q;
  const fs::path dir = testing::scratch("sweep_model_fails");
  // A learned position table of 10 rows: the transformer cannot take T = 16, the gru can.
  std::string text = sweep_config(dir, "\"data.seq_len\" = [8, 16]\n");
  text.replace(text.find("name = \"mlp\"\ntype = \"mlp\""), 25,
               "name = \"tf\"\ntype = \"transformer\"\nn_heads = 2\npos_encoding = \"learned\"\nmax_len = 10");
  Config c = parse_config(text, "sweep.toml");
  std::vector<RunResult> rows = run_sweep(c, {.quiet = true});
  REQUIRE(rows.size() == 4);
  const auto csv = lines_of(testing::read_file(dir / "results.csv"));
  REQUIRE(csv.size() == 5);
  CHECK(csv[3].starts_with("gru,"));
  CHECK(csv[3].ends_with(",16,ok,cpu"));
  CHECK(std::isfinite(rows[2].test_mse));
  CHECK(csv[4].starts_with("tf,0,0,nan,"));
  CHECK(csv[4].find(",16,failed: ") != std::string::npos);
  CHECK(csv[4].find("max_len = 10") != std::string::npos);
  // The cell has no table of its own, so --resume tries it again (the gru's finished run is kept).
  CHECK(!fs::exists(dir / "data.seq_len=16" / "results.csv"));
  CHECK(fs::exists(dir / "data.seq_len=8" / "results.csv"));
  std::vector<RunResult> again = run_sweep(c, {.resume = true, .quiet = true});
  REQUIRE(again.size() == 4);
  CHECK(again[2].test_mse == rows[2].test_mse);
  CHECK(lines_of(testing::read_file(dir / "results.csv"))[4].find(",16,failed: ") != std::string::npos);
}

TEST_CASE("apps/sweep: bad [sweep] input names the key and runs nothing") {
  Quiet q;
  const fs::path dir = testing::scratch("sweep_bad");
  auto bad = [&](const std::string& sweep) { return error_of(sweep_config(dir, sweep)); };
  CHECK_THAT_CONTAINS(bad("\"data.seq_lne\" = [8]\n"), "[sweep] \"data.seq_lne\": [data] has no key 'seq_lne'");
  CHECK_THAT_CONTAINS(bad("\"seq_len\" = [8]\n"), "[sweep] \"seq_len\": expected a key of [data], [model], [optim]");
  CHECK_THAT_CONTAINS(bad("\"output.dir\" = [\"a\"]\n"), "[sweep] \"output.dir\": expected a key of [data]");
  CHECK_THAT_CONTAINS(bad("\"data.seq_len\" = []\n"), "[sweep] \"data.seq_len\": expected a non-empty array");
  CHECK_THAT_CONTAINS(bad("\"data.seq_len\" = 8\n"), "[sweep] \"data.seq_len\": expected a non-empty array");
  CHECK_THAT_CONTAINS(bad("\"data.seq_len\" = [8, \"long\"]\n"), "[sweep] \"data.seq_len\": \"long\" is not of the key's type");
  CHECK_THAT_CONTAINS(bad("\"model.d_model\" = [8.5]\n"), "[sweep] \"model.d_model\": 8.5 is not of the key's type");
  // An integer stands for a float.
  CHECK(parse_config(sweep_config(dir, "\"optim.lr\" = [1, 0.001]\n"), "sweep.toml").sweep.at(0).values.at(0) == "1.0");
  // Over the limit without --yes: one line, nothing written.
  const fs::path big = testing::scratch("sweep_big");
  Config c = parse_config(sweep_config(big, "\"data.seq_len\" = [8, 9, 10, 11, 12, 13, 14, 15, 16]\n"
                                            "\"model.d_model\" = [2, 3, 4, 5, 6, 7, 8, 9]\n"), "sweep.toml");
  CHECK(sweep_cells(c) == 72);
  std::string msg;
  try {
    run_sweep(c, {.quiet = true});
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK_THAT_CONTAINS(msg, "[sweep]: 72 cells of 2 model(s) each, more than 64; pass --yes");
  CHECK(fs::is_empty(big));
}

#ifdef SEQLAB_BINARY
TEST_CASE("apps/sweep: a sweep SIGKILLed in its second cell, then --resume, ends like an uninterrupted one") {
  Quiet q;
  const std::string sweep = "\"data.seq_len\" = [8, 12]\n";
  // The reference: the same sweep uninterrupted, each model in a child process as on the command line.
  const fs::path ref = testing::scratch("sweep_kill_ref"), dir = testing::scratch("sweep_kill");
  auto text = [&](const fs::path& out) {
    std::string t = sweep_config(out, sweep);
    // Six steps, a checkpoint after each: the kill lands mid-model.
    t.replace(t.find("max_steps = 3"), 13, "max_steps = 6\ncheckpoint_every = 1");
    return t;
  };
  const std::vector<std::string> quiet = {"--log-level", "off"};
  std::vector<RunResult> full = run_sweep(parse_config(text(ref), "sweep.toml"), {.quiet = true}, SEQLAB_BINARY, quiet);
  REQUIRE(full.size() == 4);

  const fs::path config = dir / "sweep.toml";
  std::ofstream(config) << text(dir / "run");
  std::string exe = SEQLAB_BINARY, log = "--log-level", off = "off", compare = "compare", cfg = config.string();
  char* argv[] = {exe.data(), log.data(), off.data(), compare.data(), cfg.data(), nullptr};
  // Its own process group, so that the kill takes the sweep and the model it is training, as a
  // machine's crash or the OOM killer of a job would.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, exe.c_str(), nullptr, &attr, argv, environ) == 0);
  posix_spawnattr_destroy(&attr);
  const fs::path second = dir / "run" / "data.seq_len=12" / "gru" / "checkpoint-last.h5";
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  bool exited = false;
  while (!fs::exists(second) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120)) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  REQUIRE_MESSAGE(!exited, "the sweep finished before the kill (status ", status, ")");
  ::kill(-pid, SIGKILL);
  waitpid(pid, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  // Killed in the second cell: the table holds the first cell only.
  const auto before = lines_of(testing::read_file(dir / "run" / "results.csv"));
  REQUIRE(before.size() == 3);
  CHECK(before[2].ends_with(",8,ok,cpu"));
  CHECK(!fs::exists(dir / "run" / "data.seq_len=12" / "results.csv"));
  const auto kept = fs::last_write_time(dir / "run" / "data.seq_len=8" / "gru" / "checkpoint-best.h5");

  std::vector<RunResult> resumed =
      run_sweep(load_config(config.string()), {.resume = true, .quiet = true}, SEQLAB_BINARY, quiet);
  REQUIRE(resumed.size() == 4);
  CHECK(fs::last_write_time(dir / "run" / "data.seq_len=8" / "gru" / "checkpoint-best.h5") == kept);
  const auto after = lines_of(testing::read_file(dir / "run" / "results.csv"));
  REQUIRE(after.size() == 5);
  for (size_t i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(resumed[i].model == full[i].model);
    CHECK(resumed[i].val_mse == doctest::Approx(full[i].val_mse).epsilon(1e-8));  // results.csv: 9 digits
    CHECK(resumed[i].test_mse == doctest::Approx(full[i].test_mse).epsilon(1e-8));
    CHECK(after[i + 1].ends_with(i < 2 ? ",8,ok,cpu" : ",12,ok,cpu"));
  }
}
#endif
