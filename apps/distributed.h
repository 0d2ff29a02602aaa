// Data-parallel training and distributed comparisons across processes (MPI ranks), behind one small
// interface: rank(), size(), sums over ranks, a gather of strings, a barrier. Built with Open MPI
// when SEQLAB_MPI is on; otherwise (and whenever the process was not started by mpirun) every call
// is the one-process identity, so the same code runs single-process. Only distributed.cpp
// includes <mpi.h>. docs/DISTRIBUTED.md has the design and the measurements.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace seqlab::app::dist {

/// Starts MPI when the build has it and the process was launched by mpirun (OMPI_COMM_WORLD_SIZE
/// or PMIX_RANK in the environment); otherwise nothing. Finalises MPI on destruction.
class Session {
 public:
  Session(int& argc, char**& argv);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

/// A description of the MPI library ("Open MPI v4.1.4, ..."), or "none".
std::string mpi_version();
/// This process's rank (0 without MPI).
int rank();
/// Number of ranks (1 without MPI).
int size();
/// In place: data[i] = sum over ranks of data[i]; every rank gets the same result.
void allreduce_sum(float* data, int64_t n);
void allreduce_sum(double* data, int64_t n);
/// True when `value` is the same on every rank.
bool all_equal(int64_t value);
/// True when `flag` is true on any rank (every rank gets the same answer).
bool any(bool flag);
/// On rank 0: every rank's string, in rank order; on other ranks: empty.
std::vector<std::string> gather(const std::string& mine);
/// Waits for every rank.
void barrier();
/// Ends every rank with `code` (after an error on one rank, so the others do not hang in a
/// collective); without MPI, std::exit(code). Only apps/main.cpp calls it.
[[noreturn]] void abort(int code);
/// The environment of this process without the MPI launcher's variables (OMPI_*, PMIX_*, PMI_*),
/// for child processes that must run single-process ("name=value" strings).
std::vector<std::string> environment_without_launcher();

/// FNV-1a hash of the bytes of every tensor, in order.
uint64_t checksum(const std::vector<Tensor>& tensors);

/// The gradient all-reduce of data-parallel training: one fused float32 buffer per step.
class GradientReducer {
 public:
  /// `params`: every trainable float32 parameter, in the same order on every rank.
  explicit GradientReducer(std::vector<Tensor> params);
  /// Each rank's gradients are of its local mean loss over `weight` loss terms. Packs weight * grad
  /// of every parameter, weight * loss and weight into one buffer, sums it over ranks, and writes
  /// sum / total weight back into the gradients: the gradient of the mean over the global batch.
  /// Returns that global mean loss (the same on every rank).
  /// `stop`: this rank wants to stop (SIGINT); any_stop() then tells whether any rank did, so every
  /// rank stops after the same step.
  double reduce(double loss, double weight, bool stop = false);
  bool any_stop() const { return any_stop_; }
  /// Scalars in the buffer (parameters + 3).
  int64_t buffer_size() const { return static_cast<int64_t>(buf_.size()); }
  /// Seconds spent in reduce() (pack, MPI_Allreduce, unpack) and in MPI_Allreduce alone; calls.
  double seconds() const { return seconds_; }
  double mpi_seconds() const { return mpi_seconds_; }
  int64_t calls() const { return calls_; }

 private:
  std::vector<Tensor> params_;
  std::vector<float> buf_;
  double seconds_ = 0, mpi_seconds_ = 0;
  int64_t calls_ = 0;
  bool any_stop_ = false;
};

/// Throws seqlab::Error when the tensors differ between ranks (by checksum); `what` names them.
void check_identical(const std::vector<Tensor>& tensors, const std::string& what);

}  // namespace seqlab::app::dist
