// HDF5 layout of a checkpoint:
//   /params/<name>, /optim/<key>, /scaler/<key>   tensors (float32, float64 or int32, their shapes)
//   /metrics/<name>                               float64 (epochs)
//   /counters/<name>                              int64 scalars
//   /values/<name>                                float64 scalars
//   /rng                                          uint64 (6): the default generator's state
// Writes go to "<file>.tmp", are fsync'ed, then renamed over the target (rename is atomic on POSIX).
#include "apps/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include "core/error.h"
#include "data/h5.h"

namespace seqlab::app {
namespace fs = std::filesystem;

namespace {

using data::H5Handle;
using data::silence_hdf5;

hid_t native_type(DType d) {
  switch (d) {
    case DType::f32: return H5T_NATIVE_FLOAT;
    case DType::f64: return H5T_NATIVE_DOUBLE;
    case DType::i32: return H5T_NATIVE_INT32;
  }
  return H5T_NATIVE_DOUBLE;
}

void write_dataset(const std::string& file, hid_t loc, const std::string& name, const Shape& shape, hid_t type,
                   const void* data) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  H5Handle space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  H5Handle ds(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  SEQLAB_CHECK(ds.ok(), file, ": cannot create dataset '", name, "'");
  SEQLAB_CHECK(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, file, ": cannot write dataset '", name, "'");
}

void write_tensor(const std::string& file, hid_t loc, const std::string& name, const Tensor& t) {
  Tensor c = t.detach().to(Device::cpu);  // device-neutral: a GPU run's checkpoint reads anywhere
  write_dataset(file, loc, name, c.shape(), native_type(c.dtype()), c.raw_data());
}

H5Handle make_group(const std::string& file, hid_t loc, const char* name) {
  hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  SEQLAB_CHECK(g >= 0, file, ": cannot create group '", name, "'");
  return H5Handle(g, H5Gclose);
}

std::vector<std::string> member_names(hid_t group) {
  H5G_info_t info;
  std::vector<std::string> names;
  if (H5Gget_info(group, &info) < 0) return names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t n = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0) continue;
    std::string s(static_cast<size_t>(n), '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), static_cast<size_t>(n) + 1, H5P_DEFAULT);
    names.push_back(s);
  }
  return names;
}

// Reads a dataset as a tensor of its stored type (float32, float64 or int32; other integers as int32).
Tensor read_tensor(const std::string& file, hid_t loc, const std::string& name) {
  H5Handle ds(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), H5Dclose);
  SEQLAB_CHECK(ds.ok(), file, ": cannot open dataset '", name, "'");
  H5Handle space(H5Dget_space(ds), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
  if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  Shape shape(dims.begin(), dims.end());
  H5Handle type(H5Dget_type(ds), H5Tclose);
  DType dt = DType::f64;
  if (H5Tget_class(type) == H5T_FLOAT) dt = H5Tget_size(type) == 4 ? DType::f32 : DType::f64;
  else if (H5Tget_class(type) == H5T_INTEGER) dt = DType::i32;
  Tensor t = Tensor::empty(shape, dt);
  SEQLAB_CHECK(H5Dread(ds, native_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw_data()) >= 0, file,
               ": cannot read dataset '", name, "'");
  return t;
}

std::map<std::string, Tensor> read_group(const std::string& file, hid_t root, const char* group, bool required) {
  std::map<std::string, Tensor> out;
  if (H5Lexists(root, group, H5P_DEFAULT) <= 0) {
    SEQLAB_CHECK(!required, file, ": not a seqlab checkpoint (no group '/", group, "')");
    return out;
  }
  H5Handle g(H5Gopen2(root, group, H5P_DEFAULT), H5Gclose);
  for (const auto& n : member_names(g)) out[n] = read_tensor(file, g, n);
  return out;
}

// Flushes a closed file to disk so the rename publishes complete contents.
void sync_file(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void publish(const fs::path& tmp, const fs::path& path) {
  sync_file(tmp);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  SEQLAB_CHECK(!ec, path.string(), ": cannot rename ", tmp.string(), " over it: ", ec.message());
}

fs::path temp_name(const fs::path& path) { return path.string() + ".tmp"; }

// Creates `tmp`, runs fill(file id), closes, then publishes it as `path`.
template <typename F>
void write_h5(const fs::path& path, F&& fill) {
  silence_hdf5();
  fs::path tmp = temp_name(path);
  {
    H5Handle f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    SEQLAB_CHECK(f.ok(), tmp.string(), ": cannot create the file");
    fill(tmp.string(), static_cast<hid_t>(f));
  }
  publish(tmp, path);
}

}  // namespace

void save_checkpoint(const fs::path& path, const Checkpoint& c) {
  write_h5(path, [&](const std::string& file, hid_t f) {
    {
      H5Handle g = make_group(file, f, "params");
      for (const auto& [k, t] : c.params) write_tensor(file, g, k, t);
    }
    {
      H5Handle g = make_group(file, f, "optim");
      for (const auto& [k, t] : c.optim) write_tensor(file, g, k, t);
    }
    {
      H5Handle g = make_group(file, f, "scaler");
      for (const auto& [k, t] : c.scaler) write_tensor(file, g, k, t);
    }
    {
      H5Handle g = make_group(file, f, "metrics");
      for (const auto& [k, v] : c.metrics) write_dataset(file, g, k, {static_cast<int64_t>(v.size())}, H5T_NATIVE_DOUBLE, v.data());
    }
    {
      H5Handle g = make_group(file, f, "counters");
      for (const auto& [k, v] : c.counters) write_dataset(file, g, k, {}, H5T_NATIVE_INT64, &v);
    }
    {
      H5Handle g = make_group(file, f, "values");
      for (const auto& [k, v] : c.values) write_dataset(file, g, k, {}, H5T_NATIVE_DOUBLE, &v);
    }
    write_dataset(file, f, "rng", {6}, H5T_NATIVE_UINT64, c.rng.data());
  });
}

Checkpoint load_checkpoint(const fs::path& path) {
  silence_hdf5();
  const std::string file = path.string();
  SEQLAB_CHECK(fs::is_regular_file(path), file, ": checkpoint not found");
  H5Handle f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  SEQLAB_CHECK(f.ok(), file, ": cannot open as HDF5 (damaged or not a checkpoint)");
  Checkpoint c;
  c.params = read_group(file, f, "params", true);
  c.optim = read_group(file, f, "optim", true);
  c.scaler = read_group(file, f, "scaler", false);
  for (auto& [k, t] : read_group(file, f, "metrics", false)) c.metrics[k] = t.to_vector();
  {
    SEQLAB_CHECK(H5Lexists(f, "counters", H5P_DEFAULT) > 0, file, ": not a seqlab checkpoint (no group '/counters')");
    H5Handle g(H5Gopen2(f, "counters", H5P_DEFAULT), H5Gclose);
    for (const auto& n : member_names(g)) {
      H5Handle ds(H5Dopen2(g, n.c_str(), H5P_DEFAULT), H5Dclose);
      int64_t v = 0;
      SEQLAB_CHECK(H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) >= 0, file, ": cannot read counter '", n, "'");
      c.counters[n] = v;
    }
  }
  if (H5Lexists(f, "values", H5P_DEFAULT) > 0) {
    H5Handle g(H5Gopen2(f, "values", H5P_DEFAULT), H5Gclose);
    for (const auto& n : member_names(g)) {
      H5Handle ds(H5Dopen2(g, n.c_str(), H5P_DEFAULT), H5Dclose);
      double v = 0;
      SEQLAB_CHECK(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) >= 0, file, ": cannot read value '", n, "'");
      c.values[n] = v;
    }
  }
  {
    H5Handle ds(H5Dopen2(f, "rng", H5P_DEFAULT), H5Dclose);
    SEQLAB_CHECK(ds.ok() && H5Dread(ds, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.rng.data()) >= 0, file,
                 ": no generator state ('/rng')");
  }
  return c;
}

void write_metrics(const fs::path& path, const Metrics& m) {
  write_h5(path, [&](const std::string& file, hid_t f) {
    for (const auto& [k, v] : m) write_dataset(file, f, k, {static_cast<int64_t>(v.size())}, H5T_NATIVE_DOUBLE, v.data());
  });
}

Metrics read_metrics(const fs::path& path) {
  silence_hdf5();
  const std::string file = path.string();
  H5Handle f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  SEQLAB_CHECK(f.ok(), file, ": cannot open as HDF5");
  Metrics m;
  for (const auto& n : member_names(f)) m[n] = read_tensor(file, f, n).to_vector();
  return m;
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  fs::path tmp = temp_name(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    SEQLAB_CHECK(out, tmp.string(), ": cannot create the file");
    out << text;
    out.flush();
    SEQLAB_CHECK(out, tmp.string(), ": write failed");
  }
  publish(tmp, path);
}

}  // namespace seqlab::app
