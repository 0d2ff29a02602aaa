// Multi-tensor launches: one kernel over a list of tensors instead of one launch per tensor (the
// optimizer update, the gradient norm, the clip scale), as PyTorch's foreach / fused optimizers and
// apex's multi_tensor_apply do. A training step of a small model has a few dozen parameter tensors
// of a few thousand elements each: per-tensor launches cost more host time than the GPU work.
//
// The list is cut into groups of at most kMaxTensors tensors of one dtype (in order); each group is
// one launch whose table (sizes, each tensor's first block, pointers) travels by value in the kernel's
// parameters (a few hundred bytes, under CUDA's 4 KiB), so nothing is copied to the device first.
// Tensor t of a group owns the blocks [first[t], first[t + 1]), ceil(n / per_block) of them. Plain
// C++ with host-device helpers, so the CPU tests check the planning and the block-to-tensor mapping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#ifdef __CUDACC__
#define SEQLAB_HOST_DEVICE __host__ __device__
#else
#define SEQLAB_HOST_DEVICE
#endif

namespace seqlab::cuda {

inline constexpr int kMaxTensors = 32;

/// Block ranges of the tensors of one launch.
struct TensorBlocks {
  int count = 0;
  int64_t n[kMaxTensors] = {};              // elements of tensor t
  int64_t first[kMaxTensors + 1] = {};      // tensor t owns blocks [first[t], first[t + 1])
  int64_t blocks() const { return first[count]; }
};

/// The tensor that owns `block` (block < blocks()); tensors without blocks (n = 0) own none.
SEQLAB_HOST_DEVICE inline int block_owner(const TensorBlocks& tb, int64_t block) {
  int t = 0;
  while (t + 1 < tb.count && block >= tb.first[t + 1]) ++t;
  return t;
}

/// One launch: tensors [begin, end) of the list, their table, and where its blocks start among all
/// the list's blocks (the offset of its first partial, for reductions).
struct TensorGroup {
  size_t begin = 0, end = 0;
  int64_t block_offset = 0;
  TensorBlocks tb;
};

/// Groups of at most kMaxTensors consecutive tensors with the same `kind` (a dtype code: a launch is
/// one template instance), each tensor with ceil(n / per_block) blocks. Every tensor is in exactly
/// one group, in order; a group may hold only empty tensors (then it has no block and no launch).
inline std::vector<TensorGroup> plan_tensor_groups(const std::vector<int64_t>& sizes, const std::vector<int>& kind,
                                                   int64_t per_block) {
  std::vector<TensorGroup> out;
  int64_t offset = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (out.empty() || out.back().tb.count == kMaxTensors || kind[i] != kind[out.back().begin]) {
      if (!out.empty()) offset += out.back().tb.blocks();
      TensorGroup g;
      g.begin = g.end = i;
      g.block_offset = offset;
      out.push_back(g);
    }
    TensorGroup& g = out.back();
    TensorBlocks& tb = g.tb;
    tb.n[tb.count] = sizes[i];
    tb.first[tb.count + 1] = tb.first[tb.count] + (sizes[i] + per_block - 1) / per_block;
    ++tb.count;
    g.end = i + 1;
  }
  return out;
}

/// Pointers of a group's tensors, K per tensor (Adam: p, g, m, v), by value in the launch.
template <int K>
struct TensorPointers {
  void* p[K][kMaxTensors] = {};
};

/// Whether the optimizer, the gradient norm and the clip use multi-tensor launches (the default since
/// session 15; the environment variable SEQLAB_CUDA_MULTI_TENSOR = 0, read once, gives one launch per
/// tensor).
/// The two paths give bit-identical results (the same per-element maths and the same partial sums).
bool multi_tensor();
void set_multi_tensor(bool on);

}  // namespace seqlab::cuda
