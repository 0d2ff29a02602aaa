// ISA path selection (core/isa.h): names, the forced path, and that every kernel path this CPU
// runs is reachable. The per-path kernel checks live beside each kernel's tests (for_each_isa).
#include <doctest/doctest.h>

#include "core/error.h"
#include "core/isa.h"

using namespace seqlab;

TEST_CASE("isa: parse, names and lanes") {
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) CHECK(parse_isa(isa_name(isa), "x") == isa);
  CHECK_THROWS_WITH_AS(parse_isa("sse9", "environment variable SEQLAB_ISA"),
                       doctest::Contains("SEQLAB_ISA = 'sse9': expected avx512, avx2 or generic"), Error);
  CHECK(isa_float_lanes(Isa::generic) == 4);
  CHECK(isa_float_lanes(Isa::avx2) == 8);
  CHECK(isa_float_lanes(Isa::avx512) == 16);
}

TEST_CASE("isa: the supported paths run up to the detected one, and a guard restores the path") {
  const std::vector<Isa> paths = supported_isas();
  REQUIRE(!paths.empty());
  CHECK(paths.front() == Isa::generic);
  CHECK(paths.back() == detected_isa());
  MESSAGE("detected ", isa_name(detected_isa()), ", active ", isa_name(active_isa()));
  const Isa before = active_isa();
  {
    IsaGuard g(Isa::generic);
    CHECK(active_isa() == Isa::generic);
  }
  CHECK(active_isa() == before);
  if (detected_isa() != Isa::avx512) CHECK_THROWS_AS(set_isa(Isa::avx512), Error);
}
