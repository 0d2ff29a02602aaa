#include "core/allocator.h"

#include "core/cuda/runtime.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

namespace seqlab {
namespace {

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // rounded size -> block
  AllocatorStats stats;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: tensors may outlive static destructors
  return *c;
}

// Small sizes round to 64 bytes, larger ones to 4 KiB pages, so equal requests share a size class.
size_t round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  size_t q = bytes <= 4096 ? 64 : 4096;
  return (bytes + q - 1) / q * q;
}

}  // namespace

Block cache_alloc(size_t bytes, Device device) {
  if (device == Device::cuda) return cuda::device_alloc(bytes);
  size_t want = round_size(bytes);
  Cache& c = cache();
  {
    std::lock_guard lock(c.mu);
    // Accept a cached block up to 25% (or 4 KiB) larger than asked: reuse without hoarding waste.
    auto it = c.free_blocks.lower_bound(want);
    if (it != c.free_blocks.end() && it->first <= want + std::max<size_t>(want / 4, 4096)) {
      Block b{it->second, it->first};
      c.free_blocks.erase(it);
      c.stats.cached_bytes -= b.bytes;
      c.stats.in_use_bytes += b.bytes;
      c.stats.peak_bytes = std::max(c.stats.peak_bytes, c.stats.in_use_bytes);
      ++c.stats.reuses;
      return b;
    }
  }
  void* p = std::aligned_alloc(64, want);
  if (!p) {
    release_cached_memory();
    p = std::aligned_alloc(64, want);
    if (!p) throw std::bad_alloc();
  }
  std::lock_guard lock(c.mu);
  c.stats.in_use_bytes += want;
  c.stats.peak_bytes = std::max(c.stats.peak_bytes, c.stats.in_use_bytes);
  ++c.stats.os_allocs;
  return Block{p, want};
}

void cache_free(Block b, Device device) {
  if (!b.ptr) return;
  if (device == Device::cuda) return cuda::device_free(b);
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  c.free_blocks.emplace(b.bytes, b.ptr);
  c.stats.in_use_bytes -= b.bytes;
  c.stats.cached_bytes += b.bytes;
}

void release_cached_memory() {
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  for (auto& [size, p] : c.free_blocks) std::free(p);
  c.free_blocks.clear();
  c.stats.cached_bytes = 0;
}

AllocatorStats allocator_stats() {
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  return c.stats;
}

void reset_peak_memory() {
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  c.stats.peak_bytes = c.stats.in_use_bytes;
}

}  // namespace seqlab
