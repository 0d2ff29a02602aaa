// What the files of `seqlab report` share, internal to apps/ (the public API is apps/report.h):
// report.cpp finds the models of the run directories (ModelRun) and drives; report_charts.cpp draws
// the learning curves and the forecast window; report_extrapolation.cpp reads extrapolation.csv
// and draws accuracy against sequence length. Each chart function returns the SVG text and writes
// nothing, so run_report can make every picture before it writes the first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
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
