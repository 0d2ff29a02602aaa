// The one RAII handle for HDF5 identifiers, shared by the two files that talk to HDF5:
// data/series.cpp (series files) and apps/checkpoint.cpp (checkpoints and metrics).
// Include it from .cpp files only: it brings <hdf5.h>, which no public header should.
#pragma once
#include <hdf5.h>

namespace seqlab::data {

/// Owns one HDF5 identifier and closes it with its own close function (H5Fclose, H5Dclose, ...).
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle(hid_t id, Closer close) : id_(id), close_(close) {}
  ~H5Handle() {
    if (id_ >= 0) close_(id_);
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  operator hid_t() const { return id_; }
  /// False when the call that made the identifier failed (a negative id).
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  Closer close_;
};

/// Turns off HDF5's own error printing: every failure is checked and reported as a seqlab::Error.
inline void silence_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

}  // namespace seqlab::data
