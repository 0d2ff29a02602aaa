// Which vector instruction set the hand-vectorised kernels use, chosen once at start: the widest
// path the CPU supports (AVX-512F, AVX2+FMA, else generic SSE2), or a narrower one forced by the
// environment variable SEQLAB_ISA=avx512|avx2|generic so that any machine can test and benchmark
// every path it can run. Kernels with per-ISA code are compiled once per path (core/kernels/isa/)
// and pick their entry point through active_isa(); see docs/ARCHITECTURE.md, "ISA paths".
#pragma once
#include <string>
#include <vector>

namespace seqlab {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

/// "generic", "avx2" or "avx512".
const char* isa_name(Isa isa);
/// The widest path this CPU (and OS) supports.
Isa detected_isa();
/// The path in use: detected_isa(), or SEQLAB_ISA when set (read once). Throws seqlab::Error when
/// SEQLAB_ISA names no path or one this CPU lacks.
Isa active_isa();
/// Every path this CPU can run, narrowest first (tests run each one).
std::vector<Isa> supported_isas();
/// Switches the path in use (tests, benchmarks); throws seqlab::Error when the CPU lacks it.
void set_isa(Isa isa);
/// Parses "avx512", "avx2" or "generic"; throws seqlab::Error naming `what` otherwise.
Isa parse_isa(const std::string& name, const std::string& what);
/// The lanes of one float vector on a path: 16, 8 or 4.
int isa_float_lanes(Isa isa);

/// RAII: runs a scope on one path and restores the previous one.
class IsaGuard {
 public:
  explicit IsaGuard(Isa isa) : prev_(active_isa()) { set_isa(isa); }
  ~IsaGuard() { set_isa(prev_); }
  IsaGuard(const IsaGuard&) = delete;
  IsaGuard& operator=(const IsaGuard&) = delete;

 private:
  Isa prev_;
};

}  // namespace seqlab
