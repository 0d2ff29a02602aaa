// The CUDA runtime: tensors on the device, copies both ways, the caching allocator's bins and
// statistics, its out-of-memory message, and the wrong-device error.
#include "core/cuda/runtime.h"
#include "core/device.h"
#include "core/kernels/elementwise.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

TEST_SUITE("cuda") {

TEST_CASE("cuda runtime: to(cuda) and back keeps every value - in every dtype") {
  SEQLAB_REQUIRE_GPU();
  for (DType d : {DType::f32, DType::f64, DType::i32}) {
    Tensor x = rand_cpu({3, 5, 7}, 1, d, -100, 100);
    Tensor g = x.to(Device::cuda);
    CHECK(g.device() == Device::cuda);
    CHECK(g.dtype() == d);
    CHECK(g.to(Device::cpu).to_vector() == x.to_vector());
    CHECK(g.clone().to_vector() == x.to_vector());
  }
}

TEST_CASE("cuda runtime: zeros - full - fill - item - dtype conversion and copy_from across devices") {
  SEQLAB_REQUIRE_GPU();
  Tensor z = Tensor::zeros({1000}, DType::f32, Device::cuda);
  CHECK(z.to_vector() == std::vector<double>(1000, 0.0));
  Tensor f = Tensor::full({4, 4}, 2.5, DType::f64, Device::cuda);
  CHECK(f.to_vector() == std::vector<double>(16, 2.5));
  CHECK(Tensor::scalar(3.25, DType::f32, Device::cuda).item() == 3.25);
  Tensor x = rand_cpu({257}, 2, DType::f64);
  Tensor g32 = x.to(Device::cuda).to(DType::f32);
  CHECK(g32.to_vector() == x.to(DType::f32).to_vector());
  Tensor host = Tensor::zeros({257}, DType::f32);
  host.copy_from(x.to(Device::cuda));  // f64 on cuda into f32 on the host
  CHECK(host.to_vector() == x.to(DType::f32).to_vector());
  Tensor dev = Tensor::zeros({257}, DType::f64, Device::cuda);
  dev.copy_from(x);
  CHECK(dev.to_vector() == x.to_vector());
}

TEST_CASE("cuda runtime: the caching allocator reuses a freed block of the same bin - and counts") {
  SEQLAB_REQUIRE_GPU();
  cuda::synchronize();
  const auto before = cuda::device_allocator_stats();
  { Tensor a = Tensor::empty({1000, 1000}, DType::f32, Device::cuda); }
  const auto mid = cuda::device_allocator_stats();
  { Tensor b = Tensor::empty({999, 1001}, DType::f32, Device::cuda); }  // the same bin: a reuse
  const auto after = cuda::device_allocator_stats();
  CHECK(after.device_mallocs == mid.device_mallocs);
  CHECK(after.reuses == mid.reuses + 1);
  CHECK(after.allocated == before.allocated);
  CHECK(after.reserved >= after.allocated);
  CHECK(mid.peak >= before.allocated + 4000000);
}

TEST_CASE("cuda runtime: out of memory names the request and the pool") {
  SEQLAB_REQUIRE_GPU();
  try {
    Tensor huge = Tensor::empty({int64_t{1} << 40}, DType::f32, Device::cuda);  // 4 TiB
    FAIL("4 TiB allocated");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("out of memory") != std::string::npos);
    CHECK(m.find("(1099511627776,)") != std::string::npos);
    CHECK(m.find("reserved") != std::string::npos);
  }
}

TEST_CASE("cuda runtime: an op given tensors on two devices names the op and both devices") {
  SEQLAB_REQUIRE_GPU();
  Tensor a = rand_cpu({2, 3}, 3), b = rand_cpu({2, 3}, 4).to(Device::cuda);
  try {
    kernels::add(a, b);
    FAIL("no error");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("add") != std::string::npos);
    CHECK(m.find("cpu") != std::string::npos);
    CHECK(m.find("cuda") != std::string::npos);
  }
}

}  // TEST_SUITE
