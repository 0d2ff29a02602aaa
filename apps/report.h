// `seqlab report`: SVG pictures from run directories (a `seqlab train` run or a `seqlab compare`
// directory holding one run per model): learning curves (validation loss against training wall
// time), one test window's forecast of every forecasting model against the truth, accuracy
// against sequence length from extrapolation.csv files (`seqlab eval --seq-lens`), and for a
// comparison cost against accuracy (test loss against ms per step, marker area ~ peak RSS). A
// sweep directory (`seqlab compare` with a [sweep]), given alone, gets cost against accuracy of
// every model and cell, and against its numeric swept key (data.seq_len first) step time and peak
// memory on log-log axes with each line's fitted exponent, and test loss.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "apps/trainer.h"  // ExtrapolationRow

namespace seqlab::app {

struct ReportOptions {
  std::string out;            // output directory (created); empty: the first run directory
  int64_t window = 0;         // forecast.svg: the test window
  bool window_given = false;  // --window was given (an error when there is no forecasting run)
  std::string channel;        // forecast.svg: a predicted column by name; empty: the target (else the last)
  bool scaled = false;        // forecast.svg: plot the scaled values the model sees, not the data's units
};

/// Writes learning_curves.svg, forecast.svg (when some run forecasts), extrapolation.svg (when
/// some run directory or model directory holds extrapolation.csv) and cost_accuracy.svg (when some
/// directory is a comparison with results.csv) into opt.out; for a sweep directory (the only one
/// given) cost_accuracy.svg and, against a numeric swept key, step_time.svg, peak_memory.svg and
/// accuracy_vs_<key's last part>.svg instead. Each file goes through a temporary file and a
/// rename; every picture is made before the first is written. Returns the paths written. Throws
/// seqlab::Error naming the directory, file, column or option that is wrong.
std::vector<std::string> run_report(const std::vector<std::string>& run_dirs, const ReportOptions& opt);

/// A data file's path as a picture shows it: relative to the working directory when inside it (as a
/// config gives it: configs name data relative to where seqlab runs), else its file name alone, so a
/// committed picture never carries the directories of the machine that made it (config.resolved.toml
/// stores absolute paths).
std::string shown_path(const std::string& path);

/// Reads an extrapolation.csv (apps/trainer.h, extrapolation_csv) (columns by header name; model, seq_len, accuracy and
/// status are required). Throws seqlab::Error naming the file, line and column.
std::vector<ExtrapolationRow> read_extrapolation_csv(const std::string& path);
/// The accuracy-against-length chart of `rows` (models in first-appearance order); `train_len` > 0
/// draws the training length as a dashed vertical line.
std::string extrapolation_svg(const std::vector<ExtrapolationRow>& rows, int64_t train_len = 0,
                              const std::string& subtitle = "");

}  // namespace seqlab::app
