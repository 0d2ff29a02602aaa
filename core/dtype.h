// Scalar types a tensor can hold: float32 for training, float64 for gradient checks, int32 for
// indices (class targets, tokens). Kernels are templates on the scalar type; dispatch() picks one.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"

namespace seqlab {

enum class DType : uint8_t { f32, f64, i32 };

/// Bytes per element.
inline size_t dtype_size(DType t) { return t == DType::f64 ? 8 : 4; }
/// "float32", "float64" or "int32".
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
  }
  return "?";
}

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }

/// Calls f.template operator()<T>() with T = float or double; int32 is not a floating type.
template <typename F>
decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    default: throw Error(str(op, ": expected a float32 or float64 tensor, got ", dtype_name(t)));
  }
}

}  // namespace seqlab
