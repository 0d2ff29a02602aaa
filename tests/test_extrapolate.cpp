// `seqlab eval RUN_DIR --seq-lens ...` (apps/trainer.cpp, run_extrapolation): a tiny trained
// token-task comparison evaluated at two lengths writes extrapolation.csv per model and for the
// comparison; step mode and the full forward give the same accuracy at the training length; the
// time limit skips a length and every longer one; bad input throws naming the option.
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "apps/trainer.h"
#include "core/random.h"
#include "data/synthetic.h"
#include "run_testing.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::app;
namespace fs = std::filesystem;

namespace {

struct Quiet : testing::RunScope {
  Quiet() : RunScope(spdlog::level::warn) {}
};

// Induction heads at length 16: an LSTM and a causal transformer (both with a step mode), a few steps.
fs::path trained_token_compare() {
  fs::path dir = testing::scratch("ih");
  std::string text = str("[data]\ntask = \"induction-heads\"\nseq_len = 16\nn_train_batches = 3\nn_eval_batches = 1\n",
                         "[model]\nd_model = 8\nn_layers = 1\n",
                         "[[models]]\ntype = \"lstm\"\n",
                         "[[models]]\nname = \"attn\"\ntype = \"transformer\"\nn_heads = 2\ncausal = true\n",
                         "pos_encoding = \"sinusoidal\"\n",
                         "[train]\nepochs = 1\nbatch_size = 8\neval_batch_size = 16\nthreads = 1\n",
                         "[output]\ndir = \"", dir.string(), "\"\n");
  auto rows = run_compare(parse_config(text, "ih.toml"), {.quiet = true});
  REQUIRE(rows.size() == 2);
  return dir;
}

ExtrapolateOptions opts(std::vector<int64_t> lens, int64_t n, const std::string& step = "auto", double max_s = 120) {
  ExtrapolateOptions o;
  o.seq_lens = std::move(lens);
  o.n_sequences = n;
  o.step = step;
  o.max_seconds = max_s;
  o.threads = 1;
  return o;
}

}  // namespace

TEST_CASE("apps/extrapolate: a trained token run at two lengths writes extrapolation.csv per model") {
  Quiet q;
  fs::path dir = trained_token_compare();
  auto rows = run_extrapolation(dir.string(), opts({64, 16}, 8));  // evaluated in increasing order
  REQUIRE(rows.size() == 4);
  const char* models[] = {"lstm", "lstm", "attn", "attn"};
  const int64_t lens[] = {16, 64, 16, 64};
  for (size_t i = 0; i < rows.size(); ++i) {
    CAPTURE(i);
    CHECK(rows[i].model == models[i]);
    CHECK(rows[i].seq_len == lens[i]);
    CHECK(rows[i].n_sequences == 8);
    CHECK(rows[i].status == "ok");
    CHECK(rows[i].mode == (lens[i] > 16 ? "step" : "forward"));  // auto: step beyond the training length
    CHECK(rows[i].accuracy >= 0);
    CHECK(rows[i].accuracy <= 1);
    CHECK(rows[i].seconds > 0);
    CHECK(rows[i].peak_rss_mib > 0);
  }
  const std::string header =
      "model,seq_len,n_sequences,accuracy,seconds,peak_rss_mib,mode,status,key_distance,checkpoint,step,device\n";
  for (const char* m : {"lstm", "attn"}) {
    CAPTURE(m);
    std::string csv = testing::read_file(dir / m / "extrapolation.csv");
    CHECK(csv.starts_with(header));
    CHECK(csv.find(str("\n", m, ",16,8,")) != std::string::npos);
    CHECK(csv.find(",step,ok,0,best,") != std::string::npos);
    for (const auto& e : fs::directory_iterator(dir / m)) CHECK_MESSAGE(e.path().extension() != ".tmp", e.path().string());
  }
  std::string all = testing::read_file(dir / "extrapolation.csv");
  CHECK(all == extrapolation_csv(rows));
  CHECK(std::count(all.begin(), all.end(), '\n') == 5);
  CHECK(extrapolation_md(rows).find("| attn | 64 | 8 |") != std::string::npos);

  // Same sequences, same accuracy: step mode equals the full forward at the training length.
  auto step = run_extrapolation((dir / "attn").string(), opts({16}, 32, "always"));
  auto full = run_extrapolation((dir / "attn").string(), opts({16}, 32, "never"));
  REQUIRE(step.size() == 1);
  REQUIRE(full.size() == 1);
  CHECK(step[0].mode == "step");
  CHECK(full[0].mode == "forward");
  CHECK(step[0].accuracy == full[0].accuracy);
  auto lstm_step = run_extrapolation((dir / "lstm").string(), opts({16}, 32, "always"));
  auto lstm_full = run_extrapolation((dir / "lstm").string(), opts({16}, 32, "never"));
  CHECK(lstm_step[0].accuracy == lstm_full[0].accuracy);
  // Reproducible: the sequences come from the run's data seed.
  CHECK(run_extrapolation((dir / "attn").string(), opts({16}, 32, "always"))[0].accuracy == step[0].accuracy);

  // A length projected past --max-seconds is skipped, and every longer one (the first always runs).
  auto limited = run_extrapolation((dir / "attn").string(), opts({16, 32, 64}, 4, "always", 1e-9));
  REQUIRE(limited.size() == 3);
  CHECK(limited[0].status == "ok");
  CHECK(limited[1].status == "skipped: time limit");
  CHECK(limited[2].status == "skipped: time limit");
  CHECK(std::isnan(limited[2].accuracy));
  CHECK(testing::read_file(dir / "attn" / "extrapolation.csv").find(",step,skipped: time limit,0,best,") != std::string::npos);

  // Which checkpoint, and how many steps it had: one epoch of 3 steps, so the best is the last.
  for (const auto& r : rows) {
    CHECK(r.checkpoint == "best");
    CHECK(r.step == 3);
  }
  ExtrapolateOptions ol = opts({16}, 8);
  ol.checkpoint = "last";
  auto last = run_extrapolation((dir / "lstm").string(), ol);
  REQUIRE(last.size() == 1);
  CHECK(last[0].checkpoint == "last");
  CHECK(last[0].step == 3);
  CHECK(last[0].accuracy == rows[0].accuracy);  // the same parameters
  CHECK(testing::read_file(dir / "lstm" / "extrapolation.csv").find(",forward,ok,0,last,3,cpu\n") != std::string::npos);
  ol.checkpoint = "newest";
  CHECK_THROWS_WITH_AS(run_extrapolation((dir / "lstm").string(), ol), doctest::Contains("expected best or last"), Error);

  // A fixed key distance: the rows say it, and go to their own file (extrapolation.csv is kept).
  const std::string before = testing::read_file(dir / "lstm" / "extrapolation.csv");
  ExtrapolateOptions od = opts({16, 64}, 8);
  od.key_distance = 10;
  auto near = run_extrapolation((dir / "lstm").string(), od);
  REQUIRE(near.size() == 2);
  CHECK(near[1].key_distance == 10);
  CHECK(near[1].status == "ok");
  CHECK(testing::read_file(dir / "lstm" / "extrapolation-d10.csv") == extrapolation_csv(near));
  CHECK(testing::read_file(dir / "lstm" / "extrapolation.csv") == before);
  od.key_distance = 16;  // the query would sit past the shortest length's end
  CHECK_THROWS_WITH_AS(run_extrapolation((dir / "lstm").string(), od), doctest::Contains("allows up to 15"), Error);

#ifdef SEQLAB_BINARY
  // The command line: a table on stdout; bad input exits 1.
  const std::string exe = SEQLAB_BINARY;
  auto run = [&](const std::string& args) {
    int rc = std::system((exe + " --log-level off --threads 1 eval " + dir.string() + " " + args + " > " +
                          (dir / "out.txt").string() + " 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  CHECK(run("--seq-lens 16,32 --n-sequences 4") == 0);
  CHECK(testing::read_file(dir / "out.txt").find("| attn | 32 | 4 |") != std::string::npos);
  CHECK(run("--seq-lens 2") == 1);
  CHECK(run("--seq-lens 16 --step sometimes") == 1);
  CHECK(run("--n-sequences 4") == 1);
  CHECK(run("--key-distance 4") == 1);
  CHECK(run("--seq-lens 16 --key-distance 1") == 1);
  CHECK(run("--seq-lens 16,32 --n-sequences 4 --key-distance 8") == 0);
  CHECK(fs::is_regular_file(dir / "extrapolation-d8.csv"));
#endif
}

TEST_CASE("apps/extrapolate: bad input throws naming the option and what was expected") {
  Quiet q;
  CHECK(parse_seq_lens("256,512,...,4096") == std::vector<int64_t>{256, 512, 1024, 2048, 4096});
  CHECK(parse_seq_lens("2^8, 2^10,100") == std::vector<int64_t>{256, 1024, 100});
  CHECK(parse_seq_lens("16,48,...,432") == std::vector<int64_t>{16, 48, 144, 432});
  for (const char* bad : {"", "abc", "256,,512", "-4", "0", "256,...,1024", "256,512,...,1000", "256,384,...,1024",
                          "256,512,...", "2^50", "1.5"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(parse_seq_lens(bad), doctest::Contains("--seq-lens"), Error);
  }
  CHECK_THROWS_WITH_AS(parse_extrapolate_options("256", "0", "", ""), doctest::Contains("--n-sequences: expected an integer >= 1"), Error);
  CHECK_THROWS_WITH_AS(parse_extrapolate_options("256", "8x", "", ""), doctest::Contains("--n-sequences"), Error);
  CHECK_THROWS_WITH_AS(parse_extrapolate_options("256", "", "-1", ""), doctest::Contains("--max-seconds: expected a number > 0"), Error);
  CHECK_THROWS_WITH_AS(parse_extrapolate_options("256", "", "", "sometimes"), doctest::Contains("--step: expected auto, always or never"), Error);
  ExtrapolateOptions o = parse_extrapolate_options("256,512", "", "", "");
  CHECK(o.n_sequences == 0);
  CHECK(o.max_seconds == 120);
  CHECK(o.step == "auto");
  CHECK(o.key_distance == 0);
  CHECK(parse_extrapolate_options("256", "", "", "", "100").key_distance == 100);
  CHECK(extrapolation_file(parse_extrapolate_options("256", "", "", "", "100")) == "extrapolation-d100.csv");
  CHECK(extrapolation_file(o) == "extrapolation.csv");
  for (const char* bad : {"1", "0", "-5", "ten", "5x"})
    CHECK_THROWS_WITH_AS(parse_extrapolate_options("256", "", "", "", bad),
                         doctest::Contains("--key-distance: expected an integer >= 2"), Error);
  CHECK(default_sequences(256) == 64);
  CHECK(default_sequences(1 << 16) == 64);
  CHECK(default_sequences(1 << 20) == 16);

  // Run directories: a forecasting run, and lengths below a token task's minimum (checked from the
  // resolved config, before any checkpoint is read).
  auto run_dir = [](const std::string& name, const std::string& data) {
    fs::path dir = testing::scratch(name);
    Config c = parse_config(data, name + ".toml");
    std::ofstream(dir / "config.resolved.toml") << to_toml_single(c, 0, dir.string());
    return dir;
  };
  fs::path fc = run_dir("fc", "[data]\ntask = \"sine\"\n");
  CHECK_THROWS_WITH_AS(run_extrapolation(fc.string(), opts({256}, 4)), doctest::Contains("needs a token task"), Error);
  fs::path sc = run_dir("sc", "[data]\ntask = \"selective-copying\"\nseq_len = 64\n");
  CHECK_THROWS_WITH_AS(run_extrapolation(sc.string(), opts({16, 64}, 4)),
                       doctest::Contains("--seq-lens: expected lengths >= 32 for selective-copying"), Error);
  ExtrapolateOptions sd = opts({64}, 4);
  sd.key_distance = 8;
  CHECK_THROWS_WITH_AS(run_extrapolation(sc.string(), sd), doctest::Contains("applies only to induction-heads"), Error);
  fs::path ih = run_dir("ih", "[data]\ntask = \"induction-heads\"\nseq_len = 16\n");
  CHECK_THROWS_WITH_AS(run_extrapolation(ih.string(), opts({2}, 4)),
                       doctest::Contains("--seq-lens: expected lengths >= 3 for induction-heads"), Error);
  CHECK_THROWS_WITH_AS(run_extrapolation(ih.string(), opts({16}, 4)), doctest::Contains("checkpoint-best.h5"), Error);
  CHECK_THROWS_WITH_AS(run_extrapolation(ih.string(), opts({16}, 4, "maybe")), doctest::Contains("--step"), Error);
  CHECK(!fs::exists(ih / "extrapolation.csv"));
}

// Every selective-copying and induction-heads figure rests on this count: logits right on exactly k
// of n scored positions must give k / n, in the full forward's layout ((B, T, V) logits against
// (B, T) targets) and in step mode's ((B, V) logits of step t against column t of the targets).
TEST_CASE("apps/eval: token accuracy known answers, right on k of n scored positions gives exactly k/n, both layouts") {
  const int64_t B = 5, T = 7, V = 6;
  Generator gen(5);
  std::vector<int32_t> y(static_cast<size_t>(B * T), data::kIgnoreIndex);
  std::vector<float> logits(static_cast<size_t>(B * T * V));
  for (auto& l : logits) l = static_cast<float>(gen.uniform() * 2 - 1);
  // Scored positions: 3 per sequence (t = 1, 4, 6); right where (b + t) % 3 != 0. Ignored positions
  // get a target-like argmax too, which must not count.
  int64_t n = 0, k = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      const int32_t target = static_cast<int32_t>((b * 3 + t) % V);
      const bool scored = t == 1 || t == 4 || t == 6;
      const bool right = (b + t) % 3 != 0;
      float* row = logits.data() + i * V;
      const int64_t top = right ? target : (target + 1 + (b + t) % (V - 1)) % V;
      row[top] = 5.0f;
      if (!right) row[target] = 4.999f;  // a close second is still wrong
      if (scored) {
        y[static_cast<size_t>(i)] = target;
        ++n;
        k += right;
      }
    }
  REQUIRE(n == 15);
  REQUIRE(k == 11);
  TokenHits full = count_token_hits(logits.data(), B * T, V, y.data());
  CHECK(full.scored == n);
  CHECK(full.correct == k);
  CHECK(static_cast<double>(full.correct) / static_cast<double>(full.scored) == 11.0 / 15.0);
  // Step mode: one (B, V) block per position, the targets read with stride T.
  TokenHits step;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> at_t(static_cast<size_t>(B * V));
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(logits.data() + (b * T + t) * V, V, at_t.data() + b * V);
    TokenHits h = count_token_hits(at_t.data(), B, V, y.data() + t, T);
    step.scored += h.scored;
    step.correct += h.correct;
  }
  CHECK(step.scored == n);
  CHECK(step.correct == k);
  // Ties go to the first largest logit: right only when the target comes first.
  std::vector<float> tie = {1, 3, 3, 0};
  std::vector<int32_t> t1 = {1}, t2 = {2};
  CHECK(count_token_hits(tie.data(), 1, 4, t1.data()).correct == 1);
  CHECK(count_token_hits(tie.data(), 1, 4, t2.data()).correct == 0);
  // Nothing scored: nothing counted.
  std::vector<int32_t> none(static_cast<size_t>(B * T), data::kIgnoreIndex);
  TokenHits empty = count_token_hits(logits.data(), B * T, V, none.data());
  CHECK(empty.scored == 0);
  CHECK(empty.correct == 0);
}
