// seqlab::Error and SEQLAB_CHECK: the one way library code reports a problem a user, a config or a
// data file can cause. The message names what was wrong and what was expected; apps/ catches it.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace seqlab {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Concatenates any streamable values into one string.
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace seqlab

/// Throws seqlab::Error with the streamed message when cond is false.
#define SEQLAB_CHECK(cond, ...)                                   \
  do {                                                            \
    if (!(cond)) throw ::seqlab::Error(::seqlab::str(__VA_ARGS__)); \
  } while (0)
