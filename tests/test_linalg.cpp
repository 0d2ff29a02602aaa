// matmul and linear: float64 gradchecks over every transpose flag and batched / shared form, the
// GEMM kernels against naive loops in float32 and float64 (sizes that take the TBB-split paths),
// and the shape errors.
#include <string>
#include <vector>

#include "autograd/node.h"
#include "autograd/ops/linalg.h"
#include "core/kernels/matmul.h"
#include "core/parallel.h"
#include "core/random.h"
#include "testing.h"

using namespace seqlab;

namespace {

// Stored shape of an operand whose op() is (r, c): transposed operands are stored (c, r).
Shape stored(Shape lead, int64_t r, int64_t c, bool t) {
  lead.push_back(t ? c : r);
  lead.push_back(t ? r : c);
  return lead;
}

// Naive op(a_i) @ op(b_i) in double; b shared when stride_b == 0.
std::vector<double> naive_matmul(const std::vector<double>& a, const std::vector<double>& b, int64_t L, int64_t M,
                                 int64_t N, int64_t K, bool ta, bool tb, bool shared_b) {
  std::vector<double> c(static_cast<size_t>(L * M * N), 0.0);
  for (int64_t l = 0; l < L; ++l) {
    const double* al = a.data() + l * M * K;
    const double* bl = b.data() + (shared_b ? 0 : l * K * N);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += (ta ? al[k * M + i] : al[i * K + k]) * (tb ? bl[j * K + k] : bl[k * N + j]);
        c[static_cast<size_t>(l * M * N + i * N + j)] = s;
      }
  }
  return c;
}

// Transposes each of L stored (r, c) matrices.
std::vector<double> transpose(const std::vector<double>& x, int64_t L, int64_t r, int64_t c) {
  std::vector<double> y(x.size());
  for (int64_t l = 0; l < L; ++l)
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) y[static_cast<size_t>(l * r * c + j * r + i)] = x[static_cast<size_t>(l * r * c + i * c + j)];
  return y;
}

// Checks matmul_forward / matmul_backward against naive loops for one configuration.
void check_kernel(DType dt, Shape lead, int64_t M, int64_t N, int64_t K, bool ta, bool tb, bool shared_b) {
  CAPTURE(to_string(lead));
  CAPTURE(M);
  CAPTURE(N);
  CAPTURE(K);
  CAPTURE(ta);
  CAPTURE(tb);
  CAPTURE(shared_b);
  int64_t L = numel(lead);
  Generator gen(7);
  Tensor a = randn(stored(lead, M, K, ta), 0, 1, dt, gen);
  Tensor b = randn(stored(shared_b ? Shape{} : lead, K, N, tb), 0, 1, dt, gen);
  double tol = dt == DType::f32 ? 1e-4 : 1e-11;
  double atol = dt == DType::f32 ? 1e-3 * std::sqrt(static_cast<double>(K)) : 1e-10;
  Tensor y = kernels::matmul_forward(a, b, ta, tb);
  CHECK_CLOSE(y, naive_matmul(a.to_vector(), b.to_vector(), L, M, N, K, ta, tb, shared_b), tol, atol);

  // Backward: op(a) gradient = dy op(b)^T, op(b) gradient = op(a)^T dy (summed when shared).
  Tensor dy = randn(y.shape(), 0, 1, dt, gen);
  auto [da, db] = kernels::matmul_backward(dy, a, b, a.shape(), b.shape(), ta, tb, true, true);
  std::vector<double> av = a.to_vector(), bv = b.to_vector(), gv = dy.to_vector();
  std::vector<double> opa = ta ? transpose(av, L, K, M) : av;                    // (L, M, K)
  std::vector<double> opb = tb ? transpose(bv, shared_b ? 1 : L, N, K) : bv;     // (L or 1, K, N)
  std::vector<double> dopa = naive_matmul(gv, opb, L, M, K, N, false, true, shared_b);  // (L, M, K)
  CHECK_CLOSE(da, ta ? transpose(dopa, L, M, K) : dopa, tol, atol * std::sqrt(static_cast<double>(N)));
  std::vector<double> dopb(static_cast<size_t>(K * N * (shared_b ? 1 : L)), 0.0);
  for (int64_t l = 0; l < L; ++l) {
    std::vector<double> al(opa.begin() + l * M * K, opa.begin() + (l + 1) * M * K);
    std::vector<double> gl(gv.begin() + l * M * N, gv.begin() + (l + 1) * M * N);
    std::vector<double> p = naive_matmul(al, gl, 1, K, N, M, true, false, false);
    for (size_t i = 0; i < p.size(); ++i) dopb[(shared_b ? 0 : static_cast<size_t>(l * K * N)) + i] += p[i];
  }
  CHECK_CLOSE(db, tb ? transpose(dopb, shared_b ? 1 : L, K, N) : dopb, tol,
              atol * std::sqrt(static_cast<double>(M * L)));
}

Tensor rnd(const Shape& s, uint64_t seed) {
  Generator gen(seed);
  return randn(s, 0, 1, DType::f64, gen).set_requires_grad();
}

}  // namespace

TEST_CASE("ops/matmul: gradcheck, 2-D, every transpose flag") {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      Tensor a = rnd(stored({}, 3, 4, ta), 1), b = rnd(stored({}, 4, 5, tb), 2);
      CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); },
                      (std::vector<Tensor>{a, b}));
    }
}

TEST_CASE("ops/matmul: gradcheck, batched and shared matrix, every transpose flag") {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      Tensor a = rnd(stored({2, 3}, 3, 4, ta), 3), b = rnd(stored({2, 3}, 4, 2, tb), 4);
      CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); },
                      (std::vector<Tensor>{a, b}));
      Tensor bs = rnd(stored({}, 4, 2, tb), 5);
      CHECK_GRADCHECK([&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); },
                      (std::vector<Tensor>{a, bs}));
    }
}

TEST_CASE("ops/matmul: gradcheck with only one operand requiring grad") {
  Tensor a = rnd({2, 3, 4}, 6), b = rnd({4, 5}, 7);
  Tensor a0 = a.detach(), b0 = b.detach();
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, (std::vector<Tensor>{a, b0}));
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, (std::vector<Tensor>{a0, b}));
}

TEST_CASE("kernels/matmul: matches naive loops, float32 and float64, small and TBB-split sizes") {
  REQUIRE(num_threads() >= 1);
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dt));
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        check_kernel(dt, {}, 5, 7, 3, ta, tb, false);
        check_kernel(dt, {}, 130, 97, 110, ta, tb, false);  // > 2^20 multiply-adds: split into row blocks
        check_kernel(dt, {}, 8, 2100, 70, ta, tb, false);   // few rows, many columns: column blocks
        check_kernel(dt, {2, 3}, 4, 5, 6, ta, tb, false);   // batched, small
        check_kernel(dt, {3}, 70, 90, 80, ta, tb, false);   // batched, blocks per product
        check_kernel(dt, {2, 3}, 4, 5, 6, ta, tb, true);    // shared b, small
        check_kernel(dt, {3}, 70, 90, 80, ta, tb, true);    // shared b: one GEMM (ta = false) or a summed batch
      }
    check_kernel(dt, {9}, 60, 50, 80, false, false, false);  // more products than threads: one task each
    check_kernel(dt, {}, 6, 0, 4, false, false, false);      // empty output
    check_kernel(dt, {}, 3, 4, 0, false, true, false);       // empty inner axis: zeros
    check_kernel(dt, {0}, 3, 4, 5, false, false, true);      // empty batch: shared gradient is zero
  }
}

TEST_CASE("kernels/matmul: gemm accumulates with beta and column_sum matches naive") {
  for (DType dt : {DType::f64, DType::f32}) {
    Generator gen(3);
    Tensor a = randn({150, 120}, 0, 1, dt, gen), b = randn({120, 140}, 0, 1, dt, gen), c = randn({150, 140}, 0, 1, dt, gen);
    std::vector<double> ref = naive_matmul(a.to_vector(), b.to_vector(), 1, 150, 140, 120, false, false, false);
    std::vector<double> c0 = c.to_vector();
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += 0.5 * c0[i];
    dispatch_float(dt, "test", [&]<typename T>() {
      kernels::gemm<T>(false, false, 150, 140, 120, a.data<T>(), b.data<T>(), T(0.5), c.data<T>());
    });
    if (dt == DType::f64) CHECK_CLOSE(c, ref, 1e-12, 1e-12);
    else CHECK_CLOSE(c, ref, 1e-5, 1e-5 * std::sqrt(120.0));

    Tensor x = randn({1000, 37}, 0, 1, dt, gen);
    std::vector<double> xv = x.to_vector(), sum(37, 0.0);
    for (int64_t r = 0; r < 1000; ++r)
      for (int64_t j = 0; j < 37; ++j) sum[static_cast<size_t>(j)] += xv[static_cast<size_t>(r * 37 + j)];
    CHECK_CLOSE(kernels::column_sum(x, 37), sum, 1e-5, 1e-4);
  }
}

// The split-K path computes every weight gradient in training (inner axis = the batch's rows).
TEST_CASE("kernels/matmul: split-K gemm (large inner axis) matches naive loops, every transpose, with beta") {
  struct Dims {
    int64_t M, N, K;
  };
  for (Dims d : {Dims{64, 48, 4096}, Dims{7, 33, 20000}, Dims{128, 128, 2048}}) {
    CAPTURE(d.M);
    CAPTURE(d.N);
    CAPTURE(d.K);
    REQUIRE(kernels::gemm_k_blocks(d.M, d.N, d.K) > 1);  // the shape takes the split-K path
    for (DType dt : {DType::f64, DType::f32})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (double beta : {0.0, 0.5}) {
            CAPTURE(ta);
            CAPTURE(tb);
            CAPTURE(beta);
            Generator gen(11);
            Tensor a = randn(stored({}, d.M, d.K, ta), 0, 1, dt, gen), b = randn(stored({}, d.K, d.N, tb), 0, 1, dt, gen);
            Tensor c = randn({d.M, d.N}, 0, 1, dt, gen);
            std::vector<double> ref = naive_matmul(ta ? transpose(a.to_vector(), 1, d.K, d.M) : a.to_vector(),
                                                   tb ? transpose(b.to_vector(), 1, d.N, d.K) : b.to_vector(), 1, d.M,
                                                   d.N, d.K, false, false, false);
            std::vector<double> c0 = c.to_vector();
            for (size_t i = 0; i < ref.size(); ++i) ref[i] += beta * c0[i];
            if (beta == 0.0) c.fill(std::nan(""));  // beta 0 must never read c
            dispatch_float(dt, "test", [&]<typename T>() {
              kernels::gemm<T>(ta, tb, d.M, d.N, d.K, a.data<T>(), b.data<T>(), T(beta), c.data<T>());
            });
            const double sk = std::sqrt(static_cast<double>(d.K));
            if (dt == DType::f64) CHECK_CLOSE(c, ref, 1e-12, 1e-13 * sk);
            else CHECK_CLOSE(c, ref, 1e-5, 2e-6 * sk);
          }
  }
}

TEST_CASE("ops/linear: gradcheck with and without bias") {
  for (Shape xs : {Shape{4}, Shape{3, 4}, Shape{2, 3, 4}}) {
    CAPTURE(to_string(xs));
    Tensor x = rnd(xs, 8), w = rnd({5, 4}, 9), b = rnd({5}, 10);
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                    (std::vector<Tensor>{x, w, b}));
    CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, (std::vector<Tensor>{x, w}));
  }
  // Only the weight, only the input.
  Tensor x = rnd({3, 4}, 11), w = rnd({2, 4}, 12), b = rnd({2}, 13);
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                  (std::vector<Tensor>{x.detach(), w, b.detach()}));
  CHECK_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                  (std::vector<Tensor>{x, w.detach(), b.detach()}));
}

TEST_CASE("kernels/linear: matches naive loops, float32 and float64, TBB-split sizes") {
  for (DType dt : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dt));
    Generator gen(5);
    const int64_t B = 4, T = 75, in = 96, out = 80;  // 300 rows: forward and dx split, dw split by rows
    Tensor x = randn({B, T, in}, 0, 1, dt, gen), w = randn({out, in}, 0, 1, dt, gen), b = randn({out}, 0, 1, dt, gen);
    std::vector<double> ref = naive_matmul(x.to_vector(), w.to_vector(), 1, B * T, out, in, false, true, false);
    std::vector<double> bv = b.to_vector();
    for (int64_t r = 0; r < B * T; ++r)
      for (int64_t j = 0; j < out; ++j) ref[static_cast<size_t>(r * out + j)] += bv[static_cast<size_t>(j)];
    Tensor y = kernels::linear_forward(x, w, b);
    CHECK(y.shape() == Shape{B, T, out});
    double tol = dt == DType::f32 ? 1e-4 : 1e-11, atol = dt == DType::f32 ? 1e-3 : 1e-10;
    CHECK_CLOSE(y, ref, tol, atol);

    Tensor dy = randn({B, T, out}, 0, 1, dt, gen);
    auto [dx, dw, db] = kernels::linear_backward(dy, x, w, true, true, true);
    CHECK_CLOSE(dx, naive_matmul(dy.to_vector(), w.to_vector(), 1, B * T, in, out, false, false, false), tol, atol);
    CHECK_CLOSE(dw, naive_matmul(dy.to_vector(), x.to_vector(), 1, out, in, B * T, true, false, false), tol,
                atol * 20);
    std::vector<double> dbr(static_cast<size_t>(out), 0.0), gv = dy.to_vector();
    for (int64_t r = 0; r < B * T; ++r)
      for (int64_t j = 0; j < out; ++j) dbr[static_cast<size_t>(j)] += gv[static_cast<size_t>(r * out + j)];
    CHECK_CLOSE(db, dbr, tol, atol * 20);
  }
}

TEST_CASE("kernels/linear and matmul: float32 results are bit-identical at 1, 2 and 3 threads") {
  // Blocks depend on the sizes alone. B = 11, T = 37, D = 40 once gave other bits at 2 threads (the
  // dw GEMM cut by rows into thread-count blocks hit OpenBLAS's edge tiles); 300 x 200 x 250 is split.
  struct Case {
    int64_t B, T, in, out;
  };
  for (Case c : {Case{11, 37, 40, 40}, Case{11, 37, 40, 80}, Case{11, 37, 80, 40}, Case{11, 37, 40, 120},
                 Case{4, 75, 96, 80}, Case{32, 96, 64, 256}, Case{32, 96, 256, 64}, Case{7, 50, 33, 70}}) {
    CAPTURE(c.B);
    CAPTURE(c.T);
    CAPTURE(c.in);
    CAPTURE(c.out);
    Generator gen(17);
    Tensor x = randn({c.B, c.T, c.in}, 0, 1, DType::f32, gen), w = randn({c.out, c.in}, 0, 1, DType::f32, gen);
    Tensor b = randn({c.out}, 0, 1, DType::f32, gen), dy = randn({c.B, c.T, c.out}, 0, 1, DType::f32, gen);
    Tensor a2 = randn({300, 200}, 0, 1, DType::f32, gen), b2 = randn({200, 250}, 0, 1, DType::f32, gen);
    Tensor b2t = randn({250, 200}, 0, 1, DType::f32, gen);
    auto run_at = [&](int threads) {
      set_num_threads(threads);
      auto [dx, dw, db] = kernels::linear_backward(dy, x, w, true, true, true);
      std::vector<std::vector<double>> out;
      for (const Tensor& t : {kernels::linear_forward(x, w, b), dx, dw, db, kernels::matmul_forward(a2, b2, false, false),
                              kernels::matmul_forward(a2, b2t, false, true)})
        out.push_back(t.to_vector());
      return out;
    };
    const int prev = num_threads();
    auto one = run_at(1), two = run_at(2), three = run_at(3);
    set_num_threads(prev);
    for (size_t i = 0; i < one.size(); ++i) {
      CAPTURE(i);
      CHECK(one[i] == two[i]);
      CHECK(one[i] == three[i]);
    }
  }
}

TEST_CASE("ops/matmul: results are identical run to run") {
  Tensor a = randn({300, 200}), b = randn({200, 250});
  Tensor y1 = matmul(a, b), y2 = matmul(a, b);
  CHECK(y1.to_vector() == y2.to_vector());
}

TEST_CASE("ops/matmul: shape errors name the op and both shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  CHECK_THROWS_WITH_AS(matmul(a, b), doctest::Contains("matmul: shapes (2, 3) and (4, 5)"), Error);
  CHECK_THROWS_WITH_AS(matmul(a, b, true, false), doctest::Contains("inner sizes 2 and 4 differ"), Error);
  CHECK_NOTHROW(matmul(a, Tensor::zeros({5, 3}), false, true));
  CHECK_THROWS_WITH_AS(matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 4})),
                       doctest::Contains("(2, 2, 3) and (3, 3, 4)"), Error);
  CHECK_THROWS_WITH_AS(matmul(Tensor::zeros({2, 3}), Tensor::zeros({2, 3, 4})),
                       doctest::Contains("matmul: shapes (2, 3) and (2, 3, 4)"), Error);
  CHECK_THROWS_WITH_AS(matmul(Tensor::zeros({3}), Tensor::zeros({3, 4})), doctest::Contains("(3,) and (3, 4)"),
                       Error);
  CHECK_THROWS_AS(matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 4}, DType::f64)), Error);
}

TEST_CASE("ops/linear: shape errors name the op and both shapes") {
  Tensor x = Tensor::zeros({2, 3}), w = Tensor::zeros({4, 5});
  CHECK_THROWS_WITH_AS(linear(x, w), doctest::Contains("linear: input of shape (2, 3)"), Error);
  CHECK_THROWS_WITH_AS(linear(x, w), doctest::Contains("weight of shape (4, 5)"), Error);
  CHECK_THROWS_WITH_AS(linear(x, Tensor::zeros({4, 3}), Tensor::zeros({5})),
                       doctest::Contains("linear: bias of shape (5,) does not fit weight of shape (4, 3)"), Error);
}
