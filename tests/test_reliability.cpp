// The promises of docs/RELIABILITY.md that need a training run: a NaN/Inf loss or gradient stops
// training naming the step and the parameter (or skips the step), and checkpoint-last.h5 keeps the
// last good state; SIGKILL at any step, even during a checkpoint write, leaves a readable checkpoint
// and --resume ends bit-identical to an uninterrupted run; SIGINT writes a checkpoint and exits
// 130; every model type gives bit-identical metrics twice with the same seed and thread count.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/trainer.h"
#include "core/error.h"
#include "core/parallel.h"
#include "run_testing.h"
#include "testing.h"

extern char** environ;

using namespace seqlab;
using namespace seqlab::app;
namespace fs = std::filesystem;

namespace {

using testing::check_same_params;
using testing::scratch;
using testing::scratch_root;
using testing::TestObserver;
using testing::stop_after;
using testing::poison_at;

// Quiet logs for one test, then restore and clean up.
struct Quiet : testing::RunScope {
  Quiet() : RunScope(spdlog::level::off) {}
};


// Tiny sine forecasting with a GRU and dropout (the generator state matters on resume).
std::string sine_config(const fs::path& dir, int epochs, int max_steps, int checkpoint_every,
                        const std::string& extra_train = "", const std::string& optim = "lr = 3e-3\n") {
  return str("[data]\ntask = \"sine\"\nrows = 600\nseq_len = 24\npred_len = 8\nchannels = 2\n",
             "[model]\ntype = \"gru\"\nd_model = 8\nn_layers = 2\ndropout = 0.1\n",
             "[optim]\n", optim,
             "[train]\nepochs = ", epochs, "\nbatch_size = 16\neval_batch_size = 64\nmax_steps = ", max_steps,
             "\nthreads = 1\npatience = 0\nseed = 11\ncheckpoint_every = ", checkpoint_every, "\n", extra_train,
             "[output]\ndir = \"", dir.string(), "\"\n");
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool all_finite(const Checkpoint& c) {
  for (const auto& [k, t] : c.params)
    for (double v : t.to_vector())
      if (!std::isfinite(v)) return false;
  return true;
}


#ifdef SEQLAB_BINARY
// `seqlab --log-level off COMMAND config` (train or compare) in a child process.
pid_t spawn_train(const fs::path& config, std::string command = "train") {
  std::string exe = SEQLAB_BINARY, log = "--log-level", off = "off", cfg = config.string();
  char* argv[] = {exe.data(), log.data(), off.data(), command.data(), cfg.data(), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, environ) == 0);
  return pid;
}

// Waits (at most 60 s) until `file` exists; false when the child exited first (status set).
bool wait_for_file(pid_t pid, const fs::path& file, int& status) {
  auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(file) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  return true;
}

// global_step of checkpoint-last.h5, -1 when there is none yet.
int64_t step_of(const fs::path& last) {
  if (!fs::exists(last)) return -1;
  return load_checkpoint(last).counters.at("global_step");  // must always open: it is renamed into place
}
#endif

}  // namespace

TEST_CASE("reliability/nonfinite: a NaN gradient stops training naming step and parameter and checkpoint-last.h5 stays good") {
  Quiet q;
  fs::path ref = scratch("nan_ref"), dir = scratch("nan");
  // Reference: the same run stopped after step 5 (checkpoints at steps 2 and 4).
  TestObserver stop5 = stop_after(5), poison5 = poison_at(5);
  run_train(parse_config(sine_config(ref, 2, 6, 2), "sine.toml"), {.quiet = true, .observer = &stop5});
  Config c = parse_config(sine_config(dir, 2, 6, 2), "sine.toml");
  std::string msg = error_of([&] { run_train(c, {.quiet = true, .observer = &poison5}); });
  CAPTURE(msg);
  CHECK(msg.find("[gru] non-finite gradient") != std::string::npos);
  CHECK(msg.find("at step 5 (epoch 1, batch 5)") != std::string::npos);
  CHECK(msg.find("on_nonfinite") != std::string::npos);
  CHECK(msg.find("checkpoint-last.h5 holds step 4") != std::string::npos);
  const std::string tag = "first parameter with a non-finite gradient: '";
  auto at = msg.find(tag);
  REQUIRE(at != std::string::npos);
  std::string param = msg.substr(at + tag.size(), msg.find('\'', at + tag.size()) - at - tag.size());
  Checkpoint last = load_checkpoint(dir / "checkpoint-last.h5");
  CHECK(last.params.count(param));
  CHECK(last.counters.at("global_step") == 4);
  CHECK(all_finite(last));
  check_same_params(ref / "checkpoint-last.h5", dir / "checkpoint-last.h5");
  CHECK(!fs::exists(dir / "results.csv"));  // the run does not look complete
  // --resume continues from the last good state (the fault was injected, so it does not recur).
  RunResult resumed = run_train(c, {.resume = true, .quiet = true});
  CHECK(resumed.finished);
  CHECK(std::isfinite(resumed.test_mse));
}

TEST_CASE("reliability/nonfinite: a huge learning rate diverges and stops without writing non-finite parameters") {
  Quiet q;
  fs::path dir = scratch("huge_lr");
  Config c = parse_config(sine_config(dir, 2, 10, 1, "", "name = \"sgd\"\nmomentum = 0.0\nlr = 1e30\ngrad_clip = 0.0\n"),
                          "sine.toml");
  std::string msg = error_of([&] { run_train(c, {.quiet = true}); });
  CAPTURE(msg);
  CHECK(msg.find("non-finite") != std::string::npos);
  CHECK(msg.find("step ") != std::string::npos);
  CHECK(msg.find("'") != std::string::npos);  // names a parameter
  if (fs::exists(dir / "checkpoint-last.h5")) CHECK(all_finite(load_checkpoint(dir / "checkpoint-last.h5")));
  CHECK(!fs::exists(dir / "results.csv"));
}

TEST_CASE("reliability/nonfinite: on_nonfinite skip drops the step and counts it and the run finishes") {
  Quiet q;
  fs::path dir = scratch("skip"), dir2 = scratch("skip_resumed");
  const std::string skip = "on_nonfinite = \"skip\"\n";
  TestObserver poison3 = poison_at(3), stop5_poison3 = stop_after(5, 3);
  RunResult r = run_train(parse_config(sine_config(dir, 2, 6, 2, skip), "sine.toml"),
                          {.quiet = true, .observer = &poison3});
  CHECK(r.finished);
  CHECK(r.skipped_steps == 1);
  CHECK(std::isfinite(r.test_mse));
  Checkpoint last = load_checkpoint(dir / "checkpoint-last.h5");
  CHECK(all_finite(last));
  CHECK(last.counters.at("skipped_steps") == 1);
  CHECK(last.counters.at("global_step") == 12);
  // The skip count survives a resume.
  Config c2 = parse_config(sine_config(dir2, 2, 6, 2, skip), "sine.toml");
  run_train(c2, {.quiet = true, .observer = &stop5_poison3});
  RunResult r2 = run_train(c2, {.resume = true, .quiet = true});
  CHECK(r2.skipped_steps == 1);
  CHECK(r2.test_mse == r.test_mse);
  std::string bad = error_of([&] { parse_config(sine_config(dir, 1, 1, 0, "on_nonfinite = \"ignore\"\n"), "x.toml"); });
  CHECK(bad.find("x.toml: [train] on_nonfinite: expected one of stop, skip, got \"ignore\"") != std::string::npos);
}

#ifdef SEQLAB_BINARY
TEST_CASE("reliability/crash: SIGKILL at 10 different steps (some during a checkpoint write) and --resume always ends identical") {
  Quiet q;
  const int epochs = 4, steps = 15;  // 60 steps, a checkpoint after every one
  fs::path ref = scratch("kill10_ref");
  RunResult full = run_train(parse_config(sine_config(ref, epochs, steps, 1), "sine.toml"), {.quiet = true});
  REQUIRE(full.finished);
  std::set<int64_t> killed_at;
  int mid_write = 0, finished_early = 0;
  for (int trial = 0; trial < 10; ++trial) {
    CAPTURE(trial);
    fs::path dir = scratch("kill10_" + std::to_string(trial));
    const fs::path config = dir / "sine.toml", last = dir / "run" / "checkpoint-last.h5";
    std::ofstream(config) << sine_config(dir / "run", epochs, steps, 1);
    const int64_t target = 2 + 6 * trial;
    pid_t pid = spawn_train(config);
    int status = 0;
    bool exited = false;
    auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (step_of(last) >= target) break;
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
    if (!exited) {
      // Odd trials wait for the next checkpoint write to be under way (its .tmp file exists).
      const fs::path tmp = last.string() + ".tmp";
      if (trial % 2 == 1) {
        auto t1 = std::chrono::steady_clock::now();
        while (!fs::exists(tmp) && std::chrono::steady_clock::now() - t1 < std::chrono::milliseconds(500)) {
        }
      }
      ::kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      if (WIFSIGNALED(status)) {
        mid_write += fs::exists(tmp);
      } else {  // it finished on its own between the last poll and the kill (a loaded machine)
        const bool clean_exit = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        CHECK_MESSAGE(clean_exit, "the run failed instead of being killed");
        exited = true;
      }
    }
    if (exited) {
      REQUIRE(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
      ++finished_early;
    }
    // The checkpoint always opens, whatever the moment of the kill.
    Checkpoint at_kill = load_checkpoint(last);
    killed_at.insert(at_kill.counters.at("global_step"));
    const bool resumable = !fs::exists(dir / "run" / "results.csv") || exited;
    CHECK(resumable);
    RunResult resumed = run_train(load_config(config.string()), {.resume = true, .quiet = true});
    CHECK(resumed.finished);
    CHECK(resumed.test_mse == full.test_mse);
    CHECK(resumed.val_mse == full.val_mse);
    check_same_params(ref / "checkpoint-last.h5", dir / "run" / "checkpoint-last.h5");
    check_same_params(ref / "checkpoint-best.h5", dir / "run" / "checkpoint-best.h5");
    CHECK(read_metrics(dir / "run" / "metrics.h5").at("test_mse") == read_metrics(ref / "metrics.h5").at("test_mse"));
  }
  std::string steps_list;
  for (auto s : killed_at) steps_list += std::to_string(s) + " ";
  MESSAGE("killed at steps ", steps_list, "(", mid_write, " during a checkpoint write, ", finished_early,
          " finished before the kill)");
  CHECK(killed_at.size() >= 8);
  CHECK(mid_write >= 1);
}

TEST_CASE("reliability/interrupt: SIGINT writes checkpoint-last.h5 and exits 130 and --resume ends identical") {
  Quiet q;
  const int epochs = 6, steps = 15;
  fs::path ref = scratch("sigint_ref"), dir = scratch("sigint");
  RunResult full = run_train(parse_config(sine_config(ref, epochs, steps, 0), "sine.toml"), {.quiet = true});
  const fs::path config = dir / "sine.toml", last = dir / "run" / "checkpoint-last.h5";
  std::ofstream(config) << sine_config(dir / "run", epochs, steps, 0);
  pid_t pid = spawn_train(config);
  int status = 0;
  REQUIRE(wait_for_file(pid, last, status));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // into the second epoch
  ::kill(pid, SIGINT);
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  Checkpoint ck = load_checkpoint(last);
  MESSAGE("interrupted at step ", ck.counters.at("global_step"), " (epoch ", ck.counters.at("epoch") + 1, ", batch ",
          ck.counters.at("batch"), ")");
  CHECK(ck.counters.at("done") == 0);
  CHECK(!fs::exists(dir / "run" / "results.csv"));
  RunResult resumed = run_train(load_config(config.string()), {.resume = true, .quiet = true});
  CHECK(resumed.finished);
  CHECK(resumed.test_mse == full.test_mse);
  check_same_params(ref / "checkpoint-last.h5", dir / "run" / "checkpoint-last.h5");
}

TEST_CASE("reliability/interrupt: SIGTERM to seqlab compare alone reaches the model training in its child") {
  // `kill PID` of the parent (not the terminal's Ctrl-C, which reaches the whole process group):
  // the parent passes the stop on (SIGUSR1), the child writes checkpoint-last.h5 and exits 130, no
  // further model starts, the parent exits 130, and --resume finishes the comparison.
  Quiet q;
  fs::path dir = scratch("sigterm_compare");
  const fs::path config = dir / "cmp.toml", last = dir / "run" / "a" / "checkpoint-last.h5";
  std::ofstream(config) << sine_config(dir / "run", 40, 15, 0)
                        << "[[models]]\nname = \"a\"\n[[models]]\nname = \"b\"\ntype = \"lstm\"\n";
  pid_t pid = spawn_train(config, "compare");
  int status = 0;
  REQUIRE(wait_for_file(pid, last, status));
  ::kill(pid, SIGTERM);
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  Checkpoint ck = load_checkpoint(last);
  MESSAGE("model a stopped at step ", ck.counters.at("global_step"));
  CHECK(ck.counters.at("done") == 0);
  CHECK(!fs::exists(dir / "run" / "b" / "checkpoint-last.h5"));
  CHECK(!fs::exists(dir / "run" / "results.csv"));
  auto rows = run_compare(load_config(config.string()), {.resume = true, .quiet = true});
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].finished);
  CHECK(rows[1].finished);
  CHECK(fs::exists(dir / "run" / "results.csv"));
}
#endif

TEST_CASE("reliability/determinism: every model type gives bit-identical metrics twice (same seed and threads)") {
  Quiet q;
  const std::vector<std::pair<std::string, std::string>> models = {
      {"rnn", ""}, {"lstm", ""}, {"gru", ""}, {"transformer", "n_heads = 2\n"}, {"s4d", "d_state = 8\n"},
      {"s4", "d_state = 8\n"}, {"lssl", "d_state = 8\n"}, {"mamba", "d_state = 4\n"}, {"mlp", ""}};
  for (const auto& [type, options] : models) {
    CAPTURE(type);
    Metrics m[2];
    for (int run = 0; run < 2; ++run) {
      fs::path dir = scratch(str("det_", type, "_", run));
      std::string text = str("[data]\ntask = \"sine\"\nrows = 300\nseq_len = 16\npred_len = 4\nchannels = 2\n",
                             "[model]\ntype = \"", type, "\"\nd_model = 8\nn_layers = 1\ndropout = 0.1\n", options,
                             "[train]\nepochs = 2\nmax_steps = 3\nbatch_size = 8\neval_batch_size = 32\nthreads = 2\n",
                             "patience = 0\nseed = 5\n[output]\ndir = \"", dir.string(), "\"\n");
      RunResult r = run_train(parse_config(text, type + ".toml"), {.quiet = true});
      REQUIRE(r.finished);
      m[run] = read_metrics(dir / "metrics.h5");
    }
    for (const auto& [k, v] : m[0]) {
      if (k == "seconds" || k == "eval_seconds") continue;  // wall time
      CAPTURE(k);
      REQUIRE(m[1].count(k));
      CHECK(v == m[1].at(k));
    }
  }
}
