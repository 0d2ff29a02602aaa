// Loads reference tensors written by the PyTorch generator scripts in tests/fixtures/ (format in
// tests/fixtures/fixture_io.py). Every tensor is read as float64; convert with .to(DType::f32).
#pragma once
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace seqlab::testing {

/// Reads tests/fixtures/<file>; throws naming the file and line on a malformed entry.
inline std::map<std::string, Tensor> load_fixture(const std::string& file) {
  std::string path = std::string(SEQLAB_FIXTURES_DIR) + "/" + file;
  std::ifstream in(path);
  SEQLAB_CHECK(in, path, ": cannot open fixture (run its generator script in tests/fixtures/)");
  std::map<std::string, Tensor> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream hs(line);
    std::string tag, name;
    int ndim = -1;
    hs >> tag >> name >> ndim;
    SEQLAB_CHECK(tag == "tensor" && ndim >= 0, path, ":", lineno, ": expected 'tensor <name> <ndim> <dims...>'");
    Shape shape(static_cast<size_t>(ndim));
    for (auto& d : shape) hs >> d;
    SEQLAB_CHECK(!hs.fail(), path, ":", lineno, ": bad dims for ", name);
    std::vector<double> values(static_cast<size_t>(numel(shape)));
    std::getline(in, line);
    ++lineno;
    std::istringstream vs(line);
    for (auto& v : values) vs >> v;
    SEQLAB_CHECK(!vs.fail(), path, ":", lineno, ": expected ", values.size(), " values for ", name);
    out[name] = Tensor::from_vector(values, shape, DType::f64);
  }
  return out;
}

/// The named tensor of a loaded fixture; throws naming it when absent.
inline Tensor fixture_tensor(const std::map<std::string, Tensor>& fx, const std::string& name) {
  auto it = fx.find(name);
  SEQLAB_CHECK(it != fx.end(), "fixture has no tensor '", name, "'");
  return it->second;
}

}  // namespace seqlab::testing
