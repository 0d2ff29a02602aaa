// Series -> three forecasting datasets: split, fit the scaler on the training rows only, scale
// the whole series with it, then window each split (the Time-Series-Library's order of steps).
#include "data/forecast.h"

#include "core/error.h"

namespace seqlab::data {

void ForecastOptions::validate() const {
  SEQLAB_CHECK(seq_len >= 1, "data: seq_len must be at least 1, got ", seq_len);
  SEQLAB_CHECK(pred_len >= 1, "data: pred_len must be at least 1, got ", pred_len);
  split.validate();
}

ForecastData make_forecast_data(const Series& s, const ForecastOptions& opt) {
  opt.validate();
  SEQLAB_CHECK(s.values.defined() && s.values.dim() == 2 && s.rows() >= 1, s.source, ": no data rows");
  ForecastData d;
  try {  // the messages of split and features do not know the file; add it
    d.splits = make_splits(opt.split, s.rows(), opt.seq_len, opt.pred_len);
    d.columns = select_columns(s.columns, opt.features, opt.target);
  } catch (const Error& e) {
    throw Error(str(s.source, ": ", e.what()));
  }
  Tensor values = s.values;
  if (opt.scale) {
    d.scaler.fit(s.values, d.splits.train);
    values = d.scaler.transform(s.values);
  }
  auto make = [&](Range r, const char* name) {
    return std::make_shared<ForecastDataset>(values, r, opt.seq_len, opt.pred_len, d.columns, str(s.source, " ", name));
  };
  d.train = make(d.splits.train, "train");
  d.val = make(d.splits.val, "val");
  d.test = make(d.splits.test, "test");
  return d;
}

}  // namespace seqlab::data
