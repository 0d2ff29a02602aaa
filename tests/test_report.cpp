// apps/report and apps/svg: `seqlab report` on a tiny two-model sine comparison writes well-formed
// SVG (balanced tags, one polyline per model, the names in the legend, every coordinate finite and
// inside the picture); the forecast shows the history, the truth and one line per model; the
// extrapolation chart from a hand-written fixture (tests/fixtures/extrapolation.csv, in the
// columns of `seqlab eval --seq-lens`) marks the lengths not run; errors name the path or option.
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "apps/config.h"
#include "apps/report.h"
#include "apps/svg.h"
#include "apps/trainer.h"
#include "run_testing.h"
#include "svg_testing.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::app;
namespace fs = std::filesystem;
using testing::numbers;
using testing::Svg;

namespace {

struct Quiet : testing::RunScope {
  Quiet() : RunScope(spdlog::level::err) {}
};

// A tiny sine comparison (two models, a few steps), trained once per test process.
fs::path sine_comparison() {
  static fs::path dir;
  if (!dir.empty() && fs::is_regular_file(dir / "results.csv")) return dir;
  dir = testing::scratch("report_cmp");
  std::string text =
      str("[data]\ntask = \"sine\"\nrows = 500\nseq_len = 16\npred_len = 4\n", "[model]\nd_model = 8\nn_layers = 1\n",
          "[[models]]\ntype = \"gru\"\n[[models]]\nname = \"ssm\"\ntype = \"s4d\"\nd_state = 8\n",
          "[train]\nepochs = 3\nmax_steps = 3\nbatch_size = 8\nthreads = 1\npatience = 0\n", "[output]\ndir = \"",
          dir.string(), "\"\n");
  REQUIRE(run_compare(parse_config(text, "report.toml"), {.quiet = true}).size() == 2);
  return dir;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Report options: the output directory, a test window (-1: not given), a channel, scaled values.
ReportOptions options(const fs::path& out, int64_t window = -1, const std::string& channel = "", bool scaled = false) {
  ReportOptions o;
  o.out = out.string();
  o.window = window < 0 ? 0 : window;
  o.window_given = window >= 0;
  o.channel = channel;
  o.scaled = scaled;
  return o;
}

}  // namespace

TEST_CASE("apps/svg: ticks, escaping and a rendered chart") {
  CHECK(svg::escape_xml("a<b & \"c\" 'd'>\x01") == "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
  auto t = svg::linear_ticks(0.13, 0.87);
  REQUIRE(t.size() >= 3);
  CHECK(t.front() <= 0.13);
  CHECK(t.back() >= 0.87);
  CHECK(t[1] - t[0] == doctest::Approx(0.1));  // 0.74 / 5 = 0.148: the nearest nice step
  CHECK(svg::tick_text(0.6000000001, 0.2) == "0.6");
  CHECK(svg::tick_text(-0.0, 1) == "0");
  CHECK(svg::tick_text(1500, 500) == "1500");
  auto lt = svg::log_ticks(0.03, 2.5, svg::Scale::log10);  // 1-2-5 within three decades
  CHECK(std::count(lt.begin(), lt.end(), 0.1) == 1);
  CHECK(std::count(lt.begin(), lt.end(), 0.5) == 1);
  auto l2 = svg::log_ticks(256, 65536, svg::Scale::log2);
  CHECK(l2.front() == 256);
  CHECK(l2.back() == 65536);

  svg::LineChart c;
  c.title = "t <&> \"q\"";
  c.y.scale = svg::Scale::log10;
  svg::Series a, b;
  a.label = "a&b", a.x = {0, 1, 2, 3}, a.y = {10, 1, NAN, 0.01};  // NaN left out
  b.label = "<c>", b.x = {0, 3}, b.y = {-1, 5}, b.dashed = true;  // -1 not on a log axis
  c.series = {a, b};
  Svg s(svg::render(c));
  CHECK(s.polyline_labels() == std::vector<std::string>{"a&amp;b"});  // one drawable point left of "<c>"
  CHECK(s.points_of("a&amp;b") == 3);
  CHECK(s.has_text("&lt;c&gt;"));  // in the legend, escaped
  svg::LineChart empty;
  empty.title = "empty";
  CHECK_THROWS_WITH_AS(svg::render(empty), doctest::Contains("no finite point"), Error);
}

TEST_CASE("apps/report: a picture names the data file as a config gives it, never the machine's directories") {
  const fs::path cwd = fs::current_path();
  CHECK(shown_path((cwd / "data" / "ETTh1.csv").string()) == "data/ETTh1.csv");
  CHECK(shown_path((cwd / "x.csv").string()) == "x.csv");
  CHECK(shown_path("/nowhere/near/here/series.csv") == "series.csv");  // outside: the name alone
}

TEST_CASE("apps/report: learning curves and the forecast of a two-model sine comparison") {
  Quiet q;
  fs::path dir = sine_comparison();
  fs::path out = testing::scratch("report_out");
  auto written = run_report({dir.string()}, options(out));
  REQUIRE(written.size() == 3);  // no extrapolation.csv: no extrapolation picture
  CHECK(written[0] == (out / "learning_curves.svg").string());
  CHECK(written[1] == (out / "forecast.svg").string());
  CHECK(written[2] == (out / "cost_accuracy.svg").string());  // a comparison (test_report_sweep.cpp)
  for (const auto& e : fs::directory_iterator(out)) CHECK_MESSAGE(e.path().extension() == ".svg", e.path().string());

  Svg lc(out / "learning_curves.svg");
  CHECK(lc.polyline_labels() == std::vector<std::string>{"gru", "ssm"});
  CHECK(lc.points_of("gru") == 3);          // one point per epoch
  CHECK(lc.all("circle").size() == 6 + 2);  // a marker per epoch, and one in each legend entry
  CHECK(lc.has_text("gru"));
  CHECK(lc.has_text("ssm"));
  CHECK(lc.has_text("training wall time (s)"));
  CHECK(lc.has_text("validation loss (MSE"));
  // Time grows along each line: x increases from point to point.
  for (const auto* p : lc.all("polyline")) {
    auto v = numbers(p->attrs.at("points"));
    for (size_t i = 2; i < v.size(); i += 2) CHECK(v[i] > v[i - 2]);
  }

  Svg fc(out / "forecast.svg");
  CHECK(fc.polyline_labels() == std::vector<std::string>{"input history", "truth", "gru", "ssm"});
  CHECK(fc.points_of("input history") == 16);  // seq_len
  CHECK(fc.points_of("truth") == 5);           // joined to the last input step, then pred_len
  CHECK(fc.points_of("gru") == 4);
  CHECK(fc.points_of("ssm") == 4);
  CHECK(fc.has_text("channel OT"));  // the target by default
  CHECK(fc.has_text("unscaled"));
  // The forecasts start one step after the history ends, where the truth's second point is.
  auto hist = numbers(fc.all("polyline")[0]->attrs.at("points"));
  auto truth = numbers(fc.all("polyline")[1]->attrs.at("points"));
  auto gru = numbers(fc.all("polyline")[2]->attrs.at("points"));
  CHECK(truth[0] == doctest::Approx(hist[hist.size() - 2]));
  CHECK(gru[0] == doctest::Approx(truth[2]));

  // Another window and channel, on the scaled values; the default output is the run directory.
  written = run_report({dir.string()}, options("", 7, "x0", true));
  REQUIRE(written.size() == 3);
  Svg fc7(dir / "forecast.svg");
  CHECK(fc7.has_text("Test window 7 of"));
  CHECK(fc7.has_text("channel x0"));
  CHECK(fc7.has_text("scaled: the values the model sees"));
  CHECK(fc7.polyline_labels().size() == 4);

  // Two run directories whose model names repeat: the labels say which directory.
  fs::path copy = testing::scratch_root() / "report_cmp2";
  fs::remove_all(copy);
  fs::copy(dir, copy, fs::copy_options::recursive);
  written = run_report({dir.string(), copy.string()}, options(out));
  Svg both(out / "learning_curves.svg");
  CHECK(both.polyline_labels() ==
        std::vector<std::string>{"report_cmp/gru", "report_cmp/ssm", "report_cmp2/gru", "report_cmp2/ssm"});
  fs::remove_all(copy);
}

TEST_CASE("apps/report: the extrapolation chart from an extrapolation.csv fixture") {
  Quiet q;
  const fs::path fixture = fs::path(SEQLAB_FIXTURES_DIR) / "extrapolation.csv";
  auto rows = read_extrapolation_csv(fixture.string());
  REQUIRE(rows.size() == 9);
  CHECK(rows[7].status == "skipped: time limit");
  CHECK(std::isnan(rows[7].accuracy));
  CHECK(rows[8].status == "skipped: memory limit, projected 33 GiB");  // a quoted field with a comma
  CHECK(rows[2].accuracy == doctest::Approx(0.998));

  Svg s(extrapolation_svg(rows, 256));
  CHECK(s.polyline_labels() == std::vector<std::string>{"mamba (step)", "transformer (forward)"});
  CHECK(s.points_of("mamba (step)") == 4);
  CHECK(s.points_of("transformer (forward)") == 3);
  CHECK(s.all("path", "cross").size() == 2);  // the two lengths not run
  CHECK(s.has_text("time limit"));
  CHECK(s.has_text(
      "not run for transformer at 2^14 (skipped: time limit); 2^16 (skipped: memory limit, projected 33 GiB)"));
  CHECK(s.has_text("training length (256)"));
  // The x axis is log2: 2^8, 2^10, 2^12 and 2^14 are evenly spaced.
  auto m = numbers(s.all("polyline")[0]->attrs.at("points"));
  CHECK(m[2] - m[0] == doctest::Approx(m[4] - m[2]).epsilon(1e-3));
  CHECK(m[6] - m[4] == doctest::Approx(m[4] - m[2]).epsilon(1e-3));
  // The crosses sit above every point of accuracy 1.
  auto cross = numbers(s.all("path", "cross")[0]->attrs.at("d"));
  CHECK(cross[1] + 4 < m[1]);

  // What `seqlab eval --seq-lens` writes reads back.
  fs::path written_csv = testing::scratch("report_csv") / "extrapolation.csv";
  std::ofstream(written_csv) << extrapolation_csv(rows);
  auto back = read_extrapolation_csv(written_csv.string());
  REQUIRE(back.size() == rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    CAPTURE(i);
    CHECK(back[i].model == rows[i].model);
    CHECK(back[i].seq_len == rows[i].seq_len);
    std::string status = rows[i].status;
    std::replace(status.begin(), status.end(), ',', ';');  // the writer keeps commas out of fields
    CHECK(back[i].status == status);
    CHECK(back[i].mode == rows[i].mode);
    CHECK(std::isnan(back[i].accuracy) == std::isnan(rows[i].accuracy));
    if (!std::isnan(rows[i].accuracy)) CHECK(back[i].accuracy == doctest::Approx(rows[i].accuracy));
  }

  // Found in a run directory by seqlab report, next to the other pictures.
  fs::path dir = sine_comparison();
  fs::copy_file(fixture, dir / "extrapolation.csv", fs::copy_options::overwrite_existing);
  fs::path out = testing::scratch("report_x");
  auto written = run_report({dir.string()}, options(out));
  fs::remove(dir / "extrapolation.csv");
  REQUIRE(written.size() == 4);  // and cost_accuracy.svg
  Svg x(out / "extrapolation.svg");
  CHECK(x.polyline_labels().size() == 2);

  // A malformed file names the file, the line and the column.
  fs::path bad = out / "bad.csv";
  std::ofstream(bad) << "model,seq_len,accuracy,status\nmamba,256,1.0,ok\nmamba,lots,1.0,ok\n";
  CHECK_THROWS_WITH_AS(
      read_extrapolation_csv(bad.string()),
      doctest::Contains((bad.string() + ": line 3: seq_len: expected an integer >= 1, got 'lots'").c_str()), Error);
  std::ofstream(bad) << "model,seq_len,status\nmamba,256,ok\n";
  CHECK_THROWS_WITH_AS(read_extrapolation_csv(bad.string()), doctest::Contains("no column 'accuracy'"), Error);
  std::ofstream(bad) << "model,seq_len,accuracy,status\nmamba,256,97,ok\n";
  CHECK_THROWS_WITH_AS(read_extrapolation_csv(bad.string()), doctest::Contains("expected a fraction in [0, 1]"), Error);
}

TEST_CASE("apps/report: a single train run of a token task, beside a comparison") {
  Quiet q;
  fs::path cmp = sine_comparison();
  fs::path dir = testing::scratch("report_tokens");
  std::string text =
      str("[data]\ntask = \"selective-copying\"\nseq_len = 40\nn_train_batches = 3\nn_eval_batches = 1\n",
          "[model]\nname = \"tiny-lstm\"\ntype = \"lstm\"\nd_model = 8\nn_layers = 1\n",
          "[train]\nepochs = 2\nbatch_size = 8\neval_batch_size = 16\nthreads = 1\n", "[output]\ndir = \"",
          dir.string(), "\"\n");
  run_train(parse_config(text, "tokens.toml"), {.quiet = true});
  // Alone: learning curves only (no forecast), in the run directory; the loss is cross-entropy.
  auto written = run_report({dir.string()}, ReportOptions());
  REQUIRE(written.size() == 1);
  Svg lc(dir / "learning_curves.svg");
  CHECK(lc.polyline_labels() == std::vector<std::string>{"tiny-lstm"});
  CHECK(lc.has_text("cross-entropy"));
  CHECK(contains(testing::report_error_of({dir.string()}, options(dir, 3)), "--window: no forecasting run among"));
  // With the comparison: every model in one chart (names are unique, so no directory prefix), and
  // the forecast from the forecasting models only.
  fs::path out = testing::scratch("report_mixed");
  written = run_report({dir.string(), cmp.string()}, options(out));
  REQUIRE(written.size() == 3);  // and cost_accuracy.svg of the comparison
  Svg both(out / "learning_curves.svg");
  CHECK(both.polyline_labels() == std::vector<std::string>{"tiny-lstm", "gru", "ssm"});
  CHECK(both.has_text("MSE or cross-entropy"));
  CHECK(Svg(out / "forecast.svg").polyline_labels() ==
        std::vector<std::string>{"input history", "truth", "gru", "ssm"});
}

TEST_CASE("apps/report: errors name the directory, file or option, and write nothing") {
  Quiet q;
  fs::path dir = sine_comparison();
  fs::path out = testing::scratch("report_err");
  const std::string missing = (testing::scratch_root() / "no_such_run").string();
  CHECK(contains(testing::report_error_of({missing}, {}), missing + ": no such directory"));
  fs::path empty = testing::scratch("report_empty");
  CHECK(contains(testing::report_error_of({empty.string()}, {}), empty.string() + ": not a run directory (no config.resolved.toml)"));

  // A model directory without metrics.h5.
  fs::path partial = testing::scratch_root() / "report_partial";
  fs::remove_all(partial);
  fs::copy(dir, partial, fs::copy_options::recursive);
  fs::remove(partial / "ssm" / "metrics.h5");
  CHECK(contains(testing::report_error_of({partial.string()}, {}), (partial / "ssm" / "metrics.h5").string() + ": no such file"));
  fs::remove_all(partial / "ssm");
  CHECK(contains(testing::report_error_of({partial.string()}, {}), (partial / "ssm").string() + ": no such directory"));

  std::string e = testing::report_error_of({dir.string()}, options(out, 100000));
  CHECK(contains(e, "--window 100000: expected a test window in [0, "));
  CHECK(contains(e, (dir / "gru").string()));
  ReportOptions negative = options(out);
  negative.window = -1, negative.window_given = true;
  e = testing::report_error_of({dir.string()}, negative);
  CHECK(contains(e, "--window -1"));
  e = testing::report_error_of({dir.string()}, options(out, -1, "HUFL"));
  CHECK(contains(
      e, "--channel 'HUFL': not a predicted column of " + (dir / "gru").string() + " (expected one of: x0, x1, OT)"));
  // Nothing was written by the failed runs (the pictures are made before the first is written).
  CHECK(fs::is_empty(out));

  // The command exits 1 with the message on stderr.
  const std::string cmd = str(SEQLAB_BINARY, " report ", missing, " > ", (out / "stdout.txt").string(), " 2> ",
                              (out / "stderr.txt").string());
  int rc = std::system(cmd.c_str());
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 1);
  CHECK(contains(testing::read_file(out / "stderr.txt"), missing + ": no such directory"));
}
