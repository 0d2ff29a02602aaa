// `seqlab predict RUN_DIR`: the real future. The last seq_len rows of a series (the run's own data,
// or a CSV with the same columns) through the trained model; the pred_len steps after the last row
// in the data's own units (the training scaler undone), dated at the input's frequency.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace seqlab::app {

struct PredictOptions {
  std::string data{};              // a CSV (or HDF5) with the training data's columns; empty: the run's own data
  std::string out{};               // the forecast CSV; empty: RUN_DIR/forecast.csv
  std::string checkpoint = "best"; // best | last
  std::string plot{};              // an SVG of the history and the forecast; empty: none
};

/// The forecast: one row per future step.
struct Forecast {
  std::vector<std::string> columns;       // the predicted columns (M: every column; S, MS: the target)
  std::vector<std::string> dates;         // one per step, continuing the input's timestamps ("" without dates)
  std::vector<std::vector<double>> rows;  // (pred_len) x (columns), in the data's units
  std::string frequency;                  // "hourly", "15-minute", "daily", "weekly", "every N s"; "" without dates
  std::string last_date;                  // the input's last timestamp ("" without dates)
};

/// Forecasts from `run_dir` (one model's run directory, forecasting) and writes opt.out (and
/// opt.plot) through a temporary file and a rename, after every check. Returns the forecast. Throws
/// seqlab::Error naming the file, the row or column and what was expected: a token-task run, fewer
/// rows than seq_len, missing or extra columns, a non-numeric or NaN cell, irregular timestamps.
Forecast run_predict(const std::string& run_dir, const PredictOptions& opt);

/// The CSV text of a forecast: `date` (or `step` 1..P without dates), then the predicted columns.
std::string forecast_csv(const Forecast& f);

/// Parses a timestamp as the data files write them ("2016-07-01 00:00:00", "2016-07-01 00:00",
/// "2016-07-01", "2016-07-01T00:00:00", also with '/'), to seconds since 1970 (UTC, no time zones);
/// false when it is none of these.
bool parse_timestamp(const std::string& text, int64_t& seconds);
/// `seconds` written in the layout of `like` (the same separators and fields).
std::string format_timestamp(int64_t seconds, const std::string& like);

}  // namespace seqlab::app
