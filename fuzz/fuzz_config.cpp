// libFuzzer target: the config loader (apps/config.cpp, parse_config) on arbitrary bytes. An input
// either loads or throws seqlab::Error; a crash, a sanitizer report or another exception is a bug.
// Inputs with an integer beyond +-4096 are skipped: loading builds one layer to check its options,
// and a d_model of a million only costs memory (the ranges themselves are tests/bad_inputs cases).
#include <toml.hpp>

#include <cstdint>
#include <sstream>
#include <string>

#include "apps/config.h"
#include "core/error.h"

namespace {

bool has_huge_integer(const toml::value& v) {
  if (v.is_integer()) return v.as_integer() > 4096 || v.as_integer() < -4096;
  if (v.is_array())
    for (const auto& e : v.as_array())
      if (has_huge_integer(e)) return true;
  if (v.is_table())
    for (const auto& [k, e] : v.as_table())
      if (has_huge_integer(e)) return true;
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    std::istringstream in(text);
    // toml11 must not see bad UTF-8 (it overruns its buffer); parse_config rejects it itself.
    if (seqlab::app::invalid_utf8_offset(text) == std::string_view::npos &&
        has_huge_integer(toml::parse(in, "fuzz.toml")))
      return 0;
  } catch (const std::exception&) {
    // not TOML: parse_config must turn it into a seqlab::Error below
  }
  try {
    seqlab::app::Config c = seqlab::app::parse_config(text, "fuzz.toml");
    (void)seqlab::app::to_toml(c);
  } catch (const seqlab::Error&) {
  }
  return 0;
}
