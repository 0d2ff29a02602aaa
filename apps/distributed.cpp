// MPI behind apps/distributed.h (the only file that includes <mpi.h>). Without SEQLAB_HAVE_MPI, or
// when the process was not launched by mpirun, every function is the one-process identity.
// MPI is initialised with MPI_THREAD_FUNNELED: only the main thread calls MPI; the TBB workers
// (kernels, loader prefetch) never do.
#include "apps/distributed.h"

#ifdef SEQLAB_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only: no deprecated C++ bindings to link
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

extern char** environ;

namespace seqlab::app::dist {
namespace {

bool g_active = false;  // MPI_Init ran in this process (by a Session)
int g_rank = 0, g_size = 1;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

#ifdef SEQLAB_HAVE_MPI
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(str("MPI: ", what, " failed: ", std::string(msg, static_cast<size_t>(len))));
}

// MPI counts are int: split long buffers.
template <typename T>
void allreduce_chunks(T* data, int64_t n, MPI_Datatype type) {
  constexpr int64_t kMax = int64_t{1} << 30;
  for (int64_t o = 0; o < n; o += kMax) {
    const int count = static_cast<int>(std::min(kMax, n - o));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + o, count, type, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  }
}
#endif

}  // namespace

Session::Session([[maybe_unused]] int& argc, [[maybe_unused]] char**& argv) {
#ifdef SEQLAB_HAVE_MPI
  if (g_active || !launched_by_mpirun()) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  // Errors come back as return codes (check_mpi throws seqlab::Error) instead of aborting silently.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_active = true;
#endif
}

Session::~Session() {
#ifdef SEQLAB_HAVE_MPI
  if (!g_active) return;
  MPI_Finalize();
  g_active = false;
  g_rank = 0;
  g_size = 1;
#endif
}


std::string mpi_version() {
#ifdef SEQLAB_HAVE_MPI
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  std::string s(v, static_cast<size_t>(len));
  if (auto nl = s.find_first_of("\r\n"); nl != std::string::npos) s.resize(nl);
  return s;
#else
  return "none";
#endif
}

int rank() { return g_rank; }
int size() { return g_size; }

void allreduce_sum([[maybe_unused]] float* data, [[maybe_unused]] int64_t n) {
#ifdef SEQLAB_HAVE_MPI
  if (g_size > 1) allreduce_chunks(data, n, MPI_FLOAT);
#endif
}

void allreduce_sum([[maybe_unused]] double* data, [[maybe_unused]] int64_t n) {
#ifdef SEQLAB_HAVE_MPI
  if (g_size > 1) allreduce_chunks(data, n, MPI_DOUBLE);
#endif
}

bool all_equal([[maybe_unused]] int64_t value) {
  if (g_size == 1) return true;
#ifdef SEQLAB_HAVE_MPI
  std::vector<int64_t> all(static_cast<size_t>(g_size));
  check_mpi(MPI_Allgather(&value, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, MPI_COMM_WORLD), "MPI_Allgather");
  for (int64_t v : all)
    if (v != value) return false;
#endif
  return true;
}

bool any(bool flag) {
  double v = flag ? 1.0 : 0.0;
  allreduce_sum(&v, 1);
  return v > 0;
}

std::vector<std::string> gather(const std::string& mine) {
  if (g_size == 1) return {mine};
  std::vector<std::string> out;
#ifdef SEQLAB_HAVE_MPI
  const int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<size_t>(g_size)), offsets(static_cast<size_t>(g_size));
  check_mpi(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Gather");
  std::string all;
  if (g_rank == 0) {
    int total = 0;
    for (int r = 0; r < g_size; ++r) {
      offsets[static_cast<size_t>(r)] = total;
      total += lens[static_cast<size_t>(r)];
    }
    all.resize(static_cast<size_t>(total));
  }
  check_mpi(MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, 0,
                        MPI_COMM_WORLD),
            "MPI_Gatherv");
  if (g_rank == 0)
    for (int r = 0; r < g_size; ++r)
      out.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                               static_cast<size_t>(lens[static_cast<size_t>(r)])));
#endif
  return out;
}

void barrier() {
#ifdef SEQLAB_HAVE_MPI
  if (g_size > 1) check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void abort(int code) {
#ifdef SEQLAB_HAVE_MPI
  if (g_active && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

std::vector<std::string> environment_without_launcher() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string v = *e;
    bool launcher = false;
    for (const char* p : {"OMPI_", "PMIX_", "PMI_", "OPAL_", "ORTE_"}) launcher = launcher || v.rfind(p, 0) == 0;
    if (!launcher) env.push_back(v);
  }
  return env;
}

uint64_t checksum(const std::vector<Tensor>& tensors) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const Tensor& t : tensors) {
    const auto* p = static_cast<const unsigned char*>(t.raw_data());
    for (size_t i = 0; i < t.nbytes(); ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  }
  return h;
}

void check_identical(const std::vector<Tensor>& tensors, const std::string& what) {
  if (g_size == 1) return;
  SEQLAB_CHECK(all_equal(static_cast<int64_t>(checksum(tensors))), what,
               ": differ between MPI ranks (the gradient all-reduce should keep them bit-identical)");
}

GradientReducer::GradientReducer(std::vector<Tensor> params) : params_(std::move(params)) {
  int64_t n = 3;  // + weight * loss, weight, stop flag
  for (const Tensor& p : params_) {
    SEQLAB_CHECK(p.dtype() == DType::f32, "data-parallel training: parameters must be float32");
    n += p.numel();
  }
  buf_.assign(static_cast<size_t>(n), 0.0f);
}

double GradientReducer::reduce(double loss, double weight, bool stop) {
  const double t0 = now_seconds();
  const auto w = static_cast<float>(weight);
  // Pack weight * grad: the sum over ranks is then the sum of per-term gradients, whatever the
  // split (uneven slices, token tasks where ranks score different numbers of tokens).
  size_t o = 0;
  for (const Tensor& p : params_) {
    const auto n = static_cast<size_t>(p.numel());
    Tensor g = p.grad();
    if (g.defined()) {
      const float* gp = g.data<float>();
      for (size_t i = 0; i < n; ++i) buf_[o + i] = w * gp[i];
    } else {
      std::memset(buf_.data() + o, 0, n * sizeof(float));
    }
    o += n;
  }
  buf_[o] = static_cast<float>(weight * loss);
  buf_[o + 1] = w;
  buf_[o + 2] = stop ? 1.0f : 0.0f;
  const double t1 = now_seconds();
  allreduce_sum(buf_.data(), static_cast<int64_t>(buf_.size()));
  mpi_seconds_ += now_seconds() - t1;
  const float total = buf_[o + 1];
  any_stop_ = buf_[o + 2] > 0;
  SEQLAB_CHECK(total > 0, "data-parallel training: no loss terms in the global batch");
  o = 0;
  for (const Tensor& p : params_) {
    const auto n = static_cast<size_t>(p.numel());
    Tensor g = p.grad();
    if (g.defined()) {  // a parameter without a gradient here has none on any rank (same graph)
      float* gp = g.data<float>();
      for (size_t i = 0; i < n; ++i) gp[i] = buf_[o + i] / total;
    }
    o += n;
  }
  const double global_loss = static_cast<double>(buf_[o]) / static_cast<double>(total);
  seconds_ += now_seconds() - t0;
  ++calls_;
  return global_loss;
}

}  // namespace seqlab::app::dist
