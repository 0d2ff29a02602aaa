// Embedding lookup: rows of a (V, D) table gathered by int32 ids; backward scatter-adds.
#pragma once
#include "core/tensor.h"

namespace seqlab {

/// weight (V, D), ids int32 of any shape S -> (S..., D). An id outside [0, V) is an error naming it.
Tensor embedding(const Tensor& weight, const Tensor& ids);

}  // namespace seqlab
