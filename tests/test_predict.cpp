// seqlab predict (apps/predict.h): the pred_len steps after the last row, in the data's units, dated
// at the input's frequency; the same forecast from a CSV whose columns come in another order; the
// forecast is the model's output on the scaled last window with the training scaler undone; every
// bad input named with its file and row or column, nothing written.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/predict.h"
#include "apps/trainer.h"
#include "autograd/node.h"
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

// A series of `rows` rows, columns a, b, c around 1000, 50 and -3 (so that scaled and unscaled
// values cannot be mistaken for each other), dated from 2020-01-01 every `step` seconds.
std::string series_csv(int rows, int64_t step, const std::vector<std::string>& order = {"a", "b", "c"}) {
  std::string s = "date";
  for (const auto& c : order) s.append(",").append(c);
  s += "\n";
  int64_t t0 = 0;
  REQUIRE(parse_timestamp("2020-01-01 00:00:00", t0));
  for (int i = 0; i < rows; ++i) {
    s += format_timestamp(t0 + i * step, "2020-01-01 00:00:00");
    for (const auto& c : order) {
      const double v = c == "a" ? 1000 + 40 * std::sin(0.3 * i) : c == "b" ? 50 + 5 * std::cos(0.2 * i) : -3 + 0.1 * (i % 7);
      s.append(",").append(std::to_string(v));
    }
    s += "\n";
  }
  return s;
}

fs::path write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p;
}

// A tiny run trained on `csv` (M: every column; or MS with target c).
fs::path train_on(const fs::path& dir, const fs::path& csv, const std::string& features = "M") {
  const std::string text =
      str("[data]\npath = \"", csv.string(), "\"\nsplit = \"ratio\"\nfeatures = \"", features,
          "\"\ntarget = \"c\"\nseq_len = 12\npred_len = 5\n", "[model]\ntype = \"gru\"\nd_model = 8\nn_layers = 1\n",
          "[train]\nepochs = 1\nmax_steps = 3\nbatch_size = 8\nthreads = 1\n", "[output]\ndir = \"",
          (dir / "run").string(), "\"\n");
  run_train(parse_config(text, "p.toml"), {.quiet = true});
  return dir / "run";
}

std::string error_of(const std::string& run, const PredictOptions& opt) {
  try {
    run_predict(run, opt);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("apps/predict: timestamps parse and continue in their own layout") {
  int64_t t = 0;
  REQUIRE(parse_timestamp("2016-07-01 23:00:00", t));
  CHECK(format_timestamp(t + 3600, "2016-07-01 23:00:00") == "2016-07-02 00:00:00");
  REQUIRE(parse_timestamp("2020-02-28", t));
  CHECK(format_timestamp(t + 86400, "2020-02-28") == "2020-02-29");  // a leap year
  CHECK(format_timestamp(t + 2 * 86400, "2020-02-28") == "2020-03-01");
  REQUIRE(parse_timestamp("2021/12/31T23:45", t));
  CHECK(format_timestamp(t + 900, "2021/12/31T23:45") == "2022/01/01T00:00");
  for (const char* bad : {"", "2020-13-01", "2020-01-01 25:00", "2020-01-01x", "01/02/2020", "2020-01/01", "abc"}) {
    CAPTURE(bad);
    CHECK(!parse_timestamp(bad, t));
  }
}

TEST_CASE("apps/predict: the steps after the last row, in the data's units, dated at the input's frequency") {
  Quiet q;
  const fs::path dir = testing::scratch("predict");
  const fs::path csv = write(dir / "hourly.csv", series_csv(200, 3600));
  const fs::path run = train_on(dir, csv);
  Forecast f = run_predict(run.string(), {});
  CHECK(f.columns == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(f.rows.size() == 5);
  CHECK(f.frequency == "hourly");
  CHECK(f.last_date == "2020-01-09 07:00:00");  // row 200: 199 hours after midnight
  CHECK(f.dates.front() == "2020-01-09 08:00:00");
  CHECK(f.dates.back() == "2020-01-09 12:00:00");
  // The data's units: column a lives around 1000, b around 50 (scaled values would be near 0).
  for (const auto& row : f.rows) {
    CHECK(std::abs(row[0] - 1000) < 200);
    CHECK(std::abs(row[1] - 50) < 25);
  }
  // The file: date, then the columns; written where asked, or in the run directory.
  const auto lines = testing::read_file(run / "forecast.csv");
  CHECK(lines.starts_with("date,a,b,c\n2020-01-09 08:00:00,"));
  CHECK(lines == forecast_csv(f));

  // The same numbers by hand: the model on the scaled last window, the scaler undone.
  LoadedRun r = load_run_model(run.string());
  const data::Series s = data::read_csv(csv.string());
  std::vector<double> all = s.values.to_vector(), last(all.end() - 12 * 3, all.end());
  Tensor x = r.fc.scaler.transform(Tensor::from_vector(last, {1, 12, 3}, DType::f64)).to(DType::f32);
  Tensor y;
  {
    NoGradGuard ng;
    y = r.fc.scaler.inverse_transform(r.model->forward(x).to(DType::f64));
  }
  const std::vector<double> yv = y.to_vector();
  for (size_t t = 0; t < 5; ++t)
    for (size_t k = 0; k < 3; ++k) CHECK(f.rows[t][k] == doctest::Approx(yv[t * 3 + k]).epsilon(1e-6));
}

TEST_CASE("apps/predict: a CSV it has not seen, in another column order and at other frequencies") {
  Quiet q;
  const fs::path dir = testing::scratch("predict_other");
  const fs::path run = train_on(dir, write(dir / "train.csv", series_csv(200, 3600)));
  // The same rows with the columns shuffled: the same forecast, columns named as in training.
  const fs::path shuffled = write(dir / "shuffled.csv", series_csv(200, 3600, {"c", "a", "b"}));
  const Forecast a = run_predict(run.string(), {.out = (dir / "a.csv").string()});
  const Forecast b = run_predict(run.string(), {.data = shuffled.string(), .out = (dir / "b.csv").string()});
  CHECK(b.columns == a.columns);
  for (size_t t = 0; t < a.rows.size(); ++t)
    for (size_t k = 0; k < 3; ++k) CHECK(b.rows[t][k] == doctest::Approx(a.rows[t][k]).epsilon(1e-9));
  // A shorter file (its own last window): other numbers; 15-minute, daily and weekly steps continue.
  const std::vector<std::pair<int64_t, std::string>> steps = {
      {900, "15-minute"}, {86400, "daily"}, {604800, "weekly"}};
  for (const auto& [step, name] : steps) {
    CAPTURE(name);
    const fs::path other = write(dir / (name + ".csv"), series_csv(30, step));
    const Forecast f = run_predict(run.string(), {.data = other.string(), .out = (dir / (name + ".out.csv")).string()});
    CHECK(f.frequency == name);
    int64_t last = 0, first = 0;
    REQUIRE(parse_timestamp(f.last_date, last));
    REQUIRE(parse_timestamp(f.dates.front(), first));
    CHECK(first - last == step);
    CHECK(f.rows[0][0] != doctest::Approx(a.rows[0][0]).epsilon(1e-9));
  }
  // A plot of the history and the forecast when asked; MS predicts the target alone.
  const fs::path ms = train_on(testing::scratch("predict_ms"), dir / "train.csv", "MS");
  const Forecast t = run_predict(ms.string(), {.plot = (dir / "f.svg").string()});
  CHECK(t.columns == std::vector<std::string>{"c"});
  CHECK(testing::read_file(dir / "f.svg").find("Forecast of c") != std::string::npos);
  // Without a date column the rows are numbered.
  std::string nodate;
  for (const auto& l : std::vector<std::string>{"a,b,c"}) nodate += l + "\n";
  for (int i = 0; i < 20; ++i) nodate += str(1000 + i, ",", 50 - i, ",", i % 3, "\n");
  const Forecast n = run_predict(run.string(), {.data = write(dir / "nodate.csv", nodate).string(),
                                                .out = (dir / "n.csv").string()});
  CHECK(n.dates.empty());
  CHECK(testing::read_file(dir / "n.csv").starts_with("step,a,b,c\n1,"));
}

TEST_CASE("apps/predict: bad input names the file and the row or column, and writes nothing") {
  Quiet q;
  const fs::path dir = testing::scratch("predict_bad");
  const fs::path run = train_on(dir, write(dir / "train.csv", series_csv(200, 3600)));
  const fs::path out = dir / "never.csv";
  auto bad = [&](const std::string& name, const std::string& text) {
    return error_of(run.string(), {.data = write(dir / name, text).string(), .out = out.string(), .plot = (dir / "never.svg").string()});
  };
  std::string s = bad("short.csv", series_csv(11, 3600));
  CHECK(s.find("short.csv: 11 rows, expected at least seq_len = 12") != std::string::npos);
  s = bad("missing.csv", series_csv(50, 3600, {"a", "b"}));
  CHECK(s.find("missing.csv: no column 'c' (expected the training data's columns: 'a', 'b', 'c')") != std::string::npos);
  s = bad("extra.csv", series_csv(50, 3600, {"a", "b", "c", "d"}));
  CHECK(s.find("extra.csv: column 'd' was not in the training data") != std::string::npos);
  std::string text = series_csv(50, 3600);
  std::string nan = text;
  nan.replace(nan.rfind(",") + 1, 3, "nan");
  s = bad("nan.csv", nan);
  CHECK(s.find("nan.csv") != std::string::npos);
  CHECK(s.find("line 51") != std::string::npos);
  std::string word = text;
  word.replace(word.rfind(",") + 1, 3, "abc");
  s = bad("word.csv", word);
  CHECK(s.find("word.csv") != std::string::npos);
  CHECK(s.find("line 51") != std::string::npos);
  // Row 45 an hour late: irregular.
  std::string late = text;
  const size_t at = late.find("2020-01-02 20:00:00");  // row 45 (1-based), hour 44
  REQUIRE(at != std::string::npos);
  late.replace(at, 19, "2020-01-02 21:00:00");
  s = bad("late.csv", late);
  CHECK(s.find("late.csv: irregular timestamps: row 45 ('2020-01-02 21:00:00') comes 7200 s after row 44") !=
        std::string::npos);
  CHECK(!fs::exists(out));
  CHECK(!fs::exists(dir / "never.svg"));
  // A token-task run is refused.
  const fs::path tok = testing::scratch("predict_token");
  run_train(parse_config(str("[data]\ntask = \"selective-copying\"\nseq_len = 40\nn_train_batches = 2\n",
                             "n_eval_batches = 1\n[model]\ntype = \"gru\"\nd_model = 8\nn_layers = 1\n",
                             "[train]\nepochs = 1\nbatch_size = 8\neval_batch_size = 16\nthreads = 1\n",
                             "[output]\ndir = \"", tok.string(), "\"\n"), "t.toml"),
            {.quiet = true});
  CHECK(error_of(tok.string(), {}).find("a selective-copying run (a token task): predict forecasts a time series") !=
        std::string::npos);
  CHECK(!fs::exists(tok / "forecast.csv"));
}

TEST_CASE("apps/predict: on the bundled ETTh1, the 96 hours after 2018-06-26 19:00:00") {
  Quiet q;
  const fs::path dir = testing::scratch("predict_etth1");
  const std::string data = (fs::path(SEQLAB_SOURCE_DIR) / "data" / "ETTh1.csv").string();
  run_train(parse_config(str("[data]\npath = \"", data, "\"\nseq_len = 96\npred_len = 96\n",
                             "[model]\ntype = \"mlp\"\nd_model = 8\nn_layers = 1\nrevin = true\n",
                             "[train]\nepochs = 1\nmax_steps = 2\nbatch_size = 8\nthreads = 1\n",
                             "[output]\ndir = \"", (dir / "run").string(), "\"\n"),
                         "etth1.toml"),
            {.quiet = true});
  const Forecast f = run_predict((dir / "run").string(), {});
  CHECK(f.columns == std::vector<std::string>{"HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"});
  CHECK(f.frequency == "hourly");
  CHECK(f.last_date == "2018-06-26 19:00:00");
  REQUIRE(f.dates.size() == 96);
  CHECK(f.dates.front() == "2018-06-26 20:00:00");
  CHECK(f.dates.back() == "2018-06-30 19:00:00");
  // OT (oil temperature, degrees) over the last days of the data is between about 5 and 15.
  for (const auto& row : f.rows) CHECK(std::abs(row[6] - 9.5) < 10);
}
