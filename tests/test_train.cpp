// apps/trainer end to end on tiny synthetic tasks: every file of a run directory is written and
// re-opens; a run stopped mid-epoch (in process) or SIGKILLed (a child `seqlab train`) and then
// resumed ends bit-identical to one that never stopped; eval reproduces the recorded test MSE;
// compare writes one row per model; token tasks report accuracy.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/trainer.h"
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

// Quiet logs for one test, then restore and clean up.
struct Quiet : testing::RunScope {
  Quiet() : RunScope(spdlog::level::warn) {}
};

// Sine forecasting, GRU with residual dropout (so the generator state matters on resume).
std::string sine_config(const fs::path& dir, int epochs, int max_steps, int checkpoint_every = 0) {
  return str("[data]\ntask = \"sine\"\nrows = 600\nseq_len = 24\npred_len = 8\nchannels = 2\n",
             "[model]\ntype = \"gru\"\nd_model = 8\nn_layers = 2\ndropout = 0.1\nrevin = true\n",
             "[optim]\nschedule = \"cosine\"\nwarmup_steps = 2\nlr = 3e-3\n",
             "[train]\nepochs = ", epochs, "\nbatch_size = 16\neval_batch_size = 64\nmax_steps = ", max_steps,
             "\nthreads = 1\npatience = 0\nseed = 7\ncheckpoint_every = ", checkpoint_every, "\n",
             "[output]\ndir = \"", dir.string(), "\"\n");
}



}  // namespace

TEST_CASE("apps/train: a tiny sine run writes every file of the run directory, and they re-open") {
  Quiet q;
  fs::path dir = scratch("e2e");
  Config c = parse_config(sine_config(dir, 3, 5), "sine.toml");
  RunResult r = run_train(c, {.quiet = true});
  CHECK(r.finished);
  CHECK(r.epochs == 3);
  CHECK(r.params > 0);
  CHECK(r.step_ms > 0);
  CHECK(r.peak_rss_mib > 0);
  CHECK(std::isfinite(r.test_mse));
  CHECK(std::isfinite(r.test_mae));
  for (const char* f : {"config.resolved.toml", "metrics.h5", "checkpoint-best.h5", "checkpoint-last.h5", "results.csv",
                        "results.md"})
    CHECK_MESSAGE(fs::is_regular_file(dir / f), f);
  for (const auto& e : fs::directory_iterator(dir)) CHECK_MESSAGE(e.path().extension() != ".tmp", e.path().string());

  Metrics m = read_metrics(dir / "metrics.h5");
  for (const char* k : {"train_loss", "val_loss", "val_mse", "val_mae", "test_mse", "test_mae", "seconds", "lr"}) {
    CAPTURE(k);
    REQUIRE(m.count(k));
    CHECK(m.at(k).size() == 3);
  }
  Checkpoint last = load_checkpoint(dir / "checkpoint-last.h5");
  CHECK(last.params.size() > 0);
  CHECK(last.optim.count("step"));
  CHECK(last.scaler.count("mean"));
  CHECK(last.counters.at("epoch") == 3);
  CHECK(last.counters.at("global_step") == 15);
  CHECK(last.counters.at("done") == 1);
  CHECK(last.metrics.at("test_mse") == m.at("test_mse"));
  Checkpoint best = load_checkpoint(dir / "checkpoint-best.h5");
  CHECK(best.values.at("best_val_loss") == doctest::Approx(r.val_mse).epsilon(1e-12));

  std::string csv = testing::read_file(dir / "results.csv");
  CHECK(csv.starts_with("model,params,epochs,train_seconds,step_ms,peak_rss_mib,val_mse,test_mse,test_mae,device\ngru,"));
  auto rows = read_results_csv((dir / "results.csv").string());
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].test_mse == doctest::Approx(r.test_mse).epsilon(1e-8));

  // The resolved config reloads to the same config (the first line names the source file).
  auto body = [](const std::string& t) { return t.substr(t.find('\n')); };
  Config again = load_config((dir / "config.resolved.toml").string());
  CHECK(body(to_toml_single(again, 0, dir.string())) == body(testing::read_file(dir / "config.resolved.toml")));

  // eval re-computes the best checkpoint's test MSE.
  auto ev = run_eval(dir.string(), "test", 1);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].mse == doctest::Approx(r.test_mse).epsilon(1e-9));
  CHECK(ev[0].mae == doctest::Approx(r.test_mae).epsilon(1e-9));
}

TEST_CASE("apps/train: same seed, same results, stopped mid-epoch and resumed equals uninterrupted") {
  Quiet q;
  fs::path a = scratch("full"), b = scratch("stopped"), c2 = scratch("again");
  Config ca = parse_config(sine_config(a, 4, 6, 4), "sine.toml");
  RunResult full = run_train(ca, {.quiet = true});
  RunResult again = run_train(parse_config(sine_config(c2, 4, 6, 4), "sine.toml"), {.quiet = true});
  CHECK(again.test_mse == full.test_mse);

  Config cb = parse_config(sine_config(b, 4, 6, 4), "sine.toml");
  // Steps 1..4 and 5..6 are epoch 1, 7..12 epoch 2: stop at step 11 (last checkpoint: step 8, mid-epoch 2).
  TestObserver stop = stop_after(11);
  RunResult stopped = run_train(cb, {.quiet = true, .observer = &stop});
  CHECK(!stopped.finished);
  REQUIRE(fs::exists(b / "checkpoint-last.h5"));
  CHECK(load_checkpoint(b / "checkpoint-last.h5").counters.at("global_step") == 8);
  RunResult resumed = run_train(cb, {.resume = true, .quiet = true});
  CHECK(resumed.finished);
  CHECK(resumed.epochs == full.epochs);
  CHECK(resumed.test_mse == full.test_mse);
  CHECK(resumed.test_mae == full.test_mae);
  CHECK(resumed.val_mse == full.val_mse);
  check_same_params(a / "checkpoint-last.h5", b / "checkpoint-last.h5");
  check_same_params(a / "checkpoint-best.h5", b / "checkpoint-best.h5");
  // Resuming a finished run changes nothing.
  RunResult twice = run_train(cb, {.resume = true, .quiet = true});
  CHECK(twice.test_mse == full.test_mse);
}

TEST_CASE("apps/train: --resume with more epochs extends a finished run like an uninterrupted longer run") {
  Quiet q;
  auto constant = [](std::string t) {  // a constant schedule: a shorter run is a prefix of a longer one
    t.replace(t.find("schedule = \"cosine\""), 19, "schedule = \"constant\"");
    return t;
  };
  fs::path a = scratch("long"), b = scratch("extended");
  RunResult longer = run_train(parse_config(constant(sine_config(a, 4, 5)), "sine.toml"), {.quiet = true});
  RunResult shorter = run_train(parse_config(constant(sine_config(b, 2, 5)), "sine.toml"), {.quiet = true});
  REQUIRE(shorter.finished);
  CHECK(shorter.epochs == 2);
  RunResult extended = run_train(parse_config(constant(sine_config(b, 4, 5)), "sine.toml"), {.resume = true, .quiet = true});
  CHECK(extended.finished);
  CHECK(extended.epochs == 4);
  CHECK(extended.test_mse == longer.test_mse);
  CHECK(extended.val_mse == longer.val_mse);
  check_same_params(a / "checkpoint-last.h5", b / "checkpoint-last.h5");
}

TEST_CASE("apps/train: [train] init_from warm-starts the parameters, at another length, and rejects a bad source") {
  Quiet q;
  fs::path a = scratch("init_src"), b = scratch("init_dst"), bad = scratch("init_bad");
  RunResult src = run_train(parse_config(sine_config(a, 2, 4), "sine.toml"), {.quiet = true});
  REQUIRE(src.finished);
  // Continue at seq_len 32 (trained at 24) with lr 1e-12: after one epoch the parameters are the
  // source's best ones to ~1e-9 (the optimizer starts fresh, so each AdamW step moves them by ~lr).
  auto warm = [&](const fs::path& dir, const std::string& from, const std::string& extra = "") {
    std::string t = sine_config(dir, 1, 2);
    t.replace(t.find("seq_len = 24"), 12, "seq_len = 32");
    t.replace(t.find("lr = 3e-3"), 9, "lr = 1e-12");
    t.replace(t.find("warmup_steps = 2"), 16, "warmup_steps = 0");
    t.replace(t.find("[train]\n"), 8, str("[train]\ninit_from = \"", from, "\"\n"));
    return parse_config(t + extra, "warm.toml");
  };
  RunResult w = run_train(warm(b, a.string()), {.quiet = true});
  CHECK(w.finished);
  Checkpoint cs = load_checkpoint(a / "checkpoint-best.h5"), cw = load_checkpoint(b / "checkpoint-last.h5");
  REQUIRE(cs.params.size() == cw.params.size());
  for (const auto& [k, t] : cs.params) {
    CAPTURE(k);
    REQUIRE(cw.params.count(k));
    auto x = t.to_vector(), y = cw.params.at(k).to_vector();
    REQUIRE(x.size() == y.size());
    for (size_t i = 0; i < x.size(); ++i) CHECK(std::abs(x[i] - y[i]) < 1e-6);
  }
  CHECK(cw.counters.at("global_step") == 2);  // counters start fresh
  // The resolved config records the source; a checkpoint file works as well as a run directory.
  CHECK(testing::read_file(b / "config.resolved.toml").find("init_from = \"" + a.string()) != std::string::npos);
  CHECK(run_train(warm(b, (a / "checkpoint-best.h5").string()), {.quiet = true}).finished);
  // A missing source and a model that does not match: errors naming the key, nothing written.
  CHECK_THROWS_WITH_AS(run_train(warm(bad, (a / "nope").string()), {.quiet = true}),
                       doctest::Contains("[train] init_from"), Error);
  std::string wide = sine_config(bad, 1, 2);
  wide.replace(wide.find("d_model = 8"), 11, "d_model = 6");
  wide.replace(wide.find("warmup_steps = 2"), 16, "warmup_steps = 0");
  wide.replace(wide.find("[train]\n"), 8, str("[train]\ninit_from = \"", a.string(), "\"\n"));
  CHECK_THROWS_WITH_AS(run_train(parse_config(wide, "wide.toml"), {.quiet = true}),
                       doctest::Contains("does not match the model"), Error);
  CHECK(!fs::exists(bad / "config.resolved.toml"));
}

TEST_CASE("apps/train: eval and init_from choose checkpoint-best.h5 or checkpoint-last.h5 and say its step") {
  Quiet q;
  fs::path a = scratch("ck_src"), b = scratch("ck_dst");
  RunResult src = run_train(parse_config(sine_config(a, 3, 4), "sine.toml"), {.quiet = true});
  REQUIRE(src.finished);
  const Checkpoint best = load_checkpoint(a / "checkpoint-best.h5"), last = load_checkpoint(a / "checkpoint-last.h5");
  auto rb = run_eval(a.string(), "test", 1), rl = run_eval(a.string(), "test", 1, "last");
  REQUIRE(rb.size() == 1);
  REQUIRE(rl.size() == 1);
  CHECK(rb[0].checkpoint == "best");
  CHECK(rb[0].step == best.counters.at("global_step"));
  CHECK(rl[0].checkpoint == "last");
  CHECK(rl[0].step == 12);  // 3 epochs of 4 steps
  CHECK(rl[0].epoch == 3);
  CHECK(rb[0].mse == src.test_mse);  // the run's own figure is the best checkpoint's
  CHECK_THROWS_WITH_AS(run_eval(a.string(), "test", 1, "newest"), doctest::Contains("eval --checkpoint"), Error);
  // init_checkpoint = "last": the warm start takes the last parameters (lr 1e-12: they stay put).
  std::string t = sine_config(b, 1, 1);
  t.replace(t.find("lr = 3e-3"), 9, "lr = 1e-12");
  t.replace(t.find("warmup_steps = 2"), 16, "warmup_steps = 0");
  t.replace(t.find("[train]\n"), 8, str("[train]\ninit_from = \"", a.string(), "\"\ninit_checkpoint = \"last\"\n"));
  REQUIRE(run_train(parse_config(t, "warm.toml"), {.quiet = true}).finished);
  const Checkpoint warm = load_checkpoint(b / "checkpoint-last.h5");
  for (const auto& [k, v] : last.params) {
    CAPTURE(k);
    auto x = v.to_vector(), y = warm.params.at(k).to_vector();
    for (size_t i = 0; i < x.size(); ++i) CHECK(std::abs(x[i] - y[i]) < 1e-6);
  }
  CHECK(testing::read_file(b / "config.resolved.toml").find("init_checkpoint = \"last\"") != std::string::npos);
  t.replace(t.find("init_checkpoint = \"last\""), 24, "init_checkpoint = \"oldest\"");
  CHECK_THROWS_WITH_AS(parse_config(t, "warm.toml"), doctest::Contains("init_checkpoint"), Error);
}

#ifdef SEQLAB_BINARY
TEST_CASE("apps/train: a child `seqlab train` SIGKILLed mid-run, then --resume, ends like an uninterrupted run") {
  Quiet q;
  fs::path ref = scratch("kill_ref"), dir = scratch("kill");
  const int epochs = 6, steps = 20;
  RunResult full = run_train(parse_config(sine_config(ref, epochs, steps, 3), "sine.toml"), {.quiet = true});

  const fs::path config = dir / "sine.toml";
  std::ofstream(config) << sine_config(dir / "run", epochs, steps, 3);
  std::string exe = SEQLAB_BINARY, log = "--log-level", off = "off", train = "train", cfg = config.string();
  char* argv[] = {exe.data(), log.data(), off.data(), train.data(), cfg.data(), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, environ) == 0);
  // Kill it as soon as it has written a checkpoint (mid-epoch ones come every 3 steps).
  const fs::path last = dir / "run" / "checkpoint-last.h5";
  auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  bool exited = false;
  while (!fs::exists(last) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // The test is only worth something if the kill happened: a child that finished first fails it.
  REQUIRE_MESSAGE(!exited, "the child finished before the kill (status ", status, ")");
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  REQUIRE(fs::exists(last));
  Checkpoint at_kill = load_checkpoint(last);
  MESSAGE("killed after step ", at_kill.counters.at("global_step"), " of ", epochs * steps);
  REQUIRE_MESSAGE(WIFSIGNALED(status), "the child exited (status ", status, ") instead of being killed");
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(at_kill.counters.at("global_step") < epochs * steps);
  CHECK(!fs::exists(dir / "run" / "results.csv"));  // it never finished

  Config c = load_config(config.string());
  RunResult resumed = run_train(c, {.resume = true, .quiet = true});
  CHECK(resumed.finished);
  CHECK(resumed.test_mse == full.test_mse);
  CHECK(std::abs(resumed.test_mse - full.test_mse) <= 1e-6);
  check_same_params(ref / "checkpoint-last.h5", dir / "run" / "checkpoint-last.h5");
}
#endif

TEST_CASE("apps/train: compare trains every model into its own directory and writes one table") {
  Quiet q;
  fs::path dir = scratch("compare");
  std::string text = str("[data]\ntask = \"sine\"\nrows = 500\nseq_len = 16\npred_len = 4\n",
                         "[model]\nd_model = 8\nn_layers = 1\n",
                         "[[models]]\ntype = \"gru\"\n[[models]]\nname = \"ssm\"\ntype = \"s4d\"\nd_state = 8\n",
                         "[train]\nepochs = 2\nmax_steps = 3\nbatch_size = 8\nthreads = 1\n",
                         "[output]\ndir = \"", dir.string(), "\"\n");
  Config c = parse_config(text, "cmp.toml");
  auto rows = run_compare(c, {.quiet = true});
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].model == "gru");
  CHECK(rows[1].model == "ssm");
  CHECK(fs::is_regular_file(dir / "gru" / "checkpoint-best.h5"));
  CHECK(fs::is_regular_file(dir / "ssm" / "metrics.h5"));
  CHECK(fs::is_regular_file(dir / "config.resolved.toml"));
  auto csv = read_results_csv((dir / "results.csv").string());
  REQUIRE(csv.size() == 2);
  CHECK(csv[1].model == "ssm");
  CHECK(testing::read_file(dir / "results.md").find("| ssm |") != std::string::npos);
  auto ev = run_eval(dir.string(), "val", 1);
  REQUIRE(ev.size() == 2);
  CHECK(ev[1].mse == doctest::Approx(rows[1].val_mse).epsilon(1e-9));
}

#ifdef SEQLAB_BINARY
TEST_CASE("apps/train: compare --jobs trains the models at once in children with the same rows as one at a time") {
  Quiet q;
  std::vector<std::vector<RunResult>> runs;
  for (int jobs : {1, 3}) {
    fs::path dir = scratch(str("compare_jobs", jobs));
    std::string text = str("[data]\ntask = \"sine\"\nrows = 400\nseq_len = 16\npred_len = 4\n",
                           "[model]\nd_model = 8\nn_layers = 1\n",
                           "[[models]]\ntype = \"gru\"\n[[models]]\ntype = \"mamba\"\n[[models]]\ntype = \"s4d\"\n",
                           "[train]\nepochs = 2\nmax_steps = 3\nbatch_size = 8\nthreads = 1\n",
                           "[output]\ndir = \"", dir.string(), "\"\n");
    runs.push_back(run_compare(parse_config(text, "jobs.toml"), {.quiet = true, .jobs = jobs}, SEQLAB_BINARY,
                               {"--log-level", "off"}));
    REQUIRE(runs.back().size() == 3);
    CHECK(fs::is_regular_file(dir / "results.csv"));
    CHECK(read_results_csv((dir / "results.csv").string()).size() == 3);
  }
  for (size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(runs[1][i].model == runs[0][i].model);  // model order, whichever finished first
    CHECK(runs[1][i].finished);
    CHECK(runs[1][i].val_mse == runs[0][i].val_mse);  // a run in a child is a run: same figures
    CHECK(runs[1][i].test_mse == runs[0][i].test_mse);
  }
}
#endif

TEST_CASE("apps/train: a token task trains with cross-entropy and reports token accuracy") {
  Quiet q;
  fs::path dir = scratch("tokens");
  std::string text = str("[data]\ntask = \"selective-copying\"\nseq_len = 40\nn_train_batches = 4\nn_eval_batches = 2\n",
                         "[model]\ntype = \"lstm\"\nd_model = 8\nn_layers = 1\n",
                         "[train]\nepochs = 2\nbatch_size = 8\neval_batch_size = 16\nthreads = 1\n",
                         "[output]\ndir = \"", dir.string(), "\"\n");
  RunResult r = run_train(parse_config(text, "sc.toml"), {.quiet = true});
  CHECK(r.epochs == 2);
  CHECK(r.test_acc >= 0);
  CHECK(r.test_acc <= 1);
  CHECK(r.test_mse > 0);  // cross-entropy
  Metrics m = read_metrics(dir / "metrics.h5");
  CHECK(m.at("test_acc").size() == 2);
  std::string md = testing::read_file(dir / "results.md");
  CHECK(md.find("test_acc") != std::string::npos);
  // results.csv keeps its columns and adds the token accuracy at the end; it reads back.
  CHECK(testing::read_file(dir / "results.csv").starts_with(
      "model,params,epochs,train_seconds,step_ms,peak_rss_mib,val_mse,test_mse,test_mae,test_acc,device\n"));
  CHECK(read_results_csv((dir / "results.csv").string()).at(0).test_acc == doctest::Approx(r.test_acc).epsilon(1e-8));
}
