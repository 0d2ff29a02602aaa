// CSV and HDF5 sources for Series. The only file that includes HDF5; its automatic error printing
// is switched off so that every failure surfaces once, as a seqlab::Error naming file and dataset.
#include "data/series.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/h5.h"

namespace seqlab::data {

int64_t Series::column_index(const std::string& name) const {
  auto it = std::find(columns.begin(), columns.end(), name);
  if (it != columns.end()) return it - columns.begin();
  std::string list;
  for (const auto& c : columns) list += (list.empty() ? "" : ", ") + c;
  throw Error(str(source, ": no column '", name, "' (columns: ", list, ")"));
}

namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// Splits one CSV line on commas, honouring double-quoted cells ("a,b" and "" escapes).
std::vector<std::string> split_csv_line(std::string_view line) {
  std::vector<std::string> cells;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        cur += ch;
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      cells.push_back(trim(cur));
      cur.clear();
    } else {
      cur += ch;
    }
  }
  cells.push_back(trim(cur));
  return cells;
}

bool digits(std::string_view s, size_t pos, size_t n) {
  if (pos + n > s.size()) return false;
  for (size_t i = pos; i < pos + n; ++i)
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  return true;
}

// HH:MM or HH:MM:SS(.fff) starting at pos and running to the end (an optional trailing zone
// designator "Z" or "+hh:mm" is accepted).
bool is_time(std::string_view s, size_t pos) {
  if (!digits(s, pos, 2) || pos + 2 >= s.size() || s[pos + 2] != ':' || !digits(s, pos + 3, 2)) return false;
  size_t i = pos + 5;
  if (i < s.size() && s[i] == ':') {
    if (!digits(s, i + 1, 2)) return false;
    i += 3;
    if (i < s.size() && s[i] == '.') {
      ++i;
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    }
  }
  if (i < s.size() && (s[i] == 'Z' || s[i] == '+' || s[i] == '-')) return true;
  return i == s.size();
}

// YYYY-MM-DD or YYYY/MM/DD, optionally followed by ' ' or 'T' and a time; or a bare time.
bool is_date_or_time(std::string_view s) {
  if (digits(s, 0, 4) && s.size() >= 10 && (s[4] == '-' || s[4] == '/') && s[7] == s[4] && digits(s, 5, 2) &&
      digits(s, 8, 2)) {
    if (s.size() == 10) return true;
    return (s[10] == ' ' || s[10] == 'T') && is_time(s, 11);
  }
  return is_time(s, 0);
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char ch) { return std::isspace(static_cast<unsigned char>(ch)); });
}

void check_unique(const std::vector<std::string>& names, const std::string& where) {
  for (size_t i = 0; i < names.size(); ++i) {
    SEQLAB_CHECK(!names[i].empty(), where, ": column ", i + 1, " has an empty name");
    for (size_t j = 0; j < i; ++j)
      SEQLAB_CHECK(names[i] != names[j], where, ": duplicate column '", names[i], "' (columns ", j + 1, " and ",
                   i + 1, ")");
  }
}

}  // namespace

Series read_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SEQLAB_CHECK(in, path, ": cannot open the CSV file (",
               std::filesystem::exists(path) ? "not readable" : "no such file", ")");
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_csv(buf.str(), path);
}

Series parse_csv(std::string text, const std::string& path) {
  if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // UTF-8 byte-order mark
  SEQLAB_CHECK(!blank(text), path, ": empty file, expected a header row of column names");

  // Physical lines, numbered from 1; blank lines (e.g. a trailing newline) are skipped.
  std::vector<std::pair<int64_t, std::string_view>> lines;
  {
    std::string_view all(text);
    int64_t no = 0;
    size_t pos = 0;
    while (pos <= all.size()) {
      size_t nl = all.find('\n', pos);
      if (nl == std::string_view::npos) nl = all.size();
      std::string_view line = all.substr(pos, nl - pos);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      ++no;
      if (!blank(line)) lines.emplace_back(no, line);
      pos = nl + 1;
    }
  }
  std::vector<std::string> header = split_csv_line(lines[0].second);
  const int64_t header_line = lines[0].first;
  const size_t n_cells = header.size();
  check_unique(header, str(path, ": line ", header_line));
  SEQLAB_CHECK(lines.size() > 1, path, ": header only (line ", header_line,
               "), expected at least one data row after it");

  // Date columns: named "date", or whose cell in the first data row parses as a date/time.
  std::vector<std::string> first = split_csv_line(lines[1].second);
  std::vector<bool> is_date(n_cells, false);
  for (size_t c = 0; c < n_cells; ++c)
    is_date[c] = lower(header[c]) == "date" || (c < first.size() && is_date_or_time(first[c]));

  Series s;
  s.source = path;
  std::vector<size_t> feature_cols;
  for (size_t c = 0; c < n_cells; ++c)
    if (!is_date[c]) {
      feature_cols.push_back(c);
      s.columns.push_back(header[c]);
    }
  const bool has_dates = feature_cols.size() < n_cells;
  SEQLAB_CHECK(!feature_cols.empty(), path, ": line ", header_line, ": no numeric columns (only dates)");

  const int64_t rows = static_cast<int64_t>(lines.size()) - 1;
  const int64_t C = static_cast<int64_t>(feature_cols.size());
  s.values = Tensor::empty({rows, C}, DType::f64);
  double* v = s.values.data<double>();
  if (has_dates) s.dates.reserve(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const auto& [no, line] = lines[static_cast<size_t>(r + 1)];
    std::vector<std::string> cells = split_csv_line(line);
    SEQLAB_CHECK(cells.size() == n_cells, path, ": line ", no, " has ", cells.size(), " cells, expected ", n_cells,
                 " (as in the header)");
    if (has_dates) {
      std::string d;
      for (size_t c = 0; c < n_cells; ++c)
        if (is_date[c]) d += (d.empty() ? "" : " ") + cells[c];
      s.dates.push_back(std::move(d));
    }
    for (int64_t j = 0; j < C; ++j) {
      size_t c = feature_cols[static_cast<size_t>(j)];
      const std::string& cell = cells[c];
      SEQLAB_CHECK(!cell.empty(), path, ": line ", no, ", column '", header[c], "' (", c + 1,
                   "): empty cell, expected a number");
      const char* b = cell.data();
      const char* e = b + cell.size();
      if (*b == '+') ++b;  // from_chars rejects a leading '+'
      double x = 0;
      auto [ptr, ec] = std::from_chars(b, e, x);
      bool overflow = ec == std::errc::result_out_of_range;
      SEQLAB_CHECK((ec == std::errc() || overflow) && ptr == e, path, ": line ", no, ", column '", header[c], "' (",
                   c + 1, "): expected a number, got '", cell, "'");
      SEQLAB_CHECK(!overflow && std::isfinite(x), path, ": line ", no, ", column '", header[c], "' (", c + 1,
                   "): '", cell, "' is not finite (NaN/Inf or out of range), expected a finite number");
      v[r * C + j] = x;
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// HDF5

namespace {

herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

std::string root_names(hid_t file) {
  std::vector<std::string> names;
  H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_name, &names);
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  return list.empty() ? "none" : list;
}

std::vector<std::string> read_names(hid_t attr, int64_t expected, const std::string& where) {
  H5Handle type(H5Aget_type(attr), H5Tclose);
  H5Handle space(H5Aget_space(attr), H5Sclose);
  SEQLAB_CHECK(type.ok() && space.ok() && H5Tget_class(type) == H5T_STRING, where,
               ": attribute 'columns' must hold strings");
  hssize_t n = H5Sget_simple_extent_npoints(space);
  SEQLAB_CHECK(n == expected, where, ": attribute 'columns' has ", n, " names, expected ", expected,
               " (one per column)");
  std::vector<std::string> names;
  if (H5Tis_variable_str(type) > 0) {
    H5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem, H5T_VARIABLE);
    std::vector<char*> ptrs(static_cast<size_t>(n), nullptr);
    SEQLAB_CHECK(H5Aread(attr, mem, ptrs.data()) >= 0, where, ": cannot read attribute 'columns'");
    for (char* p : ptrs) names.emplace_back(p ? p : "");
    H5Dvlen_reclaim(mem, space, H5P_DEFAULT, ptrs.data());
  } else {
    size_t len = H5Tget_size(type);
    H5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem, len);
    std::vector<char> raw(len * static_cast<size_t>(n));
    SEQLAB_CHECK(H5Aread(attr, mem, raw.data()) >= 0, where, ": cannot read attribute 'columns'");
    for (hssize_t i = 0; i < n; ++i) {
      const char* p = raw.data() + static_cast<size_t>(i) * len;
      names.emplace_back(p, strnlen(p, len));
    }
  }
  return names;
}

}  // namespace

Series read_hdf5(const std::string& path, const std::string& dataset) {
  silence_hdf5();
  SEQLAB_CHECK(std::filesystem::exists(path), path, ": cannot open the HDF5 file (no such file)");
  SEQLAB_CHECK(std::filesystem::file_size(path) > 0, path, ": empty file, expected an HDF5 file");
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  SEQLAB_CHECK(file.ok(), path, ": not a readable HDF5 file (truncated or corrupt?)");
  const std::string where = str(path, ": dataset '", dataset, "'");
  htri_t exists = H5Lexists(file, dataset.c_str(), H5P_DEFAULT);
  SEQLAB_CHECK(exists > 0, path, ": no dataset '", dataset, "' (at the root: ", root_names(file), ")");
  H5Handle ds(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  SEQLAB_CHECK(ds.ok(), where, ": cannot open it as a dataset (truncated or corrupt file, or a group?)");
  H5Handle space(H5Dget_space(ds), H5Sclose);
  H5Handle type(H5Dget_type(ds), H5Tclose);
  SEQLAB_CHECK(space.ok() && type.ok(), where, ": unreadable (truncated or corrupt file?)");
  H5T_class_t cls = H5Tget_class(type);
  SEQLAB_CHECK(cls == H5T_FLOAT || cls == H5T_INTEGER, where, ": expected numbers (float or integer elements)");
  int rank = H5Sget_simple_extent_ndims(space);
  SEQLAB_CHECK(rank == 2, where, ": expected a 2-D dataset (rows, columns), got rank ", rank);
  hsize_t dims[2] = {0, 0};
  H5Sget_simple_extent_dims(space, dims, nullptr);
  const auto rows = static_cast<int64_t>(dims[0]), C = static_cast<int64_t>(dims[1]);
  SEQLAB_CHECK(rows > 0 && C > 0, where, ": empty (", rows, " rows, ", C, " columns), expected at least one of each");

  Series s;
  s.source = str(path, ":", dataset);
  s.values = Tensor::empty({rows, C}, DType::f64);
  SEQLAB_CHECK(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.values.data<double>()) >= 0,
               where, ": reading the values failed (truncated or corrupt file?)");
  const double* v = s.values.data<double>();
  for (int64_t i = 0; i < rows * C; ++i)
    SEQLAB_CHECK(std::isfinite(v[i]), where, ": row ", i / C, ", column ", i % C, " is ", v[i],
                 ", expected a finite number");

  if (H5Aexists(ds, "columns") > 0) {
    H5Handle attr(H5Aopen(ds, "columns", H5P_DEFAULT), H5Aclose);
    SEQLAB_CHECK(attr.ok(), where, ": cannot open attribute 'columns'");
    s.columns = read_names(attr, C, where);
    check_unique(s.columns, where);
  } else {
    for (int64_t c = 0; c < C; ++c) s.columns.push_back(str("c", c));
  }
  return s;
}

void write_hdf5(const Series& s, const std::string& path, const std::string& dataset) {
  silence_hdf5();
  SEQLAB_CHECK(s.values.defined() && s.values.dim() == 2, "write_hdf5(", path, "): values must be (rows, C)");
  const int64_t rows = s.values.size(0), C = s.values.size(1);
  SEQLAB_CHECK(s.num_columns() == C, "write_hdf5(", path, "): ", s.num_columns(), " column names for ", C,
               " columns");
  Tensor v = s.values.to(DType::f64);
  H5Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  SEQLAB_CHECK(file.ok(), path, ": cannot create the HDF5 file");
  hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(C)};
  H5Handle space(H5Screate_simple(2, dims, nullptr), H5Sclose);
  H5Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl, 1);
  H5Handle ds(H5Dcreate2(file, dataset.c_str(), H5T_IEEE_F64LE, space, lcpl, H5P_DEFAULT,
                     H5P_DEFAULT),
          H5Dclose);
  SEQLAB_CHECK(ds.ok(), path, ": cannot create dataset '", dataset, "'");
  SEQLAB_CHECK(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data<double>()) >= 0, path,
               ": writing dataset '", dataset, "' failed");

  H5Handle str_type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(str_type, H5T_VARIABLE);
  hsize_t n = static_cast<hsize_t>(C);
  H5Handle aspace(H5Screate_simple(1, &n, nullptr), H5Sclose);
  H5Handle attr(H5Acreate2(ds, "columns", str_type, aspace, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  std::vector<const char*> ptrs;
  for (const auto& c : s.columns) ptrs.push_back(c.c_str());
  SEQLAB_CHECK(attr.ok() && H5Awrite(attr, str_type, ptrs.data()) >= 0, path, ": dataset '", dataset,
               "': writing attribute 'columns' failed");
  SEQLAB_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL) >= 0, path, ": flushing the HDF5 file failed");
}

Series read_series(const std::string& path, const std::string& dataset) {
  std::string ext = lower(std::filesystem::path(path).extension().string());
  if (ext == ".h5" || ext == ".hdf5" || ext == ".hdf") return read_hdf5(path, dataset);
  return read_csv(path);
}

}  // namespace seqlab::data
