#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>

#include <unistd.h>

#include "core/allocator.h"
#include "core/cuda/runtime.h"

namespace seqlab {

namespace {
template <typename F>
decltype(auto) dispatch_any(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::i32: return f.template operator()<int32_t>();
  }
  throw Error("unknown dtype");
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  // The element count in double first: a shape from a config can overflow int64 before numel says so.
  double elems = 1;
  for (int64_t d : shape) {
    SEQLAB_CHECK(d >= 0, "empty: negative size in shape ", to_string(shape));
    elems *= static_cast<double>(d);
  }
  const double bytes = elems * static_cast<double>(dtype_size(dtype));
  auto out_of_memory = [&] {
    return Error(str("out of memory: cannot allocate a ", dtype_name(dtype), " tensor of shape ", to_string(shape), " (",
                     static_cast<long long>(bytes / (1 << 20)), " MiB; seqlab tensors already hold ", allocator_stats().in_use_bytes >> 20,
                     " MiB): lower the batch size, the sequence length or the model width"));
  };
  // More than the machine's memory can never succeed; asking anyway would, with overcommit, end in
  // the OOM killer instead of this message.
  static const double machine_bytes =
      static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
  if (bytes > static_cast<double>(std::numeric_limits<int64_t>::max() / 2) ||
      (device == Device::cpu && machine_bytes > 0 && bytes > machine_bytes))
    throw out_of_memory();
  auto impl = std::make_shared<TensorImpl>();
  try {
    impl->storage = std::make_shared<Storage>(static_cast<size_t>(seqlab::numel(shape)) * dtype_size(dtype), device);
  } catch (const std::bad_alloc&) {
    throw out_of_memory();
  } catch (const Error& e) {  // the device allocator's message names the pool's state
    throw Error(str("cannot allocate a ", dtype_name(dtype), " tensor of shape ", to_string(shape), " on cuda: ", e.what()));
  }
  impl->shape = shape;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device == Device::cuda) cuda::memset_zero(t.device_ptr(), t.nbytes());
  else std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill(value);
  return t;
}

Tensor Tensor::zeros_like(const Tensor& like) { return zeros(like.shape(), like.dtype(), like.device()); }

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  SEQLAB_CHECK(static_cast<int64_t>(values.size()) == seqlab::numel(shape), "from_vector: ", values.size(),
               " values for shape ", to_string(shape));
  Tensor t = empty(shape, dtype);
  dispatch_any(dtype, [&]<typename T>() {
    T* p = t.data<T>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = static_cast<T>(values[i]);
  });
  return device == Device::cpu ? t : t.to(device);
}

const Shape& Tensor::shape() const {
  SEQLAB_CHECK(defined(), "shape(): undefined tensor");
  return impl_->shape;
}

int64_t Tensor::size(int64_t axis) const { return shape()[norm_axis(axis, dim(), "size")]; }
int64_t Tensor::numel() const { return seqlab::numel(shape()); }
DType Tensor::dtype() const {
  SEQLAB_CHECK(defined(), "dtype(): undefined tensor");
  return impl_->dtype;
}
Device Tensor::device() const { return impl_->storage->device; }
void* Tensor::raw_data() const {
  SEQLAB_CHECK(defined(), "raw_data(): undefined tensor");
  SEQLAB_CHECK(impl_->storage->device == Device::cpu, "a tensor of shape ", to_string(impl_->shape),
               " on cuda reached code that runs on the CPU (an op without a CUDA kernel?)");
  return impl_->storage->block.ptr;
}

void* Tensor::device_ptr() const {
  SEQLAB_CHECK(defined(), "device_ptr(): undefined tensor");
  return impl_->storage->block.ptr;
}

Tensor Tensor::view(const Shape& shape) const {
  SEQLAB_CHECK(seqlab::numel(shape) == numel(), "view: cannot view ", to_string(this->shape()), " as ",
               to_string(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = shape;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype(), device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor t = empty(shape(), dtype, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device dev) const {
  if (device() == dev) return *this;
  if (dev == Device::cuda) cuda::require("to(cuda)");
  Tensor t = empty(shape(), dtype(), dev);
  if (dev == Device::cuda) cuda::copy_h2d_pinned(t.device_ptr(), raw_data(), nbytes());
  else cuda::copy_d2h(t.raw_data(), device_ptr(), nbytes());
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  SEQLAB_CHECK(src.numel() == numel(), "copy_from: ", to_string(src.shape()), " into ", to_string(shape()));
  if (device() == Device::cuda || src.device() == Device::cuda) {
    // Between dtypes across devices: converted where the source lives, then copied.
    if (src.dtype() != dtype()) {
      if (src.device() == device()) return cuda::convert(device_ptr(), dtype(), src.device_ptr(), src.dtype(), numel());
      return copy_from(src.to(dtype()));
    }
    if (src.device() == device()) return cuda::copy_d2d(device_ptr(), src.device_ptr(), nbytes());
    if (device() == Device::cuda) return cuda::copy_h2d(device_ptr(), src.raw_data(), nbytes());
    return cuda::copy_d2h(raw_data(), src.device_ptr(), nbytes());
  }
  if (src.dtype() == dtype()) {
    std::memmove(raw_data(), src.raw_data(), nbytes());
    return;
  }
  dispatch_any(dtype(), [&]<typename D>() {
    dispatch_any(src.dtype(), [&]<typename S>() {
      const S* s = src.data<S>();
      D* d = data<D>();
      for (int64_t i = 0, n = numel(); i < n; ++i) d[i] = static_cast<D>(s[i]);
    });
  });
}

void Tensor::fill(double value) {
  if (device() == Device::cuda) return cuda::fill(device_ptr(), dtype(), numel(), value);
  dispatch_any(dtype(), [&]<typename T>() { std::fill_n(data<T>(), numel(), static_cast<T>(value)); });
}

double Tensor::item() const {
  SEQLAB_CHECK(numel() == 1, "item: tensor of shape ", to_string(shape()), " has ", numel(), " elements, expected 1");
  if (device() == Device::cuda) return to(Device::cpu).item();
  return dispatch_any(dtype(), [&]<typename T>() { return static_cast<double>(data<T>()[0]); });
}

std::vector<double> Tensor::to_vector() const {
  if (device() == Device::cuda) return to(Device::cpu).to_vector();
  std::vector<double> v(static_cast<size_t>(numel()));
  dispatch_any(dtype(), [&]<typename T>() {
    const T* p = data<T>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(p[i]);
  });
  return v;
}

bool Tensor::shares_storage(const Tensor& other) const {
  return defined() && other.defined() && impl_->storage == other.impl_->storage;
}

bool Tensor::requires_grad() const { return defined() && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  SEQLAB_CHECK(defined(), "set_requires_grad: undefined tensor");
  SEQLAB_CHECK(is_leaf(), "set_requires_grad: only leaf tensors can be marked (use detach() first)");
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return defined() ? impl_->grad : Tensor(); }
void Tensor::set_grad(const Tensor& g) { impl_->grad = g; }
void Tensor::zero_grad() { impl_->grad = Tensor(); }

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = impl_->shape;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

const std::shared_ptr<Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<Node> none;
  return defined() ? impl_->grad_fn : none;
}
int Tensor::output_nr() const { return impl_->output_nr; }

}  // namespace seqlab
