// The CUDA RNN kernels (core/cuda/rnn.cu) against the CPU kernels (core/kernels/rnn.cpp) on the same
// inputs: the forward's outputs and saved tensors (y, gates, c, h_last, c_last) and the backward's
// gradients of the tanh RNN, the LSTM and the GRU, in float32 and float64 (the float64 comparison of
// the device backward with the CPU backward is the device gradient check), T = 1 and 37, sizes that
// are not multiples of 32, time chunks, partial gradients, the error messages, and bit-identical reruns;
// every path of the recurrence: the persistent kernels with W_hh in registers (long T) or in shared
// memory, and the per-step GEMM path of an H too large for one block.
#include <cmath>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/kernels/rnn.h"
#include "tests/cuda/cuda_test.h"

using namespace seqlab;
using namespace seqlab::test;
using kernels::RnnCell;
using kernels::RnnForward;
using kernels::RnnGrads;

namespace {

const RnnCell kCells[] = {RnnCell::tanh, RnnCell::lstm, RnnCell::gru};

struct Tol {
  double rtol, atol;
};
Tol forward_tol(DType d) { return d == DType::f64 ? Tol{1e-11, 1e-12} : Tol{1e-4, 1e-5}; }
Tol backward_tol(DType d) { return d == DType::f64 ? Tol{1e-10, 1e-11} : Tol{1e-4, 1e-4}; }

struct Layer {
  Tensor x, w_ih, w_hh, b_ih, b_hh;
};

// Random x (B, T, I) in [-1, 1), weights and biases in [-1/sqrt(H), 1/sqrt(H)) (PyTorch's init).
Layer make_layer(RnnCell cell, int64_t B, int64_t T, int64_t I, int64_t H, DType d, bool bias_ih, bool bias_hh,
                 uint64_t seed) {
  const int64_t G = kernels::rnn_gate_count(cell);
  const double k = 1.0 / std::sqrt(static_cast<double>(H));
  Layer l;
  l.x = rand_cpu({B, T, I}, seed, d);
  l.w_ih = rand_cpu({G * H, I}, seed + 1, d, -k, k);
  l.w_hh = rand_cpu({G * H, H}, seed + 2, d, -k, k);
  if (bias_ih) l.b_ih = rand_cpu({G * H}, seed + 3, d, -k, k);
  if (bias_hh) l.b_hh = rand_cpu({G * H}, seed + 4, d, -k, k);
  return l;
}

Tensor dev(const Tensor& t) { return t.defined() ? t.to(Device::cuda) : Tensor(); }
Layer dev(const Layer& l) { return {dev(l.x), dev(l.w_ih), dev(l.w_hh), dev(l.b_ih), dev(l.b_hh)}; }

std::string label(RnnCell cell, DType d, int64_t B, int64_t T, int64_t I, int64_t H) {
  return str(kernels::rnn_cell_name(cell), " ", dtype_name(d), " B=", B, " T=", T, " I=", I, " H=", H);
}

void check_on_cuda(const Tensor& t, const std::string& what) {
  if (t.defined()) CHECK_MESSAGE(t.device() == Device::cuda, what << " not on cuda");
}

void compare_forward(const RnnForward& g, const RnnForward& c, Tol tol, const std::string& what) {
  for (const Tensor* t : {&g.y, &g.gates, &g.c, &g.h_last, &g.c_last}) check_on_cuda(*t, what);
  check_close(g.y, c.y, tol.rtol, tol.atol, what + " y");
  check_close(g.gates, c.gates, tol.rtol, tol.atol, what + " gates");
  check_close(g.c, c.c, tol.rtol, tol.atol, what + " c");
  check_close(g.h_last, c.h_last, tol.rtol, tol.atol, what + " h_last");
  check_close(g.c_last, c.c_last, tol.rtol, tol.atol, what + " c_last");
}

void compare_grads(const RnnGrads& g, const RnnGrads& c, Tol tol, const std::string& what) {
  for (const Tensor* t : {&g.dx, &g.dw_ih, &g.dw_hh, &g.db_ih, &g.db_hh}) check_on_cuda(*t, what);
  check_close(g.dx, c.dx, tol.rtol, tol.atol, what + " dx");
  check_close(g.dw_ih, c.dw_ih, tol.rtol, tol.atol, what + " dw_ih");
  check_close(g.dw_hh, c.dw_hh, tol.rtol, tol.atol, what + " dw_hh");
  check_close(g.db_ih, c.db_ih, tol.rtol, tol.atol, what + " db_ih");
  check_close(g.db_hh, c.db_hh, tol.rtol, tol.atol, what + " db_hh");
}

struct Size {
  int64_t B, T, I, H;
};
const Size kSizes[] = {{3, 1, 5, 7}, {5, 37, 13, 33}};

// The message of the Error f throws ("" when it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Forward (from h0, c0 and from zeros) and backward (default time chunk and `chunk`) of one layer
// against the CPU.
void check_layer(RnnCell cell, DType d, int64_t B, int64_t T, int64_t I, int64_t H, int64_t chunk, uint64_t seed) {
  const std::string what = label(cell, d, B, T, I, H);
  Layer l = make_layer(cell, B, T, I, H, d, true, true, seed);
  Layer g = dev(l);
  Tensor h0 = rand_cpu({B, H}, seed + 7, d);
  Tensor c0 = cell == RnnCell::lstm ? rand_cpu({B, H}, seed + 8, d) : Tensor();
  RnnForward fc = kernels::rnn_forward(cell, l.x, l.w_ih, l.w_hh, l.b_ih, l.b_hh, h0, c0);
  RnnForward fg = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh, dev(h0), dev(c0));
  compare_forward(fg, fc, forward_tol(d), what + " with h0");
  fc = kernels::rnn_forward(cell, l.x, l.w_ih, l.w_hh, l.b_ih, l.b_hh);
  fg = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh);
  compare_forward(fg, fc, forward_tol(d), what);
  Tensor dy = rand_cpu({B, T, H}, seed + 9, d);
  for (int64_t tc : {int64_t(0), chunk}) {
    RnnGrads gc = kernels::rnn_backward(cell, dy, l.x, l.w_ih, l.w_hh, fc, true, true, true, true, true, tc);
    RnnGrads gg = kernels::rnn_backward(cell, dev(dy), g.x, g.w_ih, g.w_hh, fg, true, true, true, true, true, tc);
    compare_grads(gg, gc, backward_tol(d), what + str(" time_chunk ", tc));
  }
}

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda rnn: forward of tanh - lstm and gru matches the CPU (float32 and float64 - T = 1 and 37)") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 100;
  for (DType d : {DType::f32, DType::f64})
    for (RnnCell cell : kCells)
      for (const Size& s : kSizes)
        for (int biases = 0; biases < 3; ++biases) {  // both, none, b_ih only
          Layer l = make_layer(cell, s.B, s.T, s.I, s.H, d, biases != 1, biases == 0, seed += 10);
          Layer g = dev(l);
          RnnForward fc = kernels::rnn_forward(cell, l.x, l.w_ih, l.w_hh, l.b_ih, l.b_hh);
          RnnForward fg = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh);
          compare_forward(fg, fc, forward_tol(d), label(cell, d, s.B, s.T, s.I, s.H) + str(" biases ", biases));
        }
}

TEST_CASE("cuda rnn: forward from a given initial state h0 (and c0 for the lstm) matches the CPU") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 500;
  for (DType d : {DType::f32, DType::f64})
    for (RnnCell cell : kCells)
      for (const Size& s : kSizes) {
        Layer l = make_layer(cell, s.B, s.T, s.I, s.H, d, true, true, seed += 10);
        Layer g = dev(l);
        Tensor h0 = rand_cpu({s.B, s.H}, seed + 7, d);
        Tensor c0 = cell == RnnCell::lstm ? rand_cpu({s.B, s.H}, seed + 8, d) : Tensor();
        RnnForward fc = kernels::rnn_forward(cell, l.x, l.w_ih, l.w_hh, l.b_ih, l.b_hh, h0, c0);
        RnnForward fg = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh, dev(h0), dev(c0));
        compare_forward(fg, fc, forward_tol(d), label(cell, d, s.B, s.T, s.I, s.H) + " with h0");
        if (cell == RnnCell::lstm) {  // h0 without c0
          fc = kernels::rnn_forward(cell, l.x, l.w_ih, l.w_hh, l.b_ih, l.b_hh, h0);
          fg = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh, dev(h0));
          compare_forward(fg, fc, forward_tol(d), label(cell, d, s.B, s.T, s.I, s.H) + " with h0 only");
        }
      }
}

TEST_CASE("cuda rnn: backward of tanh - lstm and gru matches the CPU backward (float64: the gradient check)") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 1000;
  for (DType d : {DType::f32, DType::f64})
    for (RnnCell cell : kCells)
      for (const Size& s : kSizes)
        for (int biases = 0; biases < 2; ++biases) {
          Layer l = make_layer(cell, s.B, s.T, s.I, s.H, d, biases == 0, biases == 0, seed += 10);
          Layer g = dev(l);
          Tensor dy = rand_cpu({s.B, s.T, s.H}, seed + 9, d);
          RnnForward fc = kernels::rnn_forward(cell, l.x, l.w_ih, l.w_hh, l.b_ih, l.b_hh);
          RnnForward fg = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh);
          RnnGrads gc = kernels::rnn_backward(cell, dy, l.x, l.w_ih, l.w_hh, fc, true, true, true, true, true);
          RnnGrads gg = kernels::rnn_backward(cell, dev(dy), g.x, g.w_ih, g.w_hh, fg, true, true, true, true, true);
          compare_grads(gg, gc, backward_tol(d), label(cell, d, s.B, s.T, s.I, s.H) + str(" biases ", biases));
        }
}

TEST_CASE("cuda rnn: backward in time chunks and with only some gradients asked for matches the CPU") {
  SEQLAB_REQUIRE_GPU();
  uint64_t seed = 2000;
  const int64_t B = 4, T = 37, I = 9, H = 35;
  for (DType d : {DType::f32, DType::f64})
    for (RnnCell cell : kCells) {
      Layer l = make_layer(cell, B, T, I, H, d, true, true, seed += 10);
      Layer g = dev(l);
      Tensor dy = rand_cpu({B, T, H}, seed + 9, d);
      RnnForward fc = kernels::rnn_forward(cell, l.x, l.w_ih, l.w_hh, l.b_ih, l.b_hh);
      RnnForward fg = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh);
      for (int64_t tc : {1, 5, 36, 37}) {
        RnnGrads gc = kernels::rnn_backward(cell, dy, l.x, l.w_ih, l.w_hh, fc, true, true, true, true, true, tc);
        RnnGrads gg = kernels::rnn_backward(cell, dev(dy), g.x, g.w_ih, g.w_hh, fg, true, true, true, true, true, tc);
        compare_grads(gg, gc, backward_tol(d), label(cell, d, B, T, I, H) + str(" time_chunk ", tc));
      }
      // partial requests: the entries not asked for stay undefined on both sides
      const bool masks[3][5] = {{true, false, false, false, true},
                                {false, true, false, true, false},
                                {false, false, true, false, true}};
      for (const auto& m : masks) {
        RnnGrads gc = kernels::rnn_backward(cell, dy, l.x, l.w_ih, l.w_hh, fc, m[0], m[1], m[2], m[3], m[4], 6);
        RnnGrads gg = kernels::rnn_backward(cell, dev(dy), g.x, g.w_ih, g.w_hh, fg, m[0], m[1], m[2], m[3], m[4], 6);
        compare_grads(gg, gc, backward_tol(d), label(cell, d, B, T, I, H) + " partial");
      }
    }
}

TEST_CASE("cuda rnn: a batch large enough for several default time chunks matches the CPU") {
  SEQLAB_REQUIRE_GPU();
  // B = 300: the default chunk is ceil(8192 / 300) = 28 steps, so T = 40 runs in two chunks.
  const int64_t B = 300, T = 40, I = 6, H = 17;
  uint64_t seed = 3000;
  for (RnnCell cell : kCells) {
    const DType d = DType::f32;
    Layer l = make_layer(cell, B, T, I, H, d, true, true, seed += 10);
    Layer g = dev(l);
    Tensor dy = rand_cpu({B, T, H}, seed + 9, d);
    RnnForward fc = kernels::rnn_forward(cell, l.x, l.w_ih, l.w_hh, l.b_ih, l.b_hh);
    RnnForward fg = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh);
    compare_forward(fg, fc, forward_tol(d), label(cell, d, B, T, I, H));
    RnnGrads gc = kernels::rnn_backward(cell, dy, l.x, l.w_ih, l.w_hh, fc, true, true, true, true, true);
    RnnGrads gg = kernels::rnn_backward(cell, dev(dy), g.x, g.w_ih, g.w_hh, fg, true, true, true, true, true);
    compare_grads(gg, gc, backward_tol(d), label(cell, d, B, T, I, H));
  }
}

TEST_CASE("cuda rnn: two runs of the same device forward and backward are bit-identical") {
  SEQLAB_REQUIRE_GPU();
  const int64_t B = 7, T = 37, I = 11, H = 45;
  uint64_t seed = 4000;
  for (RnnCell cell : kCells) {
    Layer g = dev(make_layer(cell, B, T, I, H, DType::f32, true, true, seed += 10));
    Tensor dy = rand_cpu({B, T, H}, seed + 9).to(Device::cuda);
    auto run = [&] {
      RnnForward f = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh);
      RnnGrads gr = kernels::rnn_backward(cell, dy, g.x, g.w_ih, g.w_hh, f, true, true, true, true, true, 8);
      std::vector<std::vector<double>> out;
      for (const Tensor* t : {&f.y, &f.gates, &f.c, &gr.dx, &gr.dw_ih, &gr.dw_hh, &gr.db_ih, &gr.db_hh})
        out.push_back(t->defined() ? t->to_vector() : std::vector<double>());
      return out;
    };
    const auto a = run(), b = run();
    CHECK_MESSAGE(a == b, kernels::rnn_cell_name(cell) << ": two device runs differ");
  }
}

TEST_CASE("cuda rnn: long sequences (the persistent kernels - W_hh in registers) match the CPU") {
  SEQLAB_REQUIRE_GPU();
  // H <= 32 (float64) and H <= 64 (float32) keep each thread's slice of W_hh in registers; T = 500
  // steps in one launch; the backward also in chunks of 128 steps (the state carried across launches).
  uint64_t seed = 6000;
  for (DType d : {DType::f32, DType::f64})
    for (RnnCell cell : kCells) check_layer(cell, d, 5, 500, 7, 24, 128, seed += 10);
  for (RnnCell cell : kCells) check_layer(cell, DType::f32, 4, 300, 6, 64, 77, seed += 10);  // the bench's H
}

TEST_CASE("cuda rnn: hidden sizes with W_hh in shared memory and too large for one block match the CPU") {
  SEQLAB_REQUIRE_GPU();
  // On an H200 (227 KB of shared memory per block): H = 100 float32 holds W_hh in shared memory for
  // all three cells (LSTM 160 KB), float64 for the tanh RNN only (LSTM, GRU: the per-step path);
  // H = 48 float64: shared memory (LSTM 74 KB); H = 300: the per-step path for every cell and dtype.
  uint64_t seed = 7000;
  for (RnnCell cell : kCells) {
    check_layer(cell, DType::f32, 3, 23, 5, 100, 7, seed += 10);
    check_layer(cell, DType::f64, 3, 23, 5, 100, 7, seed += 10);
    check_layer(cell, DType::f64, 5, 41, 5, 48, 9, seed += 10);
    check_layer(cell, DType::f32, 3, 9, 5, 300, 4, seed += 10);
    check_layer(cell, DType::f64, 2, 9, 5, 300, 4, seed += 10);
  }
}

TEST_CASE("cuda rnn: runs with W_hh in shared memory are bit-identical") {
  SEQLAB_REQUIRE_GPU();
  const int64_t B = 9, T = 60, I = 5, H = 100;
  uint64_t seed = 8000;
  for (RnnCell cell : kCells) {
    Layer g = dev(make_layer(cell, B, T, I, H, DType::f32, true, true, seed += 10));
    Tensor dy = rand_cpu({B, T, H}, seed + 9).to(Device::cuda);
    auto run = [&] {
      RnnForward f = kernels::rnn_forward(cell, g.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh);
      RnnGrads gr = kernels::rnn_backward(cell, dy, g.x, g.w_ih, g.w_hh, f, true, true, true, true, true, 16);
      std::vector<std::vector<double>> out;
      for (const Tensor* t : {&f.y, &f.gates, &f.c, &gr.dx, &gr.dw_ih, &gr.dw_hh, &gr.db_ih, &gr.db_hh})
        out.push_back(t->defined() ? t->to_vector() : std::vector<double>());
      return out;
    };
    const auto a = run(), b = run();
    CHECK_MESSAGE(a == b, kernels::rnn_cell_name(cell) << ": two device runs differ");
  }
}

TEST_CASE("cuda rnn: bad shapes and dtypes give the CPU's messages - mixed devices an error") {
  SEQLAB_REQUIRE_GPU();
  const int64_t B = 2, T = 3, I = 4, H = 5;
  for (RnnCell cell : kCells) {
    const int64_t G = kernels::rnn_gate_count(cell);
    Layer l = make_layer(cell, B, T, I, H, DType::f32, true, true, 5000);
    Layer g = dev(l);
    Tensor bad_x = rand_cpu({B, I}, 1), bad_whh = rand_cpu({G * H, H + 1}, 2), bad_wih = rand_cpu({G * H, I + 1}, 3);
    Tensor bad_b = rand_cpu({G * H + 1}, 4), x64 = l.x.to(DType::f64), bad_h0 = rand_cpu({B, H + 1}, 5);
    Tensor c0 = rand_cpu({B, H}, 6);
    auto expect_same = [&](const std::string& what, auto&& call) {
      const std::string cpu = error_of([&] { call(false); });
      const std::string gpu = error_of([&] { call(true); });
      CHECK_MESSAGE(!cpu.empty(), what << ": no error on the CPU");
      CHECK_MESSAGE(gpu == cpu, what << ": cuda says '" << gpu << "', the CPU '" << cpu << "'");
    };
    auto on = [](bool gpu, const Tensor& t) { return gpu ? dev(t) : t; };
    expect_same("2-D input", [&](bool u) {
      kernels::rnn_forward(cell, on(u, bad_x), on(u, l.w_ih), on(u, l.w_hh), on(u, l.b_ih), on(u, l.b_hh));
    });
    expect_same("weight_hh", [&](bool u) {
      kernels::rnn_forward(cell, on(u, l.x), on(u, l.w_ih), on(u, bad_whh), on(u, l.b_ih), on(u, l.b_hh));
    });
    expect_same("weight_ih", [&](bool u) {
      kernels::rnn_forward(cell, on(u, l.x), on(u, bad_wih), on(u, l.w_hh), on(u, l.b_ih), on(u, l.b_hh));
    });
    expect_same("bias", [&](bool u) {
      kernels::rnn_forward(cell, on(u, l.x), on(u, l.w_ih), on(u, l.w_hh), on(u, bad_b), on(u, l.b_hh));
    });
    expect_same("dtype", [&](bool u) {
      kernels::rnn_forward(cell, on(u, x64), on(u, l.w_ih), on(u, l.w_hh), on(u, l.b_ih), on(u, l.b_hh));
    });
    expect_same("h0", [&](bool u) {
      kernels::rnn_forward(cell, on(u, l.x), on(u, l.w_ih), on(u, l.w_hh), on(u, l.b_ih), on(u, l.b_hh),
                           on(u, bad_h0));
    });
    if (cell != RnnCell::lstm)
      expect_same("c0", [&](bool u) {
        kernels::rnn_forward(cell, on(u, l.x), on(u, l.w_ih), on(u, l.w_hh), on(u, l.b_ih), on(u, l.b_hh), Tensor(),
                             on(u, c0));
      });
    expect_same("backward dy", [&](bool u) {
      RnnForward f = kernels::rnn_forward(cell, on(u, l.x), on(u, l.w_ih), on(u, l.w_hh), on(u, l.b_ih), on(u, l.b_hh));
      kernels::rnn_backward(cell, on(u, bad_h0), on(u, l.x), on(u, l.w_ih), on(u, l.w_hh), f, true, true, true, true,
                            true);
    });
    const std::string mixed = error_of([&] { kernels::rnn_forward(cell, l.x, g.w_ih, g.w_hh, g.b_ih, g.b_hh); });
    CHECK_MESSAGE(mixed.find("different devices") != std::string::npos, "mixed devices: '" << mixed << "'");
  }
}

}  // TEST_SUITE
