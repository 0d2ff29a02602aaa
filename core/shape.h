// Shapes: a row-major list of sizes, with the broadcasting rule of NumPy/PyTorch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace seqlab {

using Shape = std::vector<int64_t>;

/// Product of the sizes (1 for a scalar shape {}).
int64_t numel(const Shape& s);
/// "(2, 3, 4)".
std::string to_string(const Shape& s);
/// Row-major strides in elements.
std::vector<int64_t> strides_of(const Shape& s);
/// The broadcast of a and b; throws naming op and both shapes when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
/// Normalises a possibly negative axis for a tensor of rank `rank`; throws naming op.
int64_t norm_axis(int64_t axis, int64_t rank, const char* op);

}  // namespace seqlab
