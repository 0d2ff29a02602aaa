// What the files of `seqlab report` share, internal to apps/ (the public API is apps/report.h):
// report.cpp finds the models of the run directories (ModelRun) and drives; report_charts.cpp draws
// the learning curves and the forecast window; report_extrapolation.cpp reads extrapolation.csv
// and draws accuracy against sequence length; report_sweep.cpp reads results.csv and draws cost
// against accuracy (comparisons and sweeps) and step time, memory and accuracy against a swept
// value. Each chart function returns the SVG text and writes nothing, so run_report can make every
// picture before it writes the first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "apps/checkpoint.h"  // Metrics
#include "apps/config.h"
#include "apps/report.h"
#include "apps/trainer.h"

namespace seqlab::app::report_detail {

// One model's run directory and what the pictures need of it.
struct ModelRun {
  std::string dir;    // the model's run directory
  size_t run = 0;     // which run directory of the command line it belongs to
  std::string group;  // that directory's name
  std::string name;   // the model's name in its config
  std::string label;  // the legend text: the name, or group/name when names repeat across run dirs
  std::string color;
  Config config;
  Metrics metrics;
};

// The strings of `v` separated by `sep`.
std::string join(const std::vector<std::string>& v, const char* sep = ", ");
// The fields of one CSV line, trimmed; fields may be double-quoted ("" is a quote inside).
std::vector<std::string> csv_fields(const std::string& line);

// A picture: its file name and SVG text.
using Picture = std::pair<std::string, std::string>;

// One row of a comparison's or a sweep's results.csv, as the pictures need it.
struct ResultRow {
  std::string model;
  std::string label, color;         // the marker's text and colour (the model's, fixed per model)
  std::vector<std::string> values;  // the swept keys' values, as in the file (sweeps)
  double step_ms = 0, peak_rss_mib = 0;
  double score = 0;                 // the y figure: test_acc when the table has it (token tasks), else test_mse
  double loss = 0;                  // test_mse (token tasks: the cross-entropy)
  std::string status = "ok";        // ok | failed: <reason>
  bool ok() const { return status == "ok"; }
};
struct ResultsTable {
  std::string path;
  std::vector<std::string> keys;  // the swept keys (a column each); empty for a comparison
  std::vector<ResultRow> rows;
  bool accuracy = false;          // the rows' score is token accuracy (a test_acc column), not the test loss
};

// Reads results.csv by column name: model, step_ms, peak_rss_mib and test_mse (test_acc instead when
// there is one: a token task's accuracy), one column per key
// in `keys`, and status when present (absent: every row ok); other columns are ignored. Labels are
// the model names, colours a palette colour per model in first-appearance order. Throws
// seqlab::Error naming the file and the missing column or bad field.
ResultsTable read_results_table(const std::string& path, const std::vector<std::string>& keys = {});
// The least-squares slope of log(y) on log(x) over the points where both are finite and > 0 (the
// exponent k of y ~ x^k); NaN with fewer than two distinct x.
double fitted_exponent(const std::vector<double>& x, const std::vector<double>& y);
// cost_accuracy.svg: test MSE (token tasks: cross-entropy) against ms per training step (log x),
// one labelled marker per ok row, its area proportional to peak RSS; failed rows named in a note.
std::string cost_accuracy_svg(const ResultsTable& t, const std::string& loss_label, const std::string& subtitle);
// cost_accuracy.svg of the comparisons among the run directories (their results.csv, labelled
// and coloured as `models`); empty when none is a comparison with a results.csv.
std::string comparison_cost_accuracy(const std::vector<ModelRun>& models, const std::vector<std::string>& run_dirs);
// The pictures of a sweep directory `dir` (config `c`, whose sweep is not empty): cost_accuracy.svg,
// and for a numeric axis step_time.svg, peak_memory.svg and accuracy_vs_<key's last part>.svg.
std::vector<Picture> sweep_pictures(const std::string& dir, const Config& c, const ReportOptions& opt);

// learning_curves.svg: validation loss against cumulative training wall time, one series per model.
std::string learning_curves_svg(const std::vector<ModelRun>& models, const std::vector<std::string>& run_dirs);
// forecast.svg: test window opt.window of every forecasting model; models[0] is the reference whose
// problems are errors, the others are left out with a warning when they cannot show that window.
std::string forecast_svg(const std::vector<const ModelRun*>& models, const ReportOptions& opt);
// extrapolation.svg: as extrapolation_svg, with a legend colour per model name (a palette colour
// for the names not in `colors`).
std::string extrapolation_chart(const std::vector<ExtrapolationRow>& rows, int64_t train_len,
                                const std::string& subtitle, const std::map<std::string, std::string>& colors);

}  // namespace seqlab::app::report_detail
