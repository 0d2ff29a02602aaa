// The fused attention kernels on the device (core/cuda/attention.cu) against the CPU kernels on the
// same inputs: forward (output and row logsumexp) and backward (dq, dk, dv), heads split and packed,
// causal and not, Tq != Tk, tails of the 64-row tiles, head widths from 5 to 128; the decode step
// against a KV cache; the head split/merge and position-table copies; bit-identical repeats; no
// (T, T) buffer (the allocator's peak at two lengths); the argument checks. float64 against the CPU's
// float64 kernels at 1e-10 is the device gradient check of the backward.
#include <string>
#include <vector>

#include "core/cuda/attention.h"
#include "core/cuda/runtime.h"
#include "core/device.h"
#include "core/kernels/attention.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;

namespace {

Tensor dev(const Tensor& t) { return t.to(Device::cuda); }

constexpr double kRtol32 = 1e-4, kAtol32 = 1e-5;   // float32: the CPU and the device sum in other orders
constexpr double kRtol64 = 1e-10, kAtol64 = 1e-12;  // float64

struct Case {
  int64_t B, H, Tq, Tk, Dh;
  bool causal;
};

std::string name_of(const Case& c, DType dt) {
  return std::string(dtype_name(dt)) + " B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) +
         " Tq=" + std::to_string(c.Tq) + " Tk=" + std::to_string(c.Tk) + " Dh=" + std::to_string(c.Dh) +
         (c.causal ? " causal" : "");
}

// attention_forward and attention_backward on the device against the CPU, on the same inputs (the
// device backward reads the CPU forward's out and lse, so it is compared on its own).
void compare_split(const Case& c, DType dt, double rtol, double atol, uint64_t seed) {
  const std::string what = name_of(c, dt);
  Tensor q = rand_cpu({c.B, c.H, c.Tq, c.Dh}, seed, dt, -3, 3);  // peaked rows: the online softmax rescales
  Tensor k = rand_cpu({c.B, c.H, c.Tk, c.Dh}, seed + 1, dt);
  Tensor v = rand_cpu({c.B, c.H, c.Tk, c.Dh}, seed + 2, dt);
  Tensor dout = rand_cpu({c.B, c.H, c.Tq, c.Dh}, seed + 3, dt);
  kernels::AttentionForward f = kernels::attention_forward(q, k, v, c.causal);
  kernels::AttentionForward g = kernels::attention_forward(dev(q), dev(k), dev(v), c.causal);
  CHECK(g.out.device() == Device::cuda);
  CHECK(g.lse.device() == Device::cuda);
  check_close(g.out, f.out, rtol, atol, what + " out");
  check_close(g.lse, f.lse, rtol, atol, what + " lse");
  std::array<Tensor, 3> gc = kernels::attention_backward(dout, q, k, v, f.out, f.lse, c.causal);
  std::array<Tensor, 3> gg =
      kernels::attention_backward(dev(dout), dev(q), dev(k), dev(v), dev(f.out), dev(f.lse), c.causal);
  check_close(gg[0], gc[0], rtol, atol, what + " dq");
  check_close(gg[1], gc[1], rtol, atol, what + " dk");
  check_close(gg[2], gc[2], rtol, atol, what + " dv");
}

// attention_packed_forward / attention_packed_backward: qkv (B, T, 3 H Dh).
void compare_packed(int64_t B, int64_t T, int64_t H, int64_t Dh, bool causal, DType dt, double rtol, double atol,
                    uint64_t seed) {
  const std::string what = std::string("packed ") + dtype_name(dt) + " B=" + std::to_string(B) +
                           " T=" + std::to_string(T) + " H=" + std::to_string(H) + " Dh=" + std::to_string(Dh) +
                           (causal ? " causal" : "");
  Tensor qkv = rand_cpu({B, T, 3 * H * Dh}, seed, dt, -2, 2);
  Tensor dout = rand_cpu({B, T, H * Dh}, seed + 1, dt);
  kernels::AttentionForward f = kernels::attention_packed_forward(qkv, H, causal);
  kernels::AttentionForward g = kernels::attention_packed_forward(dev(qkv), H, causal);
  check_close(g.out, f.out, rtol, atol, what + " out");
  check_close(g.lse, f.lse, rtol, atol, what + " lse");
  Tensor dc = kernels::attention_packed_backward(dout, qkv, f.out, f.lse, H, causal);
  Tensor dg = kernels::attention_packed_backward(dev(dout), dev(qkv), dev(f.out), dev(f.lse), H, causal);
  CHECK(dg.device() == Device::cuda);
  check_close(dg, dc, rtol, atol, what + " dqkv");
}

// attention_forward_cached: q (B, H, Tq, Dh) against the first len rows of random caches (B, H, cap, Dh);
// the rows past len hold values that must not be read.
void compare_cached(int64_t B, int64_t H, int64_t Tq, int64_t Dh, int64_t cap, int64_t len, DType dt, double rtol,
                    double atol, uint64_t seed) {
  const std::string what = std::string("cached ") + dtype_name(dt) + " Tq=" + std::to_string(Tq) +
                           " Dh=" + std::to_string(Dh) + " len=" + std::to_string(len) + "/" + std::to_string(cap);
  Tensor q = rand_cpu({B, H, Tq, Dh}, seed, dt, -3, 3);
  Tensor kc = rand_cpu({B, H, cap, Dh}, seed + 1, dt);
  Tensor vc = rand_cpu({B, H, cap, Dh}, seed + 2, dt);
  Tensor oc = kernels::attention_forward_cached(q, kc, vc, len);
  Tensor og = kernels::attention_forward_cached(dev(q), dev(kc), dev(vc), len);
  CHECK(og.device() == Device::cuda);
  check_close(og, oc, rtol, atol, what);
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda attention: attention_forward and attention_backward match the CPU in float32") {
  SEQLAB_REQUIRE_GPU();
  const std::vector<Case> cases = {
      {2, 3, 100, 100, 16, true},  {2, 3, 100, 100, 16, false}, {1, 2, 37, 150, 64, false},
      {1, 2, 37, 150, 64, true},   {2, 1, 65, 65, 5, true},     {1, 2, 70, 130, 72, true},
      {1, 1, 129, 129, 128, false}, {1, 1, 1, 50, 32, true},     {1, 2, 200, 200, 48, true},
      {3, 1, 31, 31, 33, false},   {2, 2, 90, 90, 20, false},   {1, 2, 64, 64, 12, true},
      {2, 1, 130, 130, 32, false}};
  uint64_t seed = 100;
  for (const Case& c : cases) compare_split(c, DType::f32, kRtol32, kAtol32, seed += 10);
}

TEST_CASE("cuda attention: attention_forward and attention_backward match the CPU in float64") {
  SEQLAB_REQUIRE_GPU();
  const std::vector<Case> cases = {{2, 2, 70, 70, 13, true},
                                   {1, 2, 33, 90, 64, false},
                                   {1, 1, 40, 40, 100, true},
                                   {1, 1, 20, 77, 8, true},
                                   {1, 2, 45, 45, 16, false},
                                   {1, 1, 33, 70, 28, true}};
  uint64_t seed = 300;
  for (const Case& c : cases) compare_split(c, DType::f64, kRtol64, kAtol64, seed += 10);
}

TEST_CASE("cuda attention: attention_packed_forward and attention_packed_backward match the CPU") {
  SEQLAB_REQUIRE_GPU();
  compare_packed(2, 77, 3, 16, true, DType::f32, kRtol32, kAtol32, 500);    // the CPU's vector kernels
  compare_packed(1, 130, 2, 24, false, DType::f32, kRtol32, kAtol32, 510);  // the CPU's split path
  compare_packed(1, 65, 1, 128, true, DType::f32, kRtol32, kAtol32, 520);
  compare_packed(2, 150, 4, 16, false, DType::f32, kRtol32, kAtol32, 525);  // the bench's Dh = 16
  compare_packed(2, 50, 2, 8, true, DType::f64, kRtol64, kAtol64, 530);
  compare_packed(1, 70, 3, 20, false, DType::f64, kRtol64, kAtol64, 540);
}

TEST_CASE("cuda attention: attention_forward_cached matches the CPU") {
  SEQLAB_REQUIRE_GPU();
  compare_cached(2, 3, 1, 16, 40, 33, DType::f32, kRtol32, kAtol32, 600);
  compare_cached(1, 2, 3, 64, 100, 70, DType::f32, kRtol32, kAtol32, 610);
  compare_cached(1, 1, 5, 128, 20, 5, DType::f32, kRtol32, kAtol32, 620);
  compare_cached(1, 1, 1, 32, 200, 150, DType::f32, kRtol32, kAtol32, 630);
  compare_cached(2, 2, 1, 13, 30, 17, DType::f64, kRtol64, kAtol64, 640);
}

TEST_CASE("cuda attention: split_heads and merge_heads copy as the CPU does") {
  SEQLAB_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = rand_cpu({2, 33, 3 * 4 * 5}, 700, dt);
    std::vector<Tensor> pc = kernels::split_heads(x, 3, 4);
    std::vector<Tensor> pg = kernels::split_heads(dev(x), 3, 4);
    REQUIRE(pg.size() == 3);
    for (size_t p = 0; p < 3; ++p) {
      CHECK(pg[p].device() == Device::cuda);
      CHECK(pg[p].shape() == pc[p].shape());
      CHECK(pg[p].to_vector() == pc[p].to_vector());
    }
    Tensor yg = kernels::merge_heads(pg);
    CHECK(yg.shape() == x.shape());
    CHECK(yg.to_vector() == x.to_vector());
    Tensor o = rand_cpu({3, 2, 19, 7}, 701, dt);  // one part, as the attention output
    CHECK(kernels::merge_heads({dev(o)}).to_vector() == kernels::merge_heads({o}).to_vector());
    CHECK(kernels::split_heads(dev(x), 1, 6)[0].to_vector() == kernels::split_heads(x, 1, 6)[0].to_vector());
  }
}

TEST_CASE("cuda attention: add_positions forward and table backward match the CPU bit for bit") {
  SEQLAB_REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = rand_cpu({3, 17, 24}, 800, dt), table = rand_cpu({40, 24}, 801, dt), dy = rand_cpu({3, 17, 24}, 802, dt);
    Tensor yc = kernels::add_positions_forward(x, table, 5);
    Tensor yg = kernels::add_positions_forward(dev(x), dev(table), 5);
    CHECK(yg.device() == Device::cuda);
    CHECK(yg.to_vector() == yc.to_vector());
    Tensor tc = kernels::add_positions_backward_table(dy, {40, 24}, 5);  // a fixed-order sum over B
    Tensor tg = kernels::add_positions_backward_table(dev(dy), {40, 24}, 5);
    CHECK(tg.shape() == Shape({40, 24}));
    CHECK(tg.to_vector() == tc.to_vector());
    Tensor big = rand_cpu({2, 1000, 33}, 803, dt), btab = rand_cpu({1000, 33}, 804, dt);
    CHECK(kernels::add_positions_forward(dev(big), dev(btab), 0).to_vector() ==
          kernels::add_positions_forward(big, btab, 0).to_vector());
    CHECK(kernels::add_positions_backward_table(dev(big), {1000, 33}, 0).to_vector() ==
          kernels::add_positions_backward_table(big, {1000, 33}, 0).to_vector());
  }
}

TEST_CASE("cuda attention: kv_cache_copy writes the rows of the step mode's cache") {
  SEQLAB_REQUIRE_GPU();
  Tensor src = rand_cpu({2, 3, 5, 8}, 900), dst = rand_cpu({2, 3, 12, 8}, 901);
  Tensor g = dev(dst);
  cuda::kv_cache_copy(dev(src), g, 5, 4);
  std::vector<double> want = dst.to_vector(), s = src.to_vector();
  for (int64_t bh = 0; bh < 6; ++bh)
    for (int64_t t = 0; t < 5; ++t)
      for (int64_t e = 0; e < 8; ++e) want[static_cast<size_t>((bh * 12 + 4 + t) * 8 + e)] = s[static_cast<size_t>((bh * 5 + t) * 8 + e)];
  CHECK(g.to_vector() == want);
  CHECK(error_of([&] { cuda::kv_cache_copy(dev(src), g, 5, 8); }).find("kv_cache_copy") != std::string::npos);
}

TEST_CASE("cuda attention: a device run repeats bit for bit") {
  SEQLAB_REQUIRE_GPU();
  Tensor q = dev(rand_cpu({2, 4, 300, 64}, 1000)), k = dev(rand_cpu({2, 4, 300, 64}, 1001));
  Tensor v = dev(rand_cpu({2, 4, 300, 64}, 1002)), dout = dev(rand_cpu({2, 4, 300, 64}, 1003));
  auto run = [&] {
    kernels::AttentionForward f = kernels::attention_forward(q, k, v, true);
    std::array<Tensor, 3> g = kernels::attention_backward(dout, q, k, v, f.out, f.lse, true);
    return std::vector<std::vector<double>>{f.out.to_vector(), f.lse.to_vector(), g[0].to_vector(),
                                            g[1].to_vector(), g[2].to_vector()};
  };
  const auto a = run(), b = run();
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == b[i]);
  Tensor qkv = dev(rand_cpu({2, 150, 3 * 2 * 32}, 1004)), dpo = dev(rand_cpu({2, 150, 2 * 32}, 1005));
  auto run_packed = [&] {
    kernels::AttentionForward f = kernels::attention_packed_forward(qkv, 2, false);
    return kernels::attention_packed_backward(dpo, qkv, f.out, f.lse, 2, false).to_vector();
  };
  CHECK(run_packed() == run_packed());
}

TEST_CASE("cuda attention: forward and backward keep no (T - T) buffer") {
  SEQLAB_REQUIRE_GPU();
  auto extra_peak = [](int64_t T) {
    Tensor q = dev(rand_cpu({1, 2, T, 32}, 1100)), k = dev(rand_cpu({1, 2, T, 32}, 1101));
    Tensor v = dev(rand_cpu({1, 2, T, 32}, 1102)), dout = dev(rand_cpu({1, 2, T, 32}, 1103));
    cuda::synchronize();
    const size_t base = cuda::device_allocator_stats().allocated;
    cuda::reset_device_peak();
    {
      kernels::AttentionForward f = kernels::attention_forward(q, k, v, true);
      std::array<Tensor, 3> g = kernels::attention_backward(dout, q, k, v, f.out, f.lse, true);
      cuda::synchronize();
    }
    return cuda::device_allocator_stats().peak - base;
  };
  const size_t p1 = extra_peak(512), p4 = extra_peak(2048);
  // Outputs and temporaries are O(T Dh): 4x the length, about 4x the memory. One (T, T) float buffer
  // of the two heads at T = 2048 alone would be 32 MiB.
  CHECK(p4 <= 5 * p1 + (size_t{1} << 20));
  CHECK(p4 < (size_t{8} << 20));
}

TEST_CASE("cuda attention: the argument checks of the CPU - and the head-width limit") {
  SEQLAB_REQUIRE_GPU();
  Tensor q = dev(rand_cpu({1, 1, 10, 8}, 1200)), k = dev(rand_cpu({1, 1, 6, 8}, 1201));
  CHECK(error_of([&] { kernels::attention_forward(q, k, k, true); }).find("causal attention needs Tk >= Tq") !=
        std::string::npos);
  CHECK(error_of([&] { kernels::attention_forward(q, k, dev(rand_cpu({1, 1, 7, 8}, 1202)), false); })
            .find("must have the same shape") != std::string::npos);
  Tensor wide = dev(rand_cpu({1, 1, 4, 130}, 1203));
  CHECK(error_of([&] { kernels::attention_forward(wide, wide, wide, false); }).find("maximum of 128") !=
        std::string::npos);
  CHECK(error_of([&] { kernels::attention_packed_forward(dev(rand_cpu({1, 4, 3 * 130}, 1204)), 1, false); })
            .find("maximum of 128") != std::string::npos);
  CHECK(error_of([&] { kernels::attention_forward_cached(q, k, k, 7); }).find("outside the cache") !=
        std::string::npos);
  const std::string mixed = error_of([&] { kernels::attention_forward(rand_cpu({1, 1, 6, 8}, 1205), k, k, false); });
  CHECK(mixed.find("different devices") != std::string::npos);
}

}  // TEST_SUITE
