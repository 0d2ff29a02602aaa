// One call from a Series to the three forecasting datasets: split the rows, fit the scaler on the
// training rows only, scale the whole series with it, and cut stride-1 windows from each split.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "data/scaler.h"
#include "data/series.h"
#include "data/split.h"
#include "data/window.h"

namespace seqlab::data {

struct ForecastOptions {
  int64_t seq_len = 96;   // L, input window
  int64_t pred_len = 96;  // P, horizon
  Features features = Features::M;
  std::string target = "OT";  // S / MS target column
  SplitOptions split;         // default ett_hour
  bool scale = true;          // StandardScaler fitted on the training rows
  /// Throws seqlab::Error naming seq_len or pred_len when not positive, and checks split.
  void validate() const;
};

struct ForecastData {
  Splits splits;
  ColumnSelection columns;
  StandardScaler scaler;  // unfitted when !scale
  std::shared_ptr<ForecastDataset> train, val, test;
};

/// Splits, scales (fit on train rows only) and windows `s`; errors name s.source.
ForecastData make_forecast_data(const Series& s, const ForecastOptions& opt);

}  // namespace seqlab::data
