// The device allocator's free lists (core/cuda/block_cache.h), on the CPU: a CUDA graph capture's
// private pool never hands its blocks to work outside the capture, takes shared cached blocks over,
// and gives its free blocks back when it closes; a block of a closed pool freed later goes shared.
#include <set>

#include "core/cuda/block_cache.h"
#include "testing.h"

using seqlab::cuda::BlockCache;

namespace {
// Distinct fake addresses (never dereferenced).
void* at(int i) { return reinterpret_cast<void*>(static_cast<uintptr_t>(0x1000 * (i + 1))); }
}  // namespace

TEST_CASE("block cache: the shared lists reuse a freed block of the same size only") {
  BlockCache c;
  CHECK(c.take(0, 512) == nullptr);
  c.give(0, at(0), 512);
  c.give(0, at(1), 1024);
  CHECK(c.take(0, 2048) == nullptr);
  CHECK(c.take(0, 512) == at(0));
  CHECK(c.take(0, 512) == nullptr);
  CHECK(c.free_count(0) == 1);
}

TEST_CASE("block cache: a capture's blocks stay with it until it closes") {
  BlockCache c;
  c.give(0, at(0), 512);  // cached before the capture
  const uint32_t g = c.open();
  CHECK(g != 0);
  // The capture takes the shared cached block over, then allocates a new one (the caller's malloc).
  CHECK(c.take(g, 512) == at(0));
  CHECK(c.take(g, 512) == nullptr);
  // Freed inside the capture: back to the capture's lists, reused by the capture, never by others.
  c.give(g, at(0), 512);
  c.give(g, at(1), 512);
  CHECK(c.free_count(g) == 2);
  CHECK(c.take(0, 512) == nullptr);
  const void* again = c.take(g, 512);
  CHECK((again == at(0) || again == at(1)));
  c.give(g, const_cast<void*>(again), 512);
  // A second capture does not see the first one's blocks either.
  const uint32_t h = c.open();
  CHECK(h != g);
  CHECK(c.take(h, 512) == nullptr);
  // Closing: the free blocks go shared; a block still held (a gradient) follows when it is freed.
  c.close(g);
  CHECK(c.free_count(g) == 0);
  CHECK(c.free_count(0) == 2);
  c.give(g, at(2), 512);
  CHECK(c.free_count(0) == 3);
  std::set<void*> got;
  for (int i = 0; i < 3; ++i) got.insert(c.take(0, 512));
  CHECK(got == std::set<void*>{at(0), at(1), at(2)});
  c.close(h);
  c.close(h);  // twice: nothing
  CHECK(c.open() > h);  // ids are not reused
}
