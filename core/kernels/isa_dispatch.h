// Entry points of the kernels compiled once per ISA path (core/kernels/isa_target.h): each path's
// copy lives in namespace isa_generic, isa_avx2 or isa_avx512 under seqlab::kernels, and the public
// function forwards to the copy of the path in use (core/isa.h). Use inside seqlab::kernels:
//   SEQLAB_ISA_DECLARE(Tensor my_kernel(const Tensor& x));   // once, at namespace scope
//   Tensor my_kernel(const Tensor& x) { SEQLAB_ISA_CALL(my_kernel, x); }
#pragma once
#include "core/isa.h"

#define SEQLAB_ISA_DECLARE(...)  \
  namespace isa_generic {        \
  __VA_ARGS__;                   \
  }                              \
  namespace isa_avx2 {           \
  __VA_ARGS__;                   \
  }                              \
  namespace isa_avx512 {         \
  __VA_ARGS__;                   \
  }

#define SEQLAB_ISA_CALL(fn, ...)                                    \
  switch (::seqlab::active_isa()) {                                 \
    case ::seqlab::Isa::avx512: return isa_avx512::fn(__VA_ARGS__); \
    case ::seqlab::Isa::avx2: return isa_avx2::fn(__VA_ARGS__);     \
    case ::seqlab::Isa::generic: break;                             \
  }                                                                 \
  return isa_generic::fn(__VA_ARGS__)
