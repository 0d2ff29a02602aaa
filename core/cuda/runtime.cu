// The CUDA runtime of seqlab (core/cuda/runtime.h): device check, the size-binned caching allocator,
// the one stream, the cuBLAS handle, copies (pageable and through pinned staging), fill and convert.
#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/cuda/block_cache.h"
#include "core/cuda/common.cuh"
#include "core/random.h"

namespace seqlab::cuda {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear a sticky-free error so the next call starts clean
    throw Error(str("CUDA error in ", what, ": ", cudaGetErrorString(e)));
  }
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(str("cuBLAS error in ", what, ": ", cublasGetStatusString(s)));
}

bool built() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void require(const std::string& who) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error(str(who, ": no CUDA device is usable (", cudaGetErrorString(e), ")"));
  }
  if (n == 0) throw Error(who + ": no CUDA device is visible (CUDA_VISIBLE_DEVICES, driver)");
}

std::string describe_devices() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return str("none (", cudaGetErrorString(e), ")");
  }
  if (n == 0) return "none visible";
  std::string out;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    check(cudaGetDeviceProperties(&p, i), "cudaGetDeviceProperties");
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    out += str(i ? "; " : "", i, ": ", p.name, ", sm_", p.major, p.minor, ", ", p.multiProcessorCount, " SMs, ",
               p.totalGlobalMem >> 20, " MiB, runtime ", rt / 1000, ".", (rt % 1000) / 10, ", driver ", drv / 1000, ".",
               (drv % 1000) / 10);
  }
  return out;
}

cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t st{};
    check(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
    return st;
  }();
  return s;
}

namespace {
std::atomic<MatmulPrecision> g_precision{MatmulPrecision::highest};
// medium: the float32 GEMMs go through cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_16BF (matmul.cu),
// which the default math mode lets run as asked.
cublasMath_t math_mode() {
  switch (g_precision.load()) {
    case MatmulPrecision::high: return CUBLAS_TF32_TENSOR_OP_MATH;
    case MatmulPrecision::medium: return CUBLAS_DEFAULT_MATH;
    default: return CUBLAS_PEDANTIC_MATH;
  }
}
}  // namespace

cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t hh{};
    check_cublas(cublasCreate(&hh), "cublasCreate");
    check_cublas(cublasSetStream(hh, stream()), "cublasSetStream");
    // An explicit workspace (NVIDIA's recommended size: 32 MiB from Hopper on, else 4 MiB), so that a
    // CUDA graph capture finds the same one as eager calls and picks the same algorithms.
    int dev = 0, major = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
    const size_t ws_bytes = static_cast<size_t>(major >= 9 ? 32 : 4) << 20;
    void* ws = nullptr;
    check(cudaMalloc(&ws, ws_bytes), "cudaMalloc (cuBLAS workspace)");
    check_cublas(cublasSetWorkspace(hh, ws, ws_bytes), "cublasSetWorkspace");
    // Strict IEEE float32 unless set_matmul_precision says otherwise: the CPU comparison and the
    // anchors are fp32.
    check_cublas(cublasSetMathMode(hh, math_mode()), "cublasSetMathMode");
    return hh;
  }();
  return h;
}

void set_matmul_precision(MatmulPrecision p) {
  if (g_precision.exchange(p) == p) return;
  check_cublas(cublasSetMathMode(cublas(), math_mode()), "cublasSetMathMode");
}

MatmulPrecision matmul_precision() { return g_precision.load(); }

// ---------------------------------------------------------------------------------------------
// Caching allocator. Bins: 512 B granularity up to 4 KiB, then four bins per power of two (a block
// is at most 25% larger than asked). A freed block goes to its bin's list; a request takes a block
// of exactly its bin or calls cudaMalloc. The single stream makes immediate reuse safe.
namespace {
struct Pool {
  std::mutex mu;
  BlockCache cache;  // the shared free lists and the graph captures' private ones (block_cache.h)
  DeviceAllocatorStats stats;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: tensors may outlive static destructors
  return *p;
}

// The private pool this thread's capture allocates from (0: none, the shared pool).
thread_local uint32_t t_capture_pool = 0;

size_t bin_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + 511) / 512 * 512;
  size_t p = size_t{1} << (63 - __builtin_clzll(bytes));  // largest power of two <= bytes
  size_t step = p / 4;
  return (bytes + step - 1) / step * step;
}

void release_locked(Pool& p) {
  for (auto& [size, list] : p.cache.shared()) {
    for (void* ptr : list) {
      cudaFree(ptr);
      p.stats.reserved -= size;
    }
  }
  p.cache.shared().clear();
}

}  // namespace

Block device_alloc(size_t bytes) {
  const size_t want = bin_size(bytes);
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  const uint32_t id = t_capture_pool;
  void* ptr = p.cache.take(id, want);  // a capture takes a shared cached block over for good
  if (ptr) {
    p.stats.allocated += want;
    p.stats.peak = std::max(p.stats.peak, p.stats.allocated);
    ++p.stats.reuses;
    return Block{ptr, want, id};
  }
  cudaError_t e = cudaMalloc(&ptr, want);
  if (e == cudaErrorMemoryAllocation && !id) {  // a capture cannot wait for the stream
    cudaGetLastError();
    check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
    release_locked(p);
    e = cudaMalloc(&ptr, want);
  }
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error(str("CUDA out of memory: asked for ", bytes, " bytes (", (bytes + (1 << 20) - 1) >> 20,
                    " MiB); seqlab's device pool: ", p.stats.allocated >> 20, " MiB allocated, ", p.stats.reserved >> 20,
                    " MiB reserved, peak ", p.stats.peak >> 20, " MiB; the device has ", free_b >> 20, " MiB free of ",
                    total_b >> 20, " MiB: lower the batch size, the sequence length or the model width"));
  }
  check(e, "cudaMalloc");
  p.stats.allocated += want;
  p.stats.reserved += want;
  p.stats.peak = std::max(p.stats.peak, p.stats.allocated);
  ++p.stats.device_mallocs;
  return Block{ptr, want, id};
}

void device_free(Block b) {
  if (!b.ptr) return;
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  p.cache.give(b.pool, b.ptr, b.bytes);
  p.stats.allocated -= b.bytes;
}

namespace {
uint32_t open_private_pool() {
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  return p.cache.open();
}
void close_private_pool(uint32_t id) {
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  p.cache.close(id);
}
}  // namespace

DeviceAllocatorStats device_allocator_stats() {
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  return p.stats;
}

void reset_device_peak() {
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  p.stats.peak = p.stats.allocated;
}

void release_device_cache() {
  synchronize();
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  release_locked(p);
}

// ---------------------------------------------------------------------------------------------
// Copies.
namespace {
// What the capture running on this thread keeps beside its graph: the pinned copies of host data.
struct CaptureState {
  std::vector<void*> pinned;
  // The seeds of the captured work: one device block of kMaxSeeds, the generator of each slot, and the
  // host copy launch() draws into.
  static constexpr size_t kMaxSeeds = 512;
  Block seeds;
  std::vector<Generator*> seed_gens;
  std::vector<uint64_t> seed_host;
};
thread_local CaptureState* t_capture = nullptr;

void refuse_in_capture(const char* what) {
  if (t_capture)
    throw Error(str(what, " inside a CUDA graph capture: the host would read the device before anything has run"));
}

// During a capture: the bytes into a pinned buffer the graph keeps, copied from there at every replay.
void copy_h2d_captured(void* dst, const void* src, size_t bytes) {
  void* host = nullptr;
  check(cudaMallocHost(&host, bytes), "cudaMallocHost (a host-to-device copy in a CUDA graph capture)");
  t_capture->pinned.push_back(host);
  std::memcpy(host, src, bytes);
  check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (captured)");
}
}  // namespace

bool capturing() { return t_capture != nullptr; }

const uint64_t* capture_seed(Generator& gen) {
  SEQLAB_CHECK(t_capture, "capture_seed outside a CUDA graph capture");
  CaptureState& c = *t_capture;
  SEQLAB_CHECK(c.seed_gens.size() < CaptureState::kMaxSeeds, "more than ", CaptureState::kMaxSeeds,
               " random seeds (dropout masks) in one CUDA graph capture");
  if (!c.seeds.ptr) c.seeds = device_alloc(CaptureState::kMaxSeeds * sizeof(uint64_t));  // the capture's pool
  c.seed_gens.push_back(&gen);
  return static_cast<const uint64_t*>(c.seeds.ptr) + (c.seed_gens.size() - 1);
}

void copy_h2d(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  if (t_capture) return copy_h2d_captured(dst, src, bytes);
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()), "cudaMemcpy host to device");
  check(cudaStreamSynchronize(stream()), "cudaMemcpy host to device");
}

void copy_d2h(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  refuse_in_capture("a device-to-host copy (item(), to(cpu))");
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()), "cudaMemcpy device to host");
  check(cudaStreamSynchronize(stream()), "cudaMemcpy device to host (or an earlier kernel)");
}

void copy_d2d(void* dst, const void* src, size_t bytes) {
  if (!bytes || dst == src) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()), "cudaMemcpy device to device");
}

namespace {
// A ring of pinned staging buffers, each with the event of its last copy: a slot is refilled only
// after its previous copy has left it.
struct PinnedRing {
  struct Slot {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t done{};
  };
  std::mutex mu;
  Slot slots[4];
  int next = 0;
};
PinnedRing& ring() {
  static PinnedRing* r = new PinnedRing();
  return *r;
}
}  // namespace

void copy_h2d_pinned(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  if (t_capture) return copy_h2d_captured(dst, src, bytes);
  PinnedRing& r = ring();
  std::lock_guard lock(r.mu);
  PinnedRing::Slot& s = r.slots[r.next];
  r.next = (r.next + 1) % 4;
  if (!s.done) check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate");
  else check(cudaEventSynchronize(s.done), "cudaEventSynchronize");
  if (s.bytes < bytes) {
    if (s.host) check(cudaFreeHost(s.host), "cudaFreeHost");
    s.host = nullptr;
    check(cudaMallocHost(&s.host, bytes), "cudaMallocHost");
    s.bytes = bytes;
  }
  std::memcpy(s.host, src, bytes);
  check(cudaMemcpyAsync(dst, s.host, bytes, cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (pinned)");
  check(cudaEventRecord(s.done, stream()), "cudaEventRecord");
}

void memset_zero(void* dst, size_t bytes) {
  if (!bytes) return;
  check(cudaMemsetAsync(dst, 0, bytes, stream()), "cudaMemset");
}

namespace {
template <typename T>
__global__ void fill_kernel(T* p, int64_t n, T v) {
  SEQLAB_CUDA_LOOP(i, n) p[i] = v;
}
template <typename D, typename S>
__global__ void convert_kernel(D* d, const S* s, int64_t n) {
  SEQLAB_CUDA_LOOP(i, n) d[i] = static_cast<D>(s[i]);
}
template <typename F>
void dispatch_all(DType t, F&& f) {
  switch (t) {
    case DType::f32: f.template operator()<float>(); return;
    case DType::f64: f.template operator()<double>(); return;
    case DType::i32: f.template operator()<int32_t>(); return;
  }
}
}  // namespace

void fill(void* dst, DType dtype, int64_t n, double value) {
  if (n <= 0) return;
  dispatch_all(dtype, [&]<typename T>() {
    fill_kernel<T><<<blocks_for(n), 256, 0, stream()>>>(static_cast<T*>(dst), n, static_cast<T>(value));
  });
  check_launch("fill");
}

void convert(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  if (n <= 0) return;
  dispatch_all(dst_dtype, [&]<typename D>() {
    dispatch_all(src_dtype, [&]<typename S>() {
      convert_kernel<D, S><<<blocks_for(n), 256, 0, stream()>>>(static_cast<D*>(dst), static_cast<const S*>(src), n);
    });
  });
  check_launch("convert");
}

void synchronize() {
  refuse_in_capture("synchronize()");
  check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize (a kernel failed)");
}

// ---------------------------------------------------------------------------------------------
// CUDA graphs.
struct Graph::Impl {
  cudaGraph_t graph{};
  cudaGraphExec_t exec{};
  uint32_t pool = 0;
  CaptureState state;

  void clear() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    exec = nullptr;
    graph = nullptr;
    if (pool) close_private_pool(pool);
    pool = 0;
    for (void* h : state.pinned) cudaFreeHost(h);
    state.pinned.clear();
    device_free(state.seeds);  // into the pool closed above: back to the shared lists
    state.seeds = Block{};
    state.seed_gens.clear();
    state.seed_host.clear();
  }
};

Graph::Graph() : impl_(std::make_unique<Impl>()) {}

Graph::~Graph() {
  if (impl_->exec) cudaStreamSynchronize(stream());  // a replay may still run
  impl_->clear();
}

bool Graph::ready() const { return impl_->exec != nullptr; }

std::string Graph::capture(const std::function<void()>& body) {
  SEQLAB_CHECK(!t_capture, "Graph::capture: a capture is already running on this thread");
  synchronize();
  impl_->clear();
  Impl& g = *impl_;
  g.pool = open_private_pool();
  std::string why;
  cudaError_t e = cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed);
  if (e != cudaSuccess) {
    cudaGetLastError();
    g.clear();
    return str("cudaStreamBeginCapture: ", cudaGetErrorString(e));
  }
  t_capture_pool = g.pool;
  t_capture = &g.state;
  try {
    body();
  } catch (const std::exception& ex) {
    why = ex.what();
  }
  t_capture = nullptr;
  t_capture_pool = 0;
  e = cudaStreamEndCapture(stream(), &g.graph);
  if (e != cudaSuccess && why.empty()) why = str("cudaStreamEndCapture: ", cudaGetErrorString(e));
  if (why.empty()) {
    e = cudaGraphInstantiate(&g.exec, g.graph, 0);
    if (e != cudaSuccess) why = str("cudaGraphInstantiate: ", cudaGetErrorString(e));
  }
  if (!why.empty()) {
    cudaGetLastError();
    g.clear();
  }
  return why;
}

void Graph::launch() {
  SEQLAB_CHECK(impl_->exec, "Graph::launch: nothing captured");
  CaptureState& c = impl_->state;
  if (!c.seed_gens.empty()) {  // this replay's seeds, drawn as the eager calls would draw them
    c.seed_host.resize(c.seed_gens.size());
    for (size_t i = 0; i < c.seed_gens.size(); ++i) c.seed_host[i] = c.seed_gens[i]->next_u64();
    copy_h2d_pinned(c.seeds.ptr, c.seed_host.data(), c.seed_host.size() * sizeof(uint64_t));
  }
  check(cudaGraphLaunch(impl_->exec, stream()), "cudaGraphLaunch");
}

}  // namespace seqlab::cuda
