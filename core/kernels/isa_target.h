// The last include of a kernel file that is compiled once per ISA path (core/isa.h; the list is
// SEQLAB_ISA_SOURCES in core/CMakeLists.txt). The build defines SEQLAB_ISA_LEVEL (0 generic SSE2,
// 1 AVX2+FMA, 2 AVX-512F/DQ/BW/VL); this header sets the instruction set for every function defined
// after it, names the namespace its entry points live in (SEQLAB_ISA_NS) and the float vector
// width (kIsaLanes). Headers come first on purpose: inline and template code from the standard
// library and TBB keeps the baseline instruction set, so the linker can never hand an AVX-512 copy
// of, say, a std::vector member to code that runs on an AVX2 machine.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/kernels/vmath.h"

// Vectors wider than the baseline ISA appear in the signatures of always_inline helpers only.
#pragma GCC diagnostic ignored "-Wpsabi"

#if !defined(SEQLAB_ISA_LEVEL)
#error "compile this file through SEQLAB_ISA_SOURCES (core/CMakeLists.txt): SEQLAB_ISA_LEVEL is unset"
#elif SEQLAB_ISA_LEVEL == 2
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi,bmi2,lzcnt,popcnt,f16c")
#define SEQLAB_ISA_NS isa_avx512
#elif SEQLAB_ISA_LEVEL == 1
#pragma GCC target("avx2,fma,bmi,bmi2,lzcnt,popcnt,f16c")
#define SEQLAB_ISA_NS isa_avx2
#else
#define SEQLAB_ISA_NS isa_generic
#endif

namespace seqlab::kernels::SEQLAB_ISA_NS {
/// Floats per vector on this path: 16 (AVX-512), 8 (AVX2) or 4 (SSE2).
inline constexpr int kIsaLanes = SEQLAB_ISA_LEVEL == 2 ? 16 : SEQLAB_ISA_LEVEL == 1 ? 8 : 4;

/// One register of this path holding T (kIsaLanes floats or kIsaLanes / 2 doubles), and the float one.
template <typename T>
using IsaVec = vmath::Vec<T, kIsaLanes * 4 / static_cast<int>(sizeof(T))>;
using VecF = IsaVec<float>;

/// vmath's splat, load, load_upto and store at this path's width, the lane type taken from the
/// argument: v in every lane; a full register from p; the first cnt values at p in the low lanes,
/// the others zero (the tail of a row); and back.
// splat_lanes is written out here, after the pragma, and does not call vmath::splat (defined
// before it, for the baseline ISA): GCC inlines the two differently, and the selective scan's
// NS = 32 / 64 loops are fully unrolled only with this one (measured on the object code).
template <typename T>
[[gnu::always_inline]] inline IsaVec<T> splat_lanes(T v) {
  return v - IsaVec<T>{};
}
template <typename T>
[[gnu::always_inline]] inline IsaVec<T> load_lanes(const T* p) {
  return vmath::load<IsaVec<T>>(p);
}
template <typename T>
[[gnu::always_inline]] inline IsaVec<T> load_lanes(const T* p, int cnt) {
  return vmath::load<IsaVec<T>>(p, cnt);
}
template <typename T>
[[gnu::always_inline]] inline IsaVec<T> load_lanes_upto(const T* p, int cnt) {
  return vmath::load_upto<IsaVec<T>>(p, cnt);
}
template <typename T>
[[gnu::always_inline]] inline void store_lanes(T* p, IsaVec<T> v) {
  vmath::store(p, v);
}
template <typename T>
[[gnu::always_inline]] inline void store_lanes(T* p, IsaVec<T> v, int cnt) {
  vmath::store(p, v, cnt);
}
/// f(i, cnt) for i = lo, lo + kIsaLanes, ...: full vectors (cnt = kIsaLanes), then one partial
/// vector for the tail (cnt < kIsaLanes). Elementwise loops stay explicit vectors on every path
/// (GCC leaves loops over branchy maths scalar on AVX2 when it cannot if-convert them).
template <typename F>
[[gnu::always_inline]] inline void for_each_vec(int64_t lo, int64_t hi, F&& f) {
  int64_t i = lo;
  for (; i + kIsaLanes <= hi; i += kIsaLanes) f(i, kIsaLanes);
  if (i < hi) f(i, static_cast<int>(hi - i));
}

/// A zeroed heap array of n vectors, 64-byte aligned. Not std::vector<V>: its members are
/// template code compiled for the baseline ISA, which allocates with 16-byte alignment, while this
/// path's code stores 32- or 64-byte vectors with aligned moves (a crash seen on the AVX2 path).
/// No global of this or any type that needs a constructor here: see scripts/check-isa-objects.sh.
template <typename V>
class VecArray {
 public:
  explicit VecArray(int64_t n) : bytes_((static_cast<size_t>(n) * sizeof(V) + 63) / 64 * 64 + 64) {
    p_ = static_cast<V*>(std::aligned_alloc(64, bytes_));
    if (!p_) throw std::bad_alloc();
    zero();
  }
  ~VecArray() { std::free(p_); }
  VecArray(const VecArray&) = delete;
  VecArray& operator=(const VecArray&) = delete;
  V* data() { return p_; }
  V& operator[](size_t i) { return p_[i]; }
  void zero() { std::memset(static_cast<void*>(p_), 0, bytes_); }

 private:
  size_t bytes_;
  V* p_ = nullptr;
};
}  // namespace seqlab::kernels::SEQLAB_ISA_NS
