// The CUDA runtime as the rest of seqlab sees it: whether a device is usable, the device's caching
// allocator, copies between host and device, and the one stream every kernel runs on. Plain C++ (no
// CUDA header), so that every file can include it; without SEQLAB_CUDA (runtime_none.cpp) nothing is
// usable and require() says so in one line.
//
// One stream: every kernel, cuBLAS/cuFFT call and copy is queued on it in program order, so a block
// freed to the cache can be handed out again at once (the next user's work runs after the last
// user's). Reading a result on the host (item(), to(cpu)) waits for the stream.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/allocator.h"
#include "core/dtype.h"

namespace seqlab {
class Generator;
}

namespace seqlab::cuda {

/// True when seqlab was compiled with its CUDA part (SEQLAB_CUDA=ON).
bool built();
/// Devices visible to the CUDA runtime (0 when not built, no driver or no device).
int device_count();
/// Throws a one-line seqlab::Error when no CUDA device can be used: built without CUDA, or no device
/// visible (with the driver's reason). `who` names what asked, e.g. `[train] device = "cuda"`.
void require(const std::string& who);
/// One line per visible device (name, compute capability, memory), or why there is none.
std::string describe_devices();

/// Statistics of the device caching allocator (bytes).
struct DeviceAllocatorStats {
  size_t allocated = 0;     // blocks handed out now
  size_t reserved = 0;      // obtained from cudaMalloc (allocated + cached)
  size_t peak = 0;          // max of allocated since start or reset_device_peak()
  size_t device_mallocs = 0;  // cudaMalloc calls
  size_t reuses = 0;        // requests served from the cache
};
/// A device block of at least `bytes` (rounded to a size bin: 512 B, then four bins per power of
/// two, so at most 25% is wasted); reused from the cache when a block of its bin is free, else one
/// cudaMalloc. Out of memory (after freeing the cache and retrying) is a seqlab::Error naming the
/// request and the pool's state.
Block device_alloc(size_t bytes);
/// Returns a block to its bin's free list (never to the driver).
void device_free(Block b);
DeviceAllocatorStats device_allocator_stats();
void reset_device_peak();
/// cudaFree of every cached block.
void release_device_cache();

/// Copies on the stream. Host to device and device to host with pageable host memory wait for the
/// copy (the host buffer may be reused at once); device to device does not.
void copy_h2d(void* dst, const void* src, size_t bytes);
void copy_d2h(void* dst, const void* src, size_t bytes);
void copy_d2d(void* dst, const void* src, size_t bytes);
/// Host to device through a pinned staging buffer, asynchronous: returns once `src` has been copied
/// into the staging buffer; the device copy overlaps the host's next work (the loader's batches).
void copy_h2d_pinned(void* dst, const void* src, size_t bytes);
void memset_zero(void* dst, size_t bytes);
/// dst[i] = value, n elements of dtype.
void fill(void* dst, DType dtype, int64_t n, double value);
/// dst[i] = (D) src[i] between dtypes, n elements.
void convert(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n);
/// How cuBLAS runs float32 GEMMs, named as PyTorch's torch.set_float32_matmul_precision:
/// highest: strict IEEE float32 (the default; CUBLAS_PEDANTIC_MATH); high: TF32 tensor cores (inputs
/// rounded to 10 mantissa bits, float32 accumulation); medium: bfloat16 tensor cores (inputs rounded
/// to bfloat16's 7 mantissa bits inside cuBLAS, CUBLAS_COMPUTE_32F_FAST_16BF; float32 accumulation,
/// inputs and outputs stay float32 tensors: an autocast of the GEMMs). Affects every later cuBLAS
/// call of the process; the hand-written kernels (attention, scan, convolutions), cuFFT and float64
/// GEMMs stay as they are.
enum class MatmulPrecision { highest, high, medium };
void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();
/// "high" and "medium" -> their modes, anything else -> highest (configs and flags check the names).
inline MatmulPrecision matmul_precision_of(std::string_view name) {
  return name == "high" ? MatmulPrecision::high : name == "medium" ? MatmulPrecision::medium : MatmulPrecision::highest;
}
/// Waits until every queued operation has finished; a kernel's error surfaces here at the latest.
/// Throws while a Graph is being captured (nothing has run yet).
void synchronize();

/// A CUDA graph: the stream's work of one call of a function, recorded once and replayed with one
/// launch (apps/graph_step.h captures a training step). While capture() runs, on its thread:
///   - every device allocation comes from the graph's private pool (cached blocks of the shared pool
///     move into it, else cudaMalloc); a block freed into it is handed out again only inside this
///     capture, in the order the replay follows, so nothing outside the graph ever owns memory a
///     replay writes. The pool goes back to the shared one when the Graph is destroyed; a block still
///     held then (a parameter's gradient) goes back when it is freed.
///   - a host-to-device copy reads from a pinned buffer the graph keeps (a constant computed on the
///     host from shapes is copied again, unchanged, at every replay);
///   - reading the device on the host (copy_d2h, item(), to(cpu), synchronize) throws: the capture
///     fails and says why;
///   - a random seed (dropout's mask) is read from device memory (capture_seed) that launch() fills
///     before each replay by drawing from the same generators in the same order as the eager calls
///     would, so a replay's masks are the eager step's.
/// The replay runs the captured kernels with the captured arguments on the captured addresses: inputs
/// that change between replays go into tensors allocated before the capture, outside it.
class Graph {
 public:
  Graph();
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  /// Records the stream work of body() (nothing runs on the device) and instantiates it. Returns ""
  /// or why it could not be captured (body's exception or the runtime's error); the stream and the
  /// allocator are back to normal either way and the graph stays empty.
  std::string capture(const std::function<void()>& body);
  bool ready() const;
  /// Queues one replay on the stream (after drawing its seeds, if the captured work has any).
  void launch();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
/// True while this thread is inside Graph::capture.
bool capturing();
/// During a capture: the device address of a 64-bit seed that every replay draws from `gen` (in the
/// order of these calls) before it runs: what an eager call's gen.next_u64() would have drawn.
const uint64_t* capture_seed(Generator& gen);

}  // namespace seqlab::cuda
