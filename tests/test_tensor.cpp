// Tensor handle, caching allocator, random generator and parallel helpers.
#include <cstring>
#include <thread>

#include "core/allocator.h"
#include "core/parallel.h"
#include "core/random.h"
#include "core/tensor.h"
#include "testing.h"

using namespace seqlab;

TEST_CASE("tensor: construction, shape, dtype, item") {
  Tensor z = Tensor::zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.numel() == 6);
  CHECK(z.dtype() == DType::f32);
  CHECK(z.size(-1) == 3);
  for (double v : z.to_vector()) CHECK(v == 0.0);
  Tensor f = Tensor::full({4}, 2.5, DType::f64);
  CHECK(f.data<double>()[3] == 2.5);
  CHECK(Tensor::scalar(7.0).item() == 7.0);
  CHECK_THROWS_AS(f.data<float>(), Error);
  CHECK_THROWS_AS(z.item(), Error);
  CHECK_THROWS_AS(z.size(2), Error);
  CHECK_THROWS_AS(Tensor::from_vector({1, 2, 3}, {2, 2}), Error);
}

TEST_CASE("tensor: handles share storage, clone, view, detach, to") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  Tensor b = a;  // cheap handle
  b.data<float>()[0] = 9;
  CHECK(a.data<float>()[0] == 9);
  Tensor c = a.clone();
  c.data<float>()[1] = -1;
  CHECK(a.data<float>()[1] == 2);
  Tensor v = a.view({4});
  CHECK(v.shares_storage(a));
  CHECK_THROWS_AS(a.view({3}), Error);
  Tensor d = a.to(DType::f64);
  CHECK(d.dtype() == DType::f64);
  CHECK(d.to_vector() == std::vector<double>{9, 2, 3, 4});
  Tensor i = Tensor::from_vector({1, 2}, {2}, DType::i32);
  CHECK(i.data<int32_t>()[1] == 2);
}

TEST_CASE("allocator: freed blocks are reused, not returned to the OS") {
  void* first;
  AllocatorStats s0;
  {
    Tensor t = Tensor::empty({1 << 20});  // 4 MiB
    first = t.raw_data();
    s0 = allocator_stats();
  }
  AllocatorStats s1 = allocator_stats();
  CHECK(s1.cached_bytes >= s0.cached_bytes + (4u << 20));
  CHECK(s1.in_use_bytes + (4u << 20) <= s0.in_use_bytes);
  Tensor t2 = Tensor::empty({1 << 20});
  CHECK(t2.raw_data() == first);
  AllocatorStats s2 = allocator_stats();
  CHECK(s2.reuses == s1.reuses + 1);
  CHECK(s2.os_allocs == s1.os_allocs);
  CHECK(reinterpret_cast<uintptr_t>(t2.raw_data()) % 64 == 0);
}

TEST_CASE("allocator: a much smaller request does not take a huge cached block") {
  void* big;
  {
    Tensor t = Tensor::empty({1 << 22});
    big = t.raw_data();
  }
  Tensor small = Tensor::empty({1000});
  CHECK(small.raw_data() != big);
}

TEST_CASE("random: seeded generator is reproducible and roughly normal") {
  Generator g1(42), g2(42), g3(43);
  for (int i = 0; i < 10; ++i) CHECK(g1.next_u64() == g2.next_u64());
  CHECK(g1.next_u64() != g3.next_u64());
  Generator g(7);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double x = g.normal();
    s += x;
    s2 += x * x;
  }
  CHECK(std::abs(s / n) < 0.01);
  CHECK(std::abs(s2 / n - 1.0) < 0.02);
  // state round trip, including the cached Box-Muller value
  Generator a(5);
  a.normal();
  auto st = a.state();
  double next = a.normal();
  Generator b(0);
  b.set_state(st);
  CHECK(b.normal() == next);
  manual_seed(3);
  Tensor r1 = randn({5});
  manual_seed(3);
  Tensor r2 = randn({5});
  CHECK(r1.to_vector() == r2.to_vector());
  Tensor u = rand_uniform({1000}, -2, 3, DType::f64);
  for (double x : u.to_vector()) CHECK((x >= -2 && x < 3));
}

TEST_CASE("parallel: parallel_for covers the range once, parallel_sum is thread-count independent") {
  std::vector<int> hits(100000, 0);
  parallel_for(0, 100000, 1000, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) hits[i]++;
  });
  for (int h : hits) REQUIRE(h == 1);
  std::vector<float> x(1000003);
  Generator g(1);
  for (auto& v : x) v = static_cast<float>(g.normal());
  auto sum_with = [&](int threads) {
    set_num_threads(threads);
    return parallel_sum<float>(0, static_cast<int64_t>(x.size()), 4096, [&](int64_t lo, int64_t hi) {
      float s = 0;
      for (int64_t i = lo; i < hi; ++i) s += x[i];
      return s;
    });
  };
  float s1 = sum_with(1), s2 = sum_with(2);
  set_num_threads(0);
  CHECK(std::memcmp(&s1, &s2, sizeof(float)) == 0);
}
