// The CUDA runtime of a build without SEQLAB_CUDA: nothing is usable. No Device::cuda tensor can
// exist (require() throws before one is made), so the copy functions are never reached.
#include "core/cuda/multi_tensor.h"
#include "core/cuda/runtime.h"

#include "core/error.h"

namespace seqlab::cuda {

namespace {
[[noreturn]] void unavailable() {
  throw Error("seqlab was built without CUDA (SEQLAB_CUDA=OFF: no nvcc was found when it was configured)");
}
}  // namespace

bool built() { return false; }
int device_count() { return 0; }
void require(const std::string& who) {
  throw Error(who + ": seqlab was built without CUDA (configure with -DSEQLAB_CUDA=ON where nvcc is found; docs/GPU.md)");
}
std::string describe_devices() { return "none (built without CUDA)"; }

Block device_alloc(size_t) { unavailable(); }
void device_free(Block) {}
DeviceAllocatorStats device_allocator_stats() { return {}; }
void reset_device_peak() {}
void release_device_cache() {}
void copy_h2d(void*, const void*, size_t) { unavailable(); }
void copy_d2h(void*, const void*, size_t) { unavailable(); }
void copy_d2d(void*, const void*, size_t) { unavailable(); }
void copy_h2d_pinned(void*, const void*, size_t) { unavailable(); }
void memset_zero(void*, size_t) { unavailable(); }
void fill(void*, DType, int64_t, double) { unavailable(); }
void convert(void*, DType, const void*, DType, int64_t) { unavailable(); }
void synchronize() {}
void set_matmul_precision(MatmulPrecision p) {
  SEQLAB_CHECK(p == MatmulPrecision::highest, "TF32 and bfloat16 GEMMs need seqlab's CUDA part (built without it)");
}
MatmulPrecision matmul_precision() { return MatmulPrecision::highest; }
bool multi_tensor() { return false; }

struct Graph::Impl {};
Graph::Graph() : impl_(std::make_unique<Impl>()) {}
Graph::~Graph() = default;
std::string Graph::capture(const std::function<void()>&) { return "seqlab was built without CUDA"; }
bool Graph::ready() const { return false; }
void Graph::launch() { unavailable(); }
bool capturing() { return false; }
const uint64_t* capture_seed(Generator&) { unavailable(); }
void set_multi_tensor(bool) {}

}  // namespace seqlab::cuda
