// Fair budgets (issue 18): [train] steps and time_budget end a run after so many optimizer steps or
// seconds of training whatever the epochs (the last epoch partial, early stopping off, a resumed run
// extended to a larger budget); [sweep] match_params sizes every model to a common parameter count
// within 5%, reported in a d_model column; a target no width reaches fails its cell with the reason.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/trainer.h"
#include "core/error.h"
#include "run_testing.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::app;
namespace fs = std::filesystem;

namespace {

struct Quiet : testing::RunScope {
  Quiet() : RunScope(spdlog::level::warn) {}
};

std::string config(const fs::path& dir, const std::string& train, const std::string& models = "type = \"gru\"\n",
                   const std::string& sweep = "") {
  return str("[data]\ntask = \"sine\"\nrows = 400\nseq_len = 16\npred_len = 4\nchannels = 2\n",
             "[model]\nd_model = 8\nn_layers = 1\n", models,
             "[train]\nbatch_size = 16\nthreads = 1\nseed = 3\n", train, "[output]\ndir = \"", dir.string(), "\"\n",
             sweep.empty() ? "" : "[sweep]\n", sweep);
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

const std::string kThree = "[[models]]\nname = \"gru\"\ntype = \"gru\"\n"
                           "[[models]]\nname = \"tf\"\ntype = \"transformer\"\nn_heads = 2\n"
                           "[[models]]\nname = \"mamba\"\ntype = \"mamba\"\n";

}  // namespace

TEST_CASE("apps/budget: [train] steps ends the run after that many optimizer steps, epochs no limit") {
  Quiet q;
  const fs::path dir = testing::scratch("budget_steps");
  // 7 steps in epochs of at most 3: epochs of 3, 3 and 1, each evaluated; epochs = 1 and a patience
  // of 1 would each have stopped it sooner.
  Config c = parse_config(config(dir, "epochs = 1\npatience = 1\nmax_steps = 3\nsteps = 7\n"), "b.toml");
  CHECK(c.train.budgeted());
  testing::TestObserver obs;
  RunResult r = run_train(c, {.quiet = true, .observer = &obs});
  CHECK(r.finished);
  CHECK(obs.losses.size() == 7);
  CHECK(r.epochs == 3);
  Metrics m = read_metrics(dir / "metrics.h5");
  CHECK(m.at("val_loss").size() == 3);
  CHECK(load_checkpoint(dir / "checkpoint-last.h5").counters.at("global_step") == 7);
  // --resume with a larger budget continues the finished run to it; with the same budget it is done.
  testing::TestObserver more;
  Config c2 = parse_config(config(dir, "epochs = 1\npatience = 1\nmax_steps = 3\nsteps = 9\n"), "b.toml");
  RunResult r2 = run_train(c2, {.resume = true, .quiet = true, .observer = &more});
  CHECK(more.losses.size() == 2);
  CHECK(r2.epochs == 4);
  CHECK(load_checkpoint(dir / "checkpoint-last.h5").counters.at("global_step") == 9);
  testing::TestObserver none;
  run_train(c2, {.resume = true, .quiet = true, .observer = &none});
  CHECK(none.losses.empty());
}

TEST_CASE("apps/budget: [train] time_budget ends the run at the first step boundary past it") {
  Quiet q;
  const fs::path dir = testing::scratch("budget_time");
  // A budget of a nanosecond: one step, then the epoch ends early and is evaluated.
  Config c = parse_config(config(dir, "epochs = 5\nmax_steps = 4\ntime_budget = 1e-9\n"), "b.toml");
  testing::TestObserver obs;
  RunResult r = run_train(c, {.quiet = true, .observer = &obs});
  CHECK(r.finished);
  CHECK(obs.losses.size() == 1);
  CHECK(r.epochs == 1);
  CHECK(std::isfinite(r.val_mse));
  // Bad values name the key.
  CHECK_THROWS_WITH_AS(parse_config(config(dir, "time_budget = -1\n"), "b.toml"),
                       doctest::Contains("[train] time_budget: expected a number >= 0"), Error);
  CHECK_THROWS_WITH_AS(parse_config(config(dir, "steps = 2.5\n"), "b.toml"),
                       doctest::Contains("[train] steps: expected an integer >= 0"), Error);
}

TEST_CASE("apps/budget: match_params sizes every model within 5% of the target, reported as d_model") {
  Quiet q;
  const fs::path dir = testing::scratch("match");
  Config c = parse_config(config(dir, "epochs = 1\nmax_steps = 2\n", kThree, "match_params = 20000\n"), "m.toml");
  CHECK(c.match_params == 20000);
  CHECK(c.sweep.empty());
  std::vector<RunResult> rows = run_compare(c, {.quiet = true});
  REQUIRE(rows.size() == 3);
  for (const auto& r : rows) {
    CAPTURE(r.model);
    CHECK(std::abs(static_cast<double>(r.params) - 20000.0) <= 0.05 * 20000);
    CHECK(r.d_model > 8);  // wider than the config's 8
    CHECK(r.d_model % (r.model == "tf" ? 2 : 1) == 0);
  }
  CHECK(rows[0].d_model != rows[2].d_model);
  const auto csv = lines_of(testing::read_file(dir / "results.csv"));
  CHECK(csv.at(0).ends_with(",test_mae,d_model,device"));
  CHECK(csv.at(2).ends_with(str(",", rows[1].d_model, ",cpu")));
  CHECK(read_results_csv((dir / "results.csv").string()).at(1).d_model == rows[1].d_model);
  CHECK(testing::read_file(dir / "results.md").find("| d_model |") != std::string::npos);
  // Each model's run directory holds the chosen width, with the layer defaults that follow it
  // (the transformer's d_ff = 4 d_model), so that it trains with the parameters counted.
  Config tf = load_config((dir / "tf" / "config.resolved.toml").string());
  CHECK(tf.models[0].d_model == rows[1].d_model);
  CHECK(testing::read_file(dir / "tf" / "config.resolved.toml").find(str("d_ff = ", 4 * rows[1].d_model)) !=
        std::string::npos);
  // The comparison's resolved config keeps the target and reads back.
  CHECK(load_config((dir / "config.resolved.toml").string()).match_params == 20000);
}

TEST_CASE("apps/budget: match_params in a sweep: a d_model column before the status, an unreachable target a failed cell") {
  Quiet q;
  const fs::path dir = testing::scratch("match_sweep");
  // A 16-head transformer at 8000 parameters: its widths go in steps of 16 (d_model 16: about
  // 3500, 32: about 13000) and none is within 5%.
  const std::string models = "[[models]]\nname = \"gru\"\ntype = \"gru\"\n"
                             "[[models]]\nname = \"tf\"\ntype = \"transformer\"\nn_heads = 16\nd_model = 16\n";
  Config c = parse_config(config(dir, "epochs = 1\nmax_steps = 2\n", models,
                                 "match_params = 8000\n\"data.seq_len\" = [8, 12]\n"), "m.toml");
  run_sweep(c, {.quiet = true});
  const auto csv = lines_of(testing::read_file(dir / "results.csv"));
  REQUIRE(csv.size() == 5);
  CHECK(csv[0].ends_with(",test_mae,data.seq_len,d_model,status,device"));
  CHECK(csv[1].find(",8,0,failed: ") != std::string::npos);
  CHECK(csv[1].find("model 'tf' (transformer): the closest width, d_model ") == std::string::npos);  // ',' -> ';'
  CHECK(csv[1].find("model 'tf' (transformer): the closest width; d_model ") != std::string::npos);
  CHECK(csv[1].find("expected within 5%") != std::string::npos);
  CHECK(csv[1].find("(the layer refuses the widths in between") != std::string::npos);
  // With a reachable target every row is ok and carries its width.
  const fs::path ok = testing::scratch("match_sweep_ok");
  const std::string four_heads = "[[models]]\nname = \"gru\"\ntype = \"gru\"\n"
                                 "[[models]]\nname = \"tf\"\ntype = \"transformer\"\nn_heads = 4\n";
  Config c2 = parse_config(config(ok, "epochs = 1\nmax_steps = 2\n", four_heads,
                                  "match_params = 20000\n\"data.seq_len\" = [8, 12]\n"), "m.toml");
  std::vector<RunResult> rows = run_sweep(c2, {.quiet = true});
  const auto csv2 = lines_of(testing::read_file(ok / "results.csv"));
  REQUIRE(csv2.size() == 5);
  for (size_t i = 1; i < csv2.size(); ++i) {
    CAPTURE(csv2[i]);
    CHECK(csv2[i].ends_with(str(",", rows[i - 1].d_model, ",ok,cpu")));
    CHECK(std::abs(static_cast<double>(rows[i - 1].params) - 20000.0) <= 1000.0);
  }
}

TEST_CASE("apps/budget: bad match_params input names the key") {
  const fs::path dir = testing::scratch("match_bad");
  auto error_of = [&](const std::string& sweep) -> std::string {
    try {
      parse_config(config(dir, "", "type = \"gru\"\n", sweep), "m.toml");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  CHECK(error_of("match_params = 0\n").find("m.toml: [sweep] match_params: expected an integer >= 1") != std::string::npos);
  CHECK(error_of("match_params = \"big\"\n").find("[sweep] match_params: expected an integer >= 1") != std::string::npos);
  CHECK(error_of("match_params = 1000\n\"model.d_model\" = [4, 8]\n")
            .find("[sweep] \"model.d_model\": match_params chooses each model's d_model") != std::string::npos);
}
