// data/: CSV and HDF5 sources and their error messages, the ETT splits and window counts, the
// scaler fitted on training rows only, the loader's determinism and prefetch, synthetic tasks.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <unistd.h>

#include "data/forecast.h"
#include "data/loader.h"
#include "data/scaler.h"
#include "data/series.h"
#include "data/split.h"
#include "data/synthetic.h"
#include "data/window.h"
#include "testing.h"

using namespace seqlab;
using namespace seqlab::data;

namespace {

const std::string kEtth1 = SEQLAB_SOURCE_DIR "/data/ETTh1.csv";

// A fresh path in the temp directory, removed when the object dies.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& ext = ".csv") {
    static std::atomic<int> counter{0};
    path = (std::filesystem::temp_directory_path() /
            ("seqlab_data_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + ext))
               .string();
  }
  TempFile(const std::string& text, const std::string& ext) : TempFile(ext) {
    std::ofstream(path, std::ios::binary) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

// The message of the seqlab::Error that f throws ("" when it does not throw).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define CHECK_ERROR_HAS(expr, ...)                                                    \
  do {                                                                                \
    std::string msg_ = error_of([&] { (void)(expr); });                               \
    CHECK_MESSAGE(!msg_.empty(), "expected an error from " #expr);                   \
    for (const std::string& part_ : std::vector<std::string>{__VA_ARGS__})            \
      CHECK_MESSAGE(msg_.find(part_) != std::string::npos, "'", part_, "' not in: ", msg_); \
  } while (0)

bool same(const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && a.to_vector() == b.to_vector(); }

std::vector<Batch> epoch_batches(Loader& l, int64_t epoch) {
  l.reset(epoch);
  std::vector<Batch> out;
  Batch b;
  while (l.next(b)) out.push_back(b);
  return out;
}

std::shared_ptr<ForecastDataset> small_dataset(int64_t rows = 203) {
  SineOptions so;
  so.rows = rows;
  Series s = sine_series(so);
  ColumnSelection cols = select_columns(s.columns, Features::M, "OT");
  return std::make_shared<ForecastDataset>(s.values, Range{0, rows}, 8, 4, cols, "small");
}

}  // namespace

TEST_CASE("data/csv: ETTh1 has 17420 rows of 7 features, the date column kept aside") {
  Series s = read_csv(kEtth1);
  CHECK(s.rows() == 17420);
  CHECK(s.columns == std::vector<std::string>{"HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"});
  REQUIRE(s.dates.size() == 17420);
  CHECK(s.dates[0] == "2016-07-01 00:00:00");
  CHECK(s.values.dtype() == DType::f64);
  CHECK(s.values.data<double>()[6] == doctest::Approx(30.5310001373291));
  CHECK(s.column_index("OT") == 6);
  CHECK_ERROR_HAS(s.column_index("nope"), "no column 'nope'", "HUFL, HULL");
}

TEST_CASE("data/window: ETTh1 with seq_len = pred_len = 96 gives 8449 / 2785 / 2785 windows") {
  Series s = read_csv(kEtth1);
  ForecastOptions opt;  // ett_hour, M, seq_len = pred_len = 96
  ForecastData d = make_forecast_data(s, opt);
  CHECK(d.splits.train.begin == 0);
  CHECK(d.splits.train.end == 8640);
  CHECK(d.splits.val.begin == 8640 - 96);
  CHECK(d.splits.val.end == 11520);
  CHECK(d.splits.test.begin == 11520 - 96);
  CHECK(d.splits.test.end == 14400);
  CHECK(d.train->size() == 8449);
  CHECK(d.val->size() == 2785);
  CHECK(d.test->size() == 2785);
  CHECK(d.train->x_shape() == Shape{96, 7});
  CHECK(d.train->y_shape() == Shape{96, 7});

  // Window i of the test split: input rows [11424 + i, +96), target rows [11520 + i, +96), scaled.
  Tensor scaled = d.scaler.transform(s.values);
  const double* v = scaled.data<double>();
  std::vector<int64_t> idx{0, 2784};
  Batch b = d.test->get(idx);
  CHECK(b.size == 2);
  CHECK(b.x.shape() == Shape{2, 96, 7});
  const float* x = b.x.data<float>();
  const float* y = b.y.data<float>();
  CHECK(x[0] == static_cast<float>(v[11424 * 7]));
  CHECK(x[96 * 7 + 95 * 7 + 6] == static_cast<float>(v[(11424 + 2784 + 95) * 7 + 6]));
  CHECK(y[0] == static_cast<float>(v[11520 * 7]));
  CHECK(y[96 * 7 + 95 * 7 + 6] == static_cast<float>(v[14399 * 7 + 6]));  // the last test row

  // S and MS: one output channel, the target.
  opt.features = Features::MS;
  ForecastData ms = make_forecast_data(s, opt);
  CHECK(ms.test->x_shape() == Shape{96, 7});
  CHECK(ms.test->y_shape() == Shape{96, 1});
  Batch bm = ms.test->get(idx);
  CHECK(bm.y.data<float>()[0] == static_cast<float>(v[11520 * 7 + 6]));
  opt.features = Features::S;
  ForecastData ss = make_forecast_data(s, opt);
  CHECK(ss.train->x_shape() == Shape{96, 1});
  CHECK(ss.train->y_shape() == Shape{96, 1});
  opt.target = "oil";
  CHECK_ERROR_HAS(make_forecast_data(s, opt), kEtth1, "target column 'oil' not found",
                  "HUFL, HULL, MUFL, MULL, LUFL, LULL, OT");
}

TEST_CASE("data/scaler: fitted on the training rows only") {
  Series s = read_csv(kEtth1);
  ForecastData d = make_forecast_data(s, ForecastOptions{});
  const double* v = s.values.data<double>();
  const int64_t C = 7;
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0, full = 0;
    for (int64_t r = 0; r < 8640; ++r) sum += v[r * C + c];
    for (int64_t r = 0; r < s.rows(); ++r) full += v[r * C + c];
    const double mean = sum / 8640, full_mean = full / static_cast<double>(s.rows());
    double sq = 0;
    for (int64_t r = 0; r < 8640; ++r) sq += (v[r * C + c] - mean) * (v[r * C + c] - mean);
    CHECK(d.scaler.mean().data<double>()[c] == doctest::Approx(mean).epsilon(1e-12));
    CHECK(d.scaler.scale().data<double>()[c] == doctest::Approx(std::sqrt(sq / 8640)).epsilon(1e-12));
    CHECK(std::abs(d.scaler.mean().data<double>()[c] - full_mean) > 1e-3);
  }
  // Scaled training rows have mean 0 and std 1; test rows do not.
  Tensor z = d.scaler.transform(s.values);
  double m_train = 0, m_test = 0;
  for (int64_t r = 0; r < 8640; ++r) m_train += z.data<double>()[r * C + 6];
  for (int64_t r = 11520; r < 14400; ++r) m_test += z.data<double>()[r * C + 6];
  CHECK(std::abs(m_train / 8640) < 1e-9);
  CHECK(std::abs(m_test / 2880) > 0.1);
  CHECK_CLOSE(d.scaler.inverse_transform(z), s.values, 1e-12, 1e-12);
}

TEST_CASE("data/scaler: population std, zero std -> 1, column subsets, state round trip") {
  Tensor v = Tensor::from_vector({1, 5, 2, 5, 3, 5, 4, 5}, {4, 2}, DType::f64);
  StandardScaler sc;
  sc.fit(v);
  CHECK_CLOSE(sc.mean(), std::vector<double>({2.5, 5}), 0, 1e-15);
  CHECK_CLOSE(sc.scale(), std::vector<double>({std::sqrt(1.25), 1}), 0, 1e-15);
  CHECK_CLOSE(sc.transform(v).to_vector(),
              std::vector<double>({-1.5 / std::sqrt(1.25), 0, -0.5 / std::sqrt(1.25), 0, 0.5 / std::sqrt(1.25), 0,
                                   1.5 / std::sqrt(1.25), 0}),
              0, 1e-12);
  Tensor col1 = Tensor::from_vector({0, 1}, {2, 1}, DType::f32);
  CHECK_CLOSE(sc.inverse_transform(col1, {1}), std::vector<double>({5, 6}), 0, 1e-6);
  StandardScaler other;
  other.load_state(sc.state());
  CHECK(same(other.mean(), sc.mean()));
  CHECK(same(other.scale(), sc.scale()));
  CHECK_ERROR_HAS(other.load_state({{"mean", sc.mean()}}), "missing key 'std'");
  CHECK_ERROR_HAS(StandardScaler().transform(v), "not fitted");
}

TEST_CASE("data/split: ETT and ratio borders, and fit errors naming seq_len and pred_len") {
  Splits m = ett_minute_splits(96);
  CHECK(m.train.end == 34560);
  CHECK(m.val.begin == 34560 - 96);
  CHECK(m.val.end == 46080);
  CHECK(m.test.begin == 46080 - 96);
  CHECK(m.test.end == 57600);
  // Dataset_Custom with 1001 rows: n_train = 700, n_test = 200, n_val = 101.
  Splits r = ratio_splits(1001, 96);
  CHECK(r.train.begin == 0);
  CHECK(r.train.end == 700);
  CHECK(r.val.begin == 700 - 96);
  CHECK(r.val.end == 801);
  CHECK(r.test.begin == 1001 - 200 - 96);
  CHECK(r.test.end == 1001);
  SplitOptions ratio;
  ratio.kind = SplitKind::ratio;
  CHECK_ERROR_HAS(make_splits(ratio, 1001, 96, 120), "seq_len 96 + pred_len 120 = 216", "val split of 197 rows",
                  "train 700, val 197, test 296");
  CHECK_ERROR_HAS(make_splits(SplitOptions{}, 10000, 96, 96), "ett_hour", "14400", "10000");
  ratio.train = 0.8;
  CHECK_ERROR_HAS(ratio.validate(), "expected 1");
  CHECK_ERROR_HAS(parse_split_kind("thirds"), "'thirds'", "ett_hour, ett_minute, ratio");
  CHECK_ERROR_HAS(parse_features("X"), "'X'", "M, S, MS");
  CHECK(parse_features("MS") == Features::MS);
}

TEST_CASE("data/csv: every malformed file is an error naming the file, the line and the column") {
  const std::string good = "date,a,b\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,3,4\n";
  {
    TempFile f(good, ".csv");
    Series s = read_csv(f.path);
    CHECK(s.columns == std::vector<std::string>{"a", "b"});
    CHECK(s.dates == std::vector<std::string>{"2020-01-01 00:00:00", "2020-01-01 01:00:00"});
    CHECK_CLOSE(s.values, std::vector<double>({1, 2, 3, 4}), 0, 0);
  }
  {  // a date column recognised by its cells, not its name; CRLF line ends; no dates otherwise
    TempFile f("when,a\r\n2020/01/01,1.5\r\n2020/01/02,-2e3\r\n", ".csv");
    Series s = read_csv(f.path);
    CHECK(s.columns == std::vector<std::string>{"a"});
    CHECK(s.dates[1] == "2020/01/02");
    CHECK_CLOSE(s.values, std::vector<double>({1.5, -2000}), 0, 0);
    TempFile g("a,b\n1,2\n", ".csv");
    CHECK(read_csv(g.path).dates.empty());
  }
  const std::string missing = (std::filesystem::temp_directory_path() / "seqlab_no_such_file.csv").string();
  CHECK_ERROR_HAS(read_csv(missing), missing, "no such file");
  TempFile empty("", ".csv");
  CHECK_ERROR_HAS(read_csv(empty.path), empty.path, "empty file");
  TempFile header("date,a,b\n", ".csv");
  CHECK_ERROR_HAS(read_csv(header.path), header.path, "header only (line 1)");
  TempFile ragged("date,a,b\n2020-01-01,1,2\n2020-01-02,3\n", ".csv");
  CHECK_ERROR_HAS(read_csv(ragged.path), ragged.path, "line 3 has 2 cells, expected 3");
  TempFile text("date,a,b\n2020-01-01,1,2\n2020-01-02,3,4\n2020-01-03,5,abc\n", ".csv");
  CHECK_ERROR_HAS(read_csv(text.path), text.path, "line 4, column 'b' (3): expected a number, got 'abc'");
  TempFile blank_cell("date,a,b\n2020-01-01,,2\n", ".csv");
  CHECK_ERROR_HAS(read_csv(blank_cell.path), blank_cell.path, "line 2, column 'a' (2): empty cell");
  TempFile nan("date,a,b\n2020-01-01,1,2\n2020-01-02,nan,4\n", ".csv");
  CHECK_ERROR_HAS(read_csv(nan.path), nan.path, "line 3, column 'a' (2): 'nan' is not finite");
  TempFile inf("a,b\n1,-inf\n", ".csv");
  CHECK_ERROR_HAS(read_csv(inf.path), inf.path, "line 2, column 'b' (2): '-inf' is not finite");
  TempFile huge("a,b\n1,1e999\n", ".csv");
  CHECK_ERROR_HAS(read_csv(huge.path), huge.path, "line 2, column 'b' (2): '1e999' is not finite");
  TempFile dup("date,a,b,a\n2020-01-01,1,2,3\n", ".csv");
  CHECK_ERROR_HAS(read_csv(dup.path), dup.path, "line 1", "duplicate column 'a' (columns 2 and 4)");
}

TEST_CASE("data/hdf5: round trip, and errors for a missing file, dataset or a truncated file") {
  Series s = read_csv(kEtth1);
  TempFile f(".h5");
  write_hdf5(s, f.path, "ett/h1");
  Series r = read_hdf5(f.path, "ett/h1");
  CHECK(r.columns == s.columns);
  CHECK(same(r.values, s.values));
  CHECK(r.source == f.path + ":ett/h1");
  CHECK(same(read_series(f.path, "ett/h1").values, s.values));

  CHECK_ERROR_HAS(read_hdf5(f.path, "nope"), f.path, "no dataset 'nope'", "ett");
  CHECK_ERROR_HAS(read_hdf5(f.path, "ett/nope"), f.path, "no dataset 'ett/nope'");
  const std::string missing = (std::filesystem::temp_directory_path() / "seqlab_no_such_file.h5").string();
  CHECK_ERROR_HAS(read_hdf5(missing, "data"), missing, "no such file");
  TempFile text("not hdf5\n", ".h5");
  CHECK_ERROR_HAS(read_hdf5(text.path, "data"), text.path, "not a readable HDF5 file");

  TempFile cut(".h5");
  std::filesystem::copy_file(f.path, cut.path, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(cut.path, std::filesystem::file_size(cut.path) / 2);
  std::string msg = error_of([&] { read_hdf5(cut.path, "ett/h1"); });
  CHECK(msg.find(cut.path) != std::string::npos);
  CHECK(msg.find("truncated") != std::string::npos);

  Series bad = s;
  bad.values = s.values.clone();
  bad.values.data<double>()[3 * 7 + 2] = NAN;
  TempFile g(".h5");
  write_hdf5(bad, g.path, "data");
  CHECK_ERROR_HAS(read_hdf5(g.path, "data"), g.path, "dataset 'data'", "row 3, column 2", "finite");
}

TEST_CASE("data/loader: seeded order, reproducible per epoch, restorable mid-epoch") {
  auto ds = small_dataset();  // 203 - 8 - 4 + 1 = 192 windows
  REQUIRE(ds->size() == 192);
  Loader a(ds, LoaderOptions::train(16, 7)), b(ds, LoaderOptions::train(16, 7)), c(ds, LoaderOptions::train(16, 8));
  CHECK(a.order(0) == b.order(0));
  CHECK(a.order(0) != a.order(1));
  CHECK(a.order(0) != c.order(0));
  std::vector<int64_t> sorted = a.order(3);
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == Loader(ds, LoaderOptions::eval(16)).order(0));

  auto e1 = epoch_batches(a, 1), e1b = epoch_batches(b, 1);
  REQUIRE(e1.size() == e1b.size());
  for (size_t i = 0; i < e1.size(); ++i) CHECK(same(e1[i].x, e1b[i].x));
  // The batches are the windows of order(1), in order.
  std::vector<int64_t> o = a.order(1);
  CHECK(same(e1[2].x, ds->get(std::span<const int64_t>(o.data() + 32, 16)).x));

  // Resume at (epoch 1, batch 5): the rest of the epoch is the same.
  Loader r(ds, LoaderOptions::train(16, 7));
  r.load_state(LoaderState{1, 5});
  Batch bb;
  for (size_t i = 5; i < e1.size(); ++i) {
    REQUIRE(r.next(bb));
    CHECK(same(bb.x, e1[i].x));
    CHECK(same(bb.y, e1[i].y));
  }
  CHECK_FALSE(r.next(bb));
  CHECK(r.state().epoch == 1);
  CHECK(r.state().batch == static_cast<int64_t>(e1.size()));
}

TEST_CASE("data/loader: prefetch on and off give identical batches") {
  auto ds = small_dataset();
  LoaderOptions on = LoaderOptions::train(10, 3), off = on;
  off.prefetch = false;
  Loader a(ds, on), b(ds, off);
  for (int64_t epoch : {0, 1, 2}) {
    auto ea = epoch_batches(a, epoch), eb = epoch_batches(b, epoch);
    REQUIRE(ea.size() == eb.size());
    for (size_t i = 0; i < ea.size(); ++i) {
      CHECK(same(ea[i].x, eb[i].x));
      CHECK(same(ea[i].y, eb[i].y));
    }
  }
  // Reset in the middle of an epoch with a prefetch in flight.
  Batch x;
  a.reset(0);
  a.next(x);
  a.reset(0);
  REQUIRE(a.next(x));
  CHECK(same(x.x, epoch_batches(b, 0)[0].x));
}

TEST_CASE("data/loader: drop_last only drops the short last batch, eval sees every window once") {
  auto ds = small_dataset(200);  // 189 windows
  REQUIRE(ds->size() == 189);
  Loader train(ds, LoaderOptions::train(32, 1));
  CHECK(train.num_batches() == 5);
  auto tb = epoch_batches(train, 0);
  CHECK(tb.size() == 5);
  for (const auto& b : tb) CHECK(b.size == 32);

  Loader eval(ds, LoaderOptions::eval(32));
  CHECK(eval.num_batches() == 6);
  auto eb = epoch_batches(eval, 0);
  REQUIRE(eb.size() == 6);
  CHECK(eb.back().size == 189 - 5 * 32);
  CHECK(eb.back().x.shape() == Shape{29, 8, 3});
  CHECK(eb.back().y.shape() == Shape{29, 4, 3});
  std::vector<int64_t> all(189);
  std::iota(all.begin(), all.end(), int64_t{0});
  Batch whole = ds->get(all);
  std::vector<double> cat;
  for (const auto& b : eb) {
    auto v = b.x.to_vector();
    cat.insert(cat.end(), v.begin(), v.end());
  }
  CHECK(cat == whole.x.to_vector());
  CHECK_ERROR_HAS(Loader(ds, LoaderOptions::train(500, 1)), "drop_last", "500", "189");
  CHECK_ERROR_HAS(Loader(ds, LoaderOptions::eval(0)), "batch_size");
}

TEST_CASE("data/synthetic: selective copying targets are the 16 data tokens in order") {
  for (int64_t T : {32, 40, 256}) {
    SelectiveCopy task(T);
    Generator gen(11);
    Batch b = task.sample(8, gen);
    REQUIRE(b.x.shape() == Shape{8, T});
    REQUIRE(b.y.shape() == Shape{8, T});
    CHECK(b.x.dtype() == DType::i32);
    CHECK(b.y.dtype() == DType::i32);
    for (int64_t s = 0; s < 8; ++s) {
      const int32_t* x = b.x.data<int32_t>() + s * T;
      const int32_t* y = b.y.data<int32_t>() + s * T;
      std::vector<int32_t> data;
      for (int64_t t = 0; t < T - 16; ++t) {
        CHECK(x[t] != SelectiveCopy::kMarker);
        if (x[t] != SelectiveCopy::kNoise) data.push_back(x[t]);
      }
      REQUIRE(data.size() == 16);
      for (int32_t d : data) CHECK((d >= 2 && d < 16));
      for (int64_t t = 0; t < T; ++t) {
        if (t < T - 16) {
          CHECK(y[t] == kIgnoreIndex);
        } else {
          CHECK(x[t] == SelectiveCopy::kMarker);
          CHECK(y[t] == data[static_cast<size_t>(t - (T - 16))]);
        }
      }
    }
  }
  SelectiveCopy task(64);
  CHECK(same(task.batch(4, 5, 9).x, task.batch(4, 5, 9).x));
  CHECK_FALSE(same(task.batch(4, 5, 9).x, task.batch(4, 5, 10).x));
  CHECK_ERROR_HAS(SelectiveCopy(31), "seq_len", "32");
  CHECK_ERROR_HAS(make_token_task("copy", 64), "'copy'", "selective_copy, induction_heads");
}

TEST_CASE("data/synthetic: induction heads target the key that followed the first trigger") {
  for (int64_t T : {3, 4, 17, 256}) {
    auto task = make_token_task("induction_heads", T);
    CHECK(task->vocab_size() == 16);
    Generator gen(3);
    Batch b = task->sample(32, gen);
    REQUIRE(b.x.shape() == Shape{32, T});
    for (int64_t s = 0; s < 32; ++s) {
      const int32_t* x = b.x.data<int32_t>() + s * T;
      const int32_t* y = b.y.data<int32_t>() + s * T;
      std::vector<int64_t> triggers;
      for (int64_t t = 0; t < T; ++t) {
        CHECK((x[t] >= 0 && x[t] < 16));
        if (x[t] == InductionHeads::kTrigger) triggers.push_back(t);
      }
      REQUIRE(triggers.size() == 2);
      CHECK(triggers[1] == T - 1);
      const int32_t key = x[triggers[0] + 1];
      CHECK(key != InductionHeads::kTrigger);
      for (int64_t t = 0; t < T - 1; ++t) CHECK(y[t] == kIgnoreIndex);
      CHECK(y[T - 1] == key);
    }
  }
  CHECK_ERROR_HAS(InductionHeads(2), "seq_len", "3");
}

TEST_CASE("data/synthetic: induction heads with a fixed key distance put the first trigger d before the query") {
  for (int64_t d : {2, 5, 99}) {
    auto task = make_token_task("induction_heads", 100, d);
    Batch b = task->batch(16, 7, 0);
    for (int64_t s = 0; s < 16; ++s) {
      const int32_t* x = b.x.data<int32_t>() + s * 100;
      std::vector<int64_t> triggers;
      for (int64_t t = 0; t < 100; ++t)
        if (x[t] == InductionHeads::kTrigger) triggers.push_back(t);
      REQUIRE(triggers.size() == 2);
      CHECK(triggers[1] - triggers[0] == d);
      CHECK(b.y.data<int32_t>()[s * 100 + 99] == x[triggers[0] + 1]);
    }
  }
  CHECK(InductionHeads(64, 10).key_distance() == 10);
  CHECK_ERROR_HAS(InductionHeads(64, 1), "key distance", "[2, 63]");
  CHECK_ERROR_HAS(InductionHeads(64, 64), "key distance", "64");
  CHECK_ERROR_HAS(make_token_task("selective_copy", 64, 5), "selective_copy", "only to induction_heads");
}

TEST_CASE("data/synthetic: the sine series goes through the forecasting path") {
  SineOptions so;
  so.rows = 1000;
  Series s = sine_series(so);
  CHECK(s.columns == std::vector<std::string>{"x0", "x1", "OT"});
  CHECK(same(s.values, sine_series(so).values));
  ForecastOptions opt;
  opt.seq_len = 48;
  opt.pred_len = 24;
  opt.features = Features::MS;
  opt.split.kind = SplitKind::ratio;
  ForecastData d = make_forecast_data(s, opt);
  CHECK(d.train->size() == 700 - 48 - 24 + 1);
  CHECK(d.val->size() == 100 + 48 - 48 - 24 + 1);
  CHECK(d.test->size() == 200 + 48 - 48 - 24 + 1);
  Loader l(d.train, LoaderOptions::train(32, 0));
  Batch b;
  REQUIRE(l.next(b));
  CHECK(b.x.shape() == Shape{32, 48, 3});
  CHECK(b.y.shape() == Shape{32, 24, 1});
}

TEST_CASE("data/loader: shards of K ranks split every global batch into contiguous slices, in order") {
  auto ds = small_dataset();  // 192 windows
  const int64_t K = 3, B = 16;  // 16 = 6 + 5 + 5
  Loader whole(ds, LoaderOptions::train(B, 7));
  std::vector<std::unique_ptr<Loader>> shards;
  for (int64_t r = 0; r < K; ++r) {
    LoaderOptions o = LoaderOptions::train(B, 7);
    o.shard_rank = r;
    o.shard_count = K;
    shards.push_back(std::make_unique<Loader>(ds, o));
    CHECK(shards.back()->num_batches() == whole.num_batches());
  }
  for (int64_t epoch : {0, 2}) {
    auto wb = epoch_batches(whole, epoch);
    std::vector<std::vector<Batch>> sb;
    for (auto& s : shards) sb.push_back(epoch_batches(*s, epoch));
    for (size_t i = 0; i < wb.size(); ++i) {
      std::vector<double> cat;
      for (int64_t r = 0; r < K; ++r) {
        const Batch& b = sb[static_cast<size_t>(r)][i];
        CHECK(b.size == (r == 0 ? 6 : 5));
        for (double v : b.x.to_vector()) cat.push_back(v);
      }
      CHECK(cat == wb[i].x.to_vector());
    }
  }
  // A short last eval batch with fewer examples than shards leaves the last shards empty.
  CHECK(Loader::shard_range(1, 0, 2) == std::pair<int64_t, int64_t>{0, 1});
  CHECK(Loader::shard_range(1, 1, 2) == std::pair<int64_t, int64_t>{1, 1});
  LoaderOptions bad = LoaderOptions::train(B, 7);
  bad.shard_rank = 3;
  bad.shard_count = 3;
  CHECK_THROWS_AS(Loader(ds, bad), Error);
}
