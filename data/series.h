// Series: a multivariate time series as a (rows, C) float64 table with column names, read from a
// CSV file (a header row, one time step per line, an optional date column kept aside) or from a
// 2-D HDF5 dataset (rows are time steps, column names in the string attribute "columns").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace seqlab::data {

struct Series {
  std::vector<std::string> columns;  // feature names, one per column of values (no date column)
  Tensor values;                     // (rows, C) float64
  std::vector<std::string> dates;    // one per row when the source had a date column, else empty
  std::string source;                // the file (and dataset) it came from, for messages

  /// Number of time steps.
  int64_t rows() const { return values.defined() ? values.size(0) : 0; }
  /// Number of feature columns C.
  int64_t num_columns() const { return static_cast<int64_t>(columns.size()); }
  /// Index of column `name`; throws seqlab::Error listing the columns when it is absent.
  int64_t column_index(const std::string& name) const;
};

/// Reads a CSV file: a header row, then one row per time step, every cell a finite number except
/// the date column (named "date", or whose first cell parses as a date/time), which goes to dates.
/// Throws seqlab::Error naming the file, line and column for a missing/empty file, a header-only
/// file, a ragged row, a non-numeric, NaN or Inf cell, or a duplicate column name.
Series read_csv(const std::string& path);
/// read_csv on CSV text already in memory; `name` stands for the file in messages (the fuzzer's entry).
Series parse_csv(std::string text, const std::string& name);

/// Reads the 2-D numeric dataset `dataset` of an HDF5 file (rows = time steps) with its column
/// names from the string attribute "columns" (default names "c0", "c1", ... when absent). Throws
/// seqlab::Error naming the file and dataset for a missing/unreadable file, a missing dataset, a
/// dataset that is not 2-D, a wrong number of names, or a NaN/Inf value.
Series read_hdf5(const std::string& path, const std::string& dataset);

/// Writes s.values as the float64 dataset `dataset` of a new HDF5 file `path` (truncating it),
/// with the column names in the string attribute "columns". Dates are not written.
void write_hdf5(const Series& s, const std::string& path, const std::string& dataset);

/// read_hdf5(path, dataset) when path ends in .h5/.hdf5/.hdf, else read_csv(path).
Series read_series(const std::string& path, const std::string& dataset = "data");

}  // namespace seqlab::data
