// ISA path selection (core/isa.h). __builtin_cpu_supports checks the CPUID bits and, for AVX and
// AVX-512, that the OS saves the wider registers (XSAVE state), so a path it reports is safe to run.
#include "core/isa.h"

#include <atomic>
#include <cstdlib>

#include "core/error.h"

namespace seqlab {
namespace {

Isa probe() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::generic;
}

// -1 until the first active_isa(): the environment is read once.
std::atomic<int> g_active{-1};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic: return "generic";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "?";
}

Isa detected_isa() {
  static const Isa isa = probe();
  return isa;
}

Isa parse_isa(const std::string& name, const std::string& what) {
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512})
    if (name == isa_name(isa)) return isa;
  throw Error(str(what, " = '", name, "': expected avx512, avx2 or generic"));
}

void set_isa(Isa isa) {
  SEQLAB_CHECK(static_cast<int>(isa) <= static_cast<int>(detected_isa()), "ISA path ", isa_name(isa),
               " is not supported by this CPU (the widest it runs is ", isa_name(detected_isa()), ")");
  g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v >= 0) return static_cast<Isa>(v);
  Isa isa = detected_isa();
  if (const char* env = std::getenv("SEQLAB_ISA"); env && *env) {
    isa = parse_isa(env, "environment variable SEQLAB_ISA");
    SEQLAB_CHECK(static_cast<int>(isa) <= static_cast<int>(detected_isa()), "environment variable SEQLAB_ISA = '",
                 env, "': this CPU does not support it (the widest path it runs is ", isa_name(detected_isa()), ")");
  }
  g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
  return isa;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512})
    if (static_cast<int>(isa) <= static_cast<int>(detected_isa())) out.push_back(isa);
  return out;
}

int isa_float_lanes(Isa isa) {
  switch (isa) {
    case Isa::generic: return 4;
    case Isa::avx2: return 8;
    case Isa::avx512: return 16;
  }
  return 4;
}

}  // namespace seqlab
