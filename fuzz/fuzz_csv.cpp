// libFuzzer target: the CSV reader (data/series.cpp, parse_csv) on arbitrary bytes. An input either
// loads into a consistent Series or throws seqlab::Error; anything else is a bug (scripts/fuzz.sh).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "data/series.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    seqlab::data::Series s = seqlab::data::parse_csv(std::string(reinterpret_cast<const char*>(data), size), "fuzz.csv");
    // What the rest of seqlab relies on: a (rows, C) table of finite numbers, one name per column.
    if (s.values.dim() != 2 || s.values.size(1) != s.num_columns() || s.rows() < 1) std::abort();
    if (!s.dates.empty() && static_cast<int64_t>(s.dates.size()) != s.rows()) std::abort();
    const double* v = s.values.data<double>();
    for (int64_t i = 0; i < s.values.numel(); ++i)
      if (!std::isfinite(v[i])) std::abort();
  } catch (const seqlab::Error&) {
  }
  return 0;
}
