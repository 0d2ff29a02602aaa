// The argument checks and the row plan of the norm kernels (core/kernels/norm.h), defined once in
// norm.cpp and used by the CPU loops and their CUDA twins (core/cuda/nn.cu) alike: the same errors, and
// the weight / bias gradients summed over the same row chunks in the same order. Glossary: D the last
// axis (normalised), R the rows (every other axis).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace seqlab::kernels {

/// The rows of a norm's input: R rows of D elements.
struct NormRows {
  int64_t D, R;
};
/// Checks x (rank >= 1) and w, b ((D) of x's dtype, or undefined); op names the norm.
NormRows check_norm(const char* op, const Tensor& x, const Tensor& w, const Tensor& b);
/// Checks the gradient dy of op's backward against its input x (same shape).
NormRows check_norm_backward(const char* op, const Tensor& dy, const Tensor& x);
/// Rows per weight / bias gradient partial (partials are added in chunk order): a function of D alone.
int64_t norm_rows_per_chunk(int64_t D);

}  // namespace seqlab::kernels
