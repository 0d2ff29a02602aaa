// Tensor: a cheap handle (one shared_ptr) to contiguous row-major storage with a shape and a dtype.
// Copying a Tensor shares the data, as in PyTorch. The autograd fields live here as plain data so
// that core does not depend on autograd; autograd/ fills them in (see autograd/node.h).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/allocator.h"
#include "core/dtype.h"
#include "core/shape.h"

namespace seqlab {

struct Node;  // autograd graph node, defined in autograd/node.h

/// Owns one allocator block; returns it to the cache on destruction.
struct Storage {
  Block block;
  Device device = Device::cpu;
  explicit Storage(size_t bytes, Device dev = Device::cpu) : block(cache_alloc(bytes, dev)), device(dev) {}
  ~Storage() { cache_free(block, device); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  /// Uninitialised tensor (memory comes from the caching allocator of `device`).
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu);
  /// Copies `values` (converted to dtype); values.size() must equal numel(shape).
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32,
                            Device device = Device::cpu);
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = Device::cpu) {
    return full({}, value, dtype, device);
  }
  /// Zero-initialised tensor of the same shape, dtype and device as `like`.
  static Tensor zeros_like(const Tensor& like);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  /// Size along `axis` (negative counts from the end).
  int64_t size(int64_t axis) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  /// Typed host pointer to the first element; throws if T does not match the dtype, or when the
  /// tensor lives on the device (CPU code reading a cuda tensor: an op without a CUDA kernel).
  template <typename T> T* data() const;
  /// Host pointer (checked as data()).
  void* raw_data() const;
  /// The storage's pointer on whichever device it lives (CUDA kernels; core/cuda/common.cuh).
  void* device_ptr() const;

  /// A new tensor with the same data, shape `shape` (numel must match), sharing storage, no graph.
  Tensor view(const Shape& shape) const;
  /// Deep copy, no graph.
  Tensor clone() const;
  /// Copy converted to `dtype` (a clone when it already is), no graph.
  Tensor to(DType dtype) const;
  /// This tensor on `device`: itself when it is there already, else a copy (no graph). Host to
  /// device goes through pinned staging and does not wait for the copy.
  Tensor to(Device device) const;
  /// Copies src's values into this tensor's storage (same numel; converts dtype; across devices).
  void copy_from(const Tensor& src);
  void fill(double value);
  /// The single value of a one-element tensor.
  double item() const;
  /// Every value, converted to double, in row-major order.
  std::vector<double> to_vector() const;
  /// True when both handles share one storage block.
  bool shares_storage(const Tensor& other) const;

  // --- autograd ---
  bool requires_grad() const;
  /// Marks a leaf as needing a gradient (parameters, gradcheck inputs). Returns *this.
  Tensor& set_requires_grad(bool on = true);
  /// Accumulated gradient of a leaf after backward(); undefined before.
  Tensor grad() const;
  void set_grad(const Tensor& g);
  /// Drops the accumulated gradient.
  void zero_grad();
  /// Same storage, cut from the graph.
  Tensor detach() const;
  /// The node that produced this tensor (null for leaves).
  const std::shared_ptr<Node>& grad_fn() const;
  int output_nr() const;
  bool is_leaf() const { return !grad_fn(); }

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::f32;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // set by autograd::record for op outputs
  int output_nr = 0;              // which output of grad_fn this is
  Tensor grad;                    // accumulated gradient (leaves)
};

template <typename T>
T* Tensor::data() const {
  SEQLAB_CHECK(defined(), "data(): undefined tensor");
  SEQLAB_CHECK(dtype_of<T>() == impl_->dtype, "data(): tensor holds ", dtype_name(impl_->dtype),
               ", asked for ", dtype_name(dtype_of<T>()));
  SEQLAB_CHECK(impl_->storage->device == Device::cpu, "a ", dtype_name(impl_->dtype), " tensor of shape ",
               to_string(impl_->shape), " on cuda reached code that runs on the CPU (an op without a CUDA kernel?)");
  return static_cast<T*>(impl_->storage->block.ptr);
}

}  // namespace seqlab
