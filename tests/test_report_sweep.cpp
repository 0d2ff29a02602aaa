// apps/report_sweep: `seqlab report` on a real tiny sweep (sine, gru and mlp at two lengths) draws
// cost_accuracy.svg (a labelled marker per model and ok cell, radii ordered like peak RSS),
// step_time.svg and peak_memory.svg (each legend's exponent the least-squares slope of the
// results.csv points) and accuracy_vs_seq_len.svg; a hand-written sweep with a failed cell leaves
// its points out and names it; a comparison gets cost_accuracy.svg; a results.csv without a needed
// column is an error naming it, and nothing is written.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "apps/config.h"
#include "apps/report.h"
#include "apps/report_charts.h"
#include "apps/trainer.h"
#include "run_testing.h"
#include "svg_testing.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::app;
namespace fs = std::filesystem;
using testing::Element;
using testing::numbers;
using testing::Svg;

using testing::sweep_config;

namespace {

struct Quiet : testing::RunScope {
  Quiet() : RunScope(spdlog::level::err) {}
};

// results.csv as rows of named fields.
std::vector<std::map<std::string, std::string>> read_csv(const fs::path& p) {
  std::istringstream in(testing::read_file(p));
  std::string line;
  std::getline(in, line);
  auto split = [](const std::string& l) {
    std::vector<std::string> f;
    std::stringstream ss(l);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    return f;
  };
  const auto header = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    auto f = split(line);
    REQUIRE(f.size() == header.size());
    rows.emplace_back();
    for (size_t i = 0; i < f.size(); ++i) rows.back()[header[i]] = f[i];
  }
  return rows;
}

// The slope of log(y) on log(x), computed here independently of the report.
double slope(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double lx = std::log(x[i]), ly = std::log(y[i]);
    sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
  }
  return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

// The exponent in a legend text "gru  ~T^1.84"; NaN when there is none.
double exponent_of(const std::string& label, const std::string& letter) {
  const size_t at = label.find("  ~" + letter + "^");
  return at == std::string::npos ? NAN : std::stod(label.substr(at + 4 + letter.size()));
}

// The sized markers of cost_accuracy.svg (the legend's are not sized), in document order.
std::vector<const Element*> sized_markers(const Svg& s) {
  std::vector<const Element*> r;
  for (const auto* e : s.all("circle"))
    if (e->attrs.count("fill-opacity")) r.push_back(e);
  return r;
}

ReportOptions options(const fs::path& out) {
  ReportOptions o;
  o.out = out.string();
  return o;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("apps/report: the fitted exponent of exact power laws") {
  using report_detail::fitted_exponent;
  CHECK(fitted_exponent({1, 2, 4, 8}, {3, 12, 48, 192}) == doctest::Approx(2.0).epsilon(1e-12));  // y = 3 x^2
  CHECK(fitted_exponent({96, 336, 720}, {5 / std::sqrt(96.0), 5 / std::sqrt(336.0), 5 / std::sqrt(720.0)}) ==
        doctest::Approx(-0.5).epsilon(1e-12));
  CHECK(fitted_exponent({2, 4, 8, 16}, {7, 7, 7, 7}) == doctest::Approx(0.0));
  CHECK(fitted_exponent({1, 2, 0, 4, 8}, {3, 12, NAN, 48, -1}) == doctest::Approx(2.0).epsilon(1e-12));  // left out
  CHECK(std::isnan(fitted_exponent({8}, {1})));
  CHECK(std::isnan(fitted_exponent({8, 8}, {1, 2})));  // one distinct x
}

TEST_CASE("apps/report: a sweep over data.seq_len draws cost against accuracy and scaling against the length") {
  Quiet q;
  const fs::path dir = testing::scratch("report_sweep");
  Config c = parse_config(sweep_config(dir, "\"data.seq_len\" = [8, 16]\n"), "sweep.toml");
  REQUIRE(run_sweep(c, {.quiet = true}).size() == 4);
  const fs::path out = testing::scratch("report_sweep_out");
  const auto written = run_report({dir.string()}, options(out));
  REQUIRE(written.size() == 4);
  CHECK(written[0] == (out / "cost_accuracy.svg").string());
  CHECK(written[1] == (out / "step_time.svg").string());
  CHECK(written[2] == (out / "peak_memory.svg").string());
  CHECK(written[3] == (out / "accuracy_vs_seq_len.svg").string());
  CHECK(!fs::exists(out / "learning_curves.svg"));

  // One marker per model and cell, in series order (gru, then mlp), labelled with the setting.
  const auto rows = read_csv(dir / "results.csv");
  REQUIRE(rows.size() == 4);
  std::vector<std::map<std::string, std::string>> ordered;
  for (const char* model : {"gru", "mlp"})
    for (const auto& r : rows)
      if (r.at("model") == model) ordered.push_back(r);
  Svg ca(out / "cost_accuracy.svg");
  const auto markers = sized_markers(ca);
  REQUIRE(markers.size() == 4);
  CHECK(markers[0]->attrs.at("fill") == markers[1]->attrs.at("fill"));  // a colour per model
  CHECK(markers[0]->attrs.at("fill") != markers[2]->attrs.at("fill"));
  for (const char* label : {"gru T=8", "gru T=16", "mlp T=8", "mlp T=16"}) CHECK_MESSAGE(ca.has_text(label), label);
  CHECK(ca.has_text("marker area ~ peak RSS: smallest"));
  CHECK(ca.has_text("test MSE"));
  // Radii ordered like peak RSS (the largest 14 px).
  double largest = 0;
  for (size_t i = 0; i < 4; ++i) {
    const double ri = std::stod(markers[i]->attrs.at("r")), mi = std::stod(ordered[i].at("peak_rss_mib"));
    largest = std::max(largest, ri);
    for (size_t j = 0; j < 4; ++j) {
      const double rj = std::stod(markers[j]->attrs.at("r")), mj = std::stod(ordered[j].at("peak_rss_mib"));
      if (mi < mj) CHECK(ri <= rj);
      if (mi == mj) CHECK(ri == rj);
    }
  }
  CHECK(largest == 14);

  // Each legend's exponent is the least-squares slope of its model's points in results.csv.
  for (const auto& [file, column] :
       {std::pair{"step_time.svg", "step_ms"}, std::pair{"peak_memory.svg", "peak_rss_mib"}}) {
    CAPTURE(file);
    Svg s(out / file);
    const auto labels = s.polyline_labels();
    REQUIRE(labels.size() == 2);
    for (size_t m = 0; m < 2; ++m) {
      std::vector<double> x, y;
      for (const auto& r : rows)
        if (r.at("model") == (m ? "mlp" : "gru"))
          x.push_back(std::stod(r.at("data.seq_len"))), y.push_back(std::stod(r.at(column)));
      CHECK(labels[m].starts_with(m ? "mlp  ~T^" : "gru  ~T^"));
      CHECK(std::abs(exponent_of(labels[m], "T") - slope(x, y)) <= 0.005 + 1e-9);
      CHECK(s.points_of(labels[m]) == 2);
      CHECK(s.has_text(labels[m]));  // in the legend
    }
  }
  Svg acc(out / "accuracy_vs_seq_len.svg");
  CHECK(acc.polyline_labels() == std::vector<std::string>{"gru", "mlp"});
  CHECK(acc.has_text("data.seq_len (log2)"));

  // A cell of the sweep is a comparison: learning curves, forecast and cost against accuracy.
  const fs::path cell = dir / "data.seq_len=8";
  const auto cell_written = run_report({cell.string()}, options(out / "cell"));
  REQUIRE(cell_written.size() == 3);
  CHECK(cell_written[2] == (out / "cell" / "cost_accuracy.svg").string());
  Svg cc(out / "cell" / "cost_accuracy.svg");
  CHECK(sized_markers(cc).size() == 2);
  CHECK(cc.has_text("gru"));
  CHECK(!cc.has_text("T=8"));
  // A sweep goes alone; a forecast option is an error.
  CHECK(contains(testing::report_error_of({dir.string(), cell.string()}, options(out / "x")), "give it to seqlab report alone"));
  ReportOptions window = options(out / "x");
  window.window_given = true;
  CHECK(contains(testing::report_error_of({dir.string()}, window), "--window: " + dir.string() + " is a sweep directory"));
  CHECK(!fs::exists(out / "x"));
}

TEST_CASE("apps/report: a hand-written sweep with a failed cell, and results.csv errors") {
  Quiet q;
  const fs::path dir = testing::scratch("report_sweep_fixture");
  std::ofstream(dir / "config.resolved.toml")
      << to_toml(parse_config(sweep_config(dir, "\"data.seq_len\" = [8, 16, 32]\n"), "sweep.toml"));
  // With the optional d_model column (a [sweep] match_params width) before the status.
  const std::string header = "model,params,epochs,train_seconds,step_ms,peak_rss_mib,val_mse,test_mse,test_mae,"
                             "data.seq_len,d_model,status\n";
  const std::string ok_rows = "gru,100,1,1.0,1.0,100.0,0.5,0.4,0.3,8,8,ok\n"
                              "mlp,90,1,1.0,1.0,50.0,0.6,0.5,0.4,8,8,ok\n"
                              "gru,100,1,1.0,2.0,400.0,0.5,0.3,0.3,16,8,ok\n"
                              "mlp,90,1,1.0,4.0,50.0,0.6,0.45,0.4,16,8,ok\n";
  const std::string failed = "gru,0,0,nan,nan,nan,nan,nan,nan,32,8,failed: out of memory; projected 90 GiB\n"
                             "mlp,0,0,nan,nan,nan,nan,nan,nan,32,8,failed: out of memory; projected 90 GiB\n";
  std::ofstream(dir / "results.csv") << header << ok_rows << failed;
  const fs::path out = testing::scratch("report_sweep_fixture_out");
  REQUIRE(run_report({dir.string()}, options(out)).size() == 4);

  Svg ca(out / "cost_accuracy.svg");
  const auto markers = sized_markers(ca);
  REQUIRE(markers.size() == 4);  // not the failed cell's
  std::vector<std::string> radii;
  for (const auto* m : markers) radii.push_back(m->attrs.at("r"));
  CHECK(radii == std::vector<std::string>{"7.00", "14.00", "4.95", "4.95"});  // 14 px * sqrt(rss / 400 MiB)
  CHECK(!ca.has_text("T=32"));
  CHECK(ca.has_text("smallest 50.0 MiB, largest 400.0 MiB"));
  CHECK(ca.has_text("left out, failed: data.seq_len=32 (out of memory; projected 90 GiB)"));

  Svg st(out / "step_time.svg");
  CHECK(st.polyline_labels() == std::vector<std::string>{"gru  ~T^1.00", "mlp  ~T^2.00"});
  CHECK(st.points_of("gru  ~T^1.00") == 2);
  CHECK(st.has_text("left out, failed: data.seq_len=32"));
  Svg pm(out / "peak_memory.svg");
  CHECK(pm.polyline_labels() == std::vector<std::string>{"gru  ~T^2.00", "mlp  ~T^0.00"});
  Svg acc(out / "accuracy_vs_seq_len.svg");
  CHECK(acc.points_of("gru") == 2);
  CHECK(acc.has_text("left out, failed"));

  // A missing column or file names it, and nothing is written.
  const fs::path none = testing::scratch("report_sweep_none");
  std::ofstream(dir / "results.csv") << "model,params,epochs,train_seconds,peak_rss_mib,val_mse,test_mse,test_mae,"
                                        "data.seq_len,status\n";
  const std::string csv = (dir / "results.csv").string();
  CHECK(contains(testing::report_error_of({dir.string()}, options(none)), csv + ": line 1: no column 'step_ms'"));
  std::ofstream(dir / "results.csv") << "model,params,epochs,train_seconds,step_ms,peak_rss_mib,val_mse,test_mse,"
                                        "test_mae,status\n";
  CHECK(contains(testing::report_error_of({dir.string()}, options(none)), csv + ": line 1: no column 'data.seq_len'"));
  fs::remove(dir / "results.csv");
  CHECK(contains(testing::report_error_of({dir.string()}, options(none)), csv + ": no such file"));
  CHECK(fs::is_empty(none));
}

TEST_CASE("apps/report: a width sweep of a token task draws against model.d_model, one line per model and lr") {
  Quiet q;
  const fs::path dir = testing::scratch("report_sweep_width");
  const std::string sine = "task = \"sine\"\nrows = 400\nseq_len = 16\npred_len = 4\nchannels = 2";
  std::string text = sweep_config(dir, "\"model.d_model\" = [4, 16]\n\"optim.lr\" = [0.01, 0.001]\n");
  text.replace(text.find(sine), sine.size(), "task = \"selective-copying\"\nseq_len = 32");
  std::ofstream(dir / "config.resolved.toml") << to_toml(parse_config(text, "sweep.toml"));
  std::string csv = "model,params,epochs,train_seconds,step_ms,peak_rss_mib,val_mse,test_mse,test_mae,model.d_model,"
                    "optim.lr,status\n";
  for (const char* m : {"gru", "mlp"})
    for (int d : {4, 16})
      for (const char* lr : {"0.01", "0.001"})  // step time ~ D^1.5, memory ~ D^0.5
        csv += str(m, ",10,1,1.0,", d * std::sqrt(d), ",", 10 * std::sqrt(d), ",1.0,", 2.0 / d, ",nan,", d, ",", lr,
                   ",ok\n");
  std::ofstream(dir / "results.csv") << csv;
  const fs::path out = testing::scratch("report_sweep_width_out");
  const auto written = run_report({dir.string()}, options(out));
  REQUIRE(written.size() == 4);
  CHECK(written[3] == (out / "accuracy_vs_d_model.svg").string());
  Svg st(out / "step_time.svg");
  CHECK(st.polyline_labels() == std::vector<std::string>{"gru lr=0.01  ~D^1.50", "gru lr=0.001  ~D^1.50",
                                                          "mlp lr=0.01  ~D^1.50", "mlp lr=0.001  ~D^1.50"});
  CHECK(st.has_text("model.d_model (log2)"));
  Svg pm(out / "peak_memory.svg");
  CHECK(pm.polyline_labels().at(0) == "gru lr=0.01  ~D^0.50");
  Svg ca(out / "cost_accuracy.svg");
  CHECK(ca.has_text("gru D=4 lr=0.01"));
  CHECK(ca.has_text("test cross-entropy"));
  CHECK(Svg(out / "accuracy_vs_d_model.svg").has_text("test cross-entropy"));

  // With the test_acc column a sweep of a token task writes (after the swept keys), the pictures
  // show the token accuracy instead of the loss.
  std::string with_acc;
  std::istringstream lines(csv);
  for (std::string l; std::getline(lines, l);) {
    const size_t cut = l.rfind(',');
    with_acc += l.substr(0, cut) + (with_acc.empty() ? ",test_acc" : ",0.75") + l.substr(cut) + "\n";
  }
  std::ofstream(dir / "results.csv") << with_acc;
  const fs::path out2 = testing::scratch("report_sweep_width_acc");
  REQUIRE(run_report({dir.string()}, options(out2)).size() == 4);
  Svg ca2(out2 / "cost_accuracy.svg");
  CHECK(ca2.has_text("test token accuracy (fraction of scored tokens)"));
  CHECK(ca2.has_text("Cost against accuracy: test accuracy against training step time"));
  Svg acc(out2 / "accuracy_vs_d_model.svg");
  CHECK(acc.has_text("test token accuracy (fraction of scored tokens)"));
  CHECK(!acc.has_text("test cross-entropy"));
}
