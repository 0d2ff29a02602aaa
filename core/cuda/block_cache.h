// The free lists of the device caching allocator (core/cuda/runtime.cu), plain C++ so that the CPU
// tests check them (tests/test_block_cache.cpp): one shared set of lists by block size, and the
// private sets of CUDA graph captures (runtime.h, Graph). A capture's allocations take from its own
// lists first, then from the shared ones (such a block then belongs to the capture for good); a block
// freed with a capture's id goes back to that capture's lists, so work outside the graph never gets
// memory a replay writes. Closing a capture moves its free blocks to the shared lists; a block of a
// closed capture that is freed later goes there too. Not thread-safe: the allocator locks around it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace seqlab::cuda {

class BlockCache {
 public:
  using FreeLists = std::unordered_map<size_t, std::vector<void*>>;

  /// A free block of exactly `bytes` for pool `id` (0: the shared lists alone), or null.
  void* take(uint32_t id, size_t bytes) {
    if (id) {
      auto it = privates_.find(id);
      if (it != privates_.end())
        if (void* p = pop(it->second, bytes)) return p;
    }
    return pop(shared_, bytes);
  }
  /// Frees a block that was handed out for pool `id`.
  void give(uint32_t id, void* ptr, size_t bytes) {
    auto it = id ? privates_.find(id) : privates_.end();
    (it != privates_.end() ? it->second : shared_)[bytes].push_back(ptr);
  }
  /// A new private pool's id (never 0, never reused).
  uint32_t open() {
    const uint32_t id = next_++;
    privates_[id];
    return id;
  }
  /// Moves pool `id`'s free blocks to the shared lists and forgets the pool.
  void close(uint32_t id) {
    auto it = privates_.find(id);
    if (it == privates_.end()) return;
    for (auto& [size, list] : it->second) shared_[size].insert(shared_[size].end(), list.begin(), list.end());
    privates_.erase(it);
  }
  /// The shared lists (the allocator frees them to the driver on demand).
  FreeLists& shared() { return shared_; }
  /// Free blocks held by pool `id` (0: the shared lists).
  size_t free_count(uint32_t id) const {
    const FreeLists* lists = &shared_;
    if (id) {
      auto it = privates_.find(id);
      if (it == privates_.end()) return 0;
      lists = &it->second;
    }
    size_t n = 0;
    for (const auto& [size, list] : *lists) n += list.size();
    return n;
  }

 private:
  static void* pop(FreeLists& lists, size_t bytes) {
    auto it = lists.find(bytes);
    if (it == lists.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    return p;
  }
  FreeLists shared_;
  std::unordered_map<uint32_t, FreeLists> privates_;
  uint32_t next_ = 1;
};

}  // namespace seqlab::cuda
