// Shape ops: gradchecks in float64, copies against naive index loops (every permutation of a rank-3
// tensor, large enough for the tiled and parallel paths), storage sharing, and error messages.
#include <algorithm>

#include "autograd/ops.h"
#include "core/kernels/shape.h"
#include "ops_testing.h"

using namespace seqlab;
using namespace seqlab::testing;

namespace {

std::vector<double> naive_permute(const Tensor& x, const std::vector<int64_t>& p) {
  const Shape& s = x.shape();
  Shape os(p.size());
  for (size_t i = 0; i < p.size(); ++i) os[i] = s[static_cast<size_t>(p[i])];
  std::vector<int64_t> st = strides_of(s);
  std::vector<double> v = x.to_vector(), r(v.size());
  for (int64_t i = 0; i < x.numel(); ++i) {
    std::vector<int64_t> idx = unravel(i, os);
    int64_t off = 0;
    for (size_t k = 0; k < p.size(); ++k) off += idx[k] * st[static_cast<size_t>(p[k])];
    r[static_cast<size_t>(i)] = v[static_cast<size_t>(off)];
  }
  return r;
}

}  // namespace

TEST_CASE("ops/reshape: gradcheck") {
  for (const Shape& s : std::vector<Shape>{{4, 6}, {-1, 3}, {2, -1, 2}, {24}, {1, 24, 1}})
    CHECK_OP_GRADCHECK("reshape", ([s](const std::vector<Tensor>& in) { return reshape(in[0], s) * 2.0; }),
                       std::vector<Tensor>{gc_input({2, 3, 4}, 1)});
}

TEST_CASE("ops/reshape: shares storage, infers -1") {
  Tensor x = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor y = reshape(x, {3, -1});
  CHECK(y.shape() == Shape{3, 2});
  CHECK(y.shares_storage(x));
  CHECK(reshape(x, {-1}).shape() == Shape{6});
  CHECK(reshape(Tensor::scalar(1), {1, 1}).shape() == Shape{1, 1});
  CHECK(reshape(Tensor::zeros({1, 1}), {}).shape() == Shape{});
}

TEST_CASE("ops/concat: gradcheck") {
  for (int64_t axis : {0, 1, 2, -1}) {
    CAPTURE(axis);
    Shape sa{2, 3, 4}, sb{2, 3, 4}, sc{2, 3, 4};
    const size_t a = static_cast<size_t>(axis < 0 ? axis + 3 : axis);
    sb[a] = 1;
    sc[a] = 2;
    Tensor x = gc_input(sa, 2), y = gc_input(sb, 3), z = gc_input(sc, 4);
    auto f = [axis](const std::vector<Tensor>& in) { return concat(in, axis); };
    CHECK_OP_GRADCHECK("concat", f, (std::vector<Tensor>{x, y, z}));
    CHECK_OP_GRADCHECK("concat", f, (std::vector<Tensor>{x, y.detach(), z}));  // middle one needs no gradient
  }
  CHECK_OP_GRADCHECK("concat", [](const std::vector<Tensor>& in) { return concat(in, 0); },
                     (std::vector<Tensor>{gc_input({3}, 5)}));
}

TEST_CASE("ops/slice: gradcheck") {
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> cases = {
      {0, 0, 1}, {0, 1, 2}, {1, 1, 3}, {2, 0, 4}, {2, 1, 3}, {-1, -3, -1}, {1, -2, 3}, {-2, 0, 3}};
  for (const auto& [axis, s, e] : cases) {
    CAPTURE(axis);
    CAPTURE(s);
    CAPTURE(e);
    CHECK_OP_GRADCHECK("slice", ([axis, s, e](const std::vector<Tensor>& in) { return slice(in[0], axis, s, e); }),
                       std::vector<Tensor>{gc_input({2, 3, 4}, 6)});
  }
}

TEST_CASE("ops/split: gradcheck, with every part used and with one unused") {
  for (int64_t axis : {0, 1, 2, -1}) {
    CAPTURE(axis);
    const size_t a = static_cast<size_t>(axis < 0 ? axis + 3 : axis);
    Shape s{2, 3, 4};
    s[a] = 6;
    const std::vector<int64_t> sizes{1, 3, 0, 2};  // a zero-size part among them
    CHECK_OP_GRADCHECK("split", ([axis, sizes](const std::vector<Tensor>& in) {
                         std::vector<Tensor> p = split(in[0], axis, sizes);
                         return concat({p[1], p[0] * 2.0, p[3] * -1.5, p[2]}, axis);
                       }),
                       std::vector<Tensor>{gc_input(s, 8)});
    CHECK_OP_GRADCHECK("split", ([axis, sizes](const std::vector<Tensor>& in) {
                         std::vector<Tensor> p = split(in[0], axis, sizes);
                         return p[3] * 3.0;  // parts 0 and 1 unused: zeros in the joined gradient
                       }),
                       std::vector<Tensor>{gc_input(s, 9)});
  }
}

TEST_CASE("ops/split: the slices' values, one graph node, the gradient of slices and sums exactly") {
  Tensor x = gc_input({3, 7}, 10);
  const std::vector<Tensor> p = split(x, -1, {2, 4, 1});
  REQUIRE(p.size() == 3);
  for (auto [i, s, e] : std::vector<std::tuple<size_t, int64_t, int64_t>>{{0, 0, 2}, {1, 2, 6}, {2, 6, 7}}) {
    CAPTURE(i);
    CHECK(p[i].shape() == slice(x, 1, s, e).shape());
    CHECK(p[i].to_vector() == slice(x, 1, s, e).to_vector());
    CHECK(p[i].output_nr() == static_cast<int>(i));
  }
  CHECK(p[0].grad_fn() == p[2].grad_fn());
  // The same loss through split and through three slices: the same gradient bits (zeros add exactly).
  auto loss = [](const std::vector<Tensor>& q) { return sum(q[0] * 2.0) + sum(q[1] * q[1]) + sum(q[2] * -3.0); };
  backward(loss(p));
  const std::vector<double> g_split = x.grad().to_vector();
  Tensor x2 = gc_input({3, 7}, 10);
  backward(loss({slice(x2, 1, 0, 2), slice(x2, 1, 2, 6), slice(x2, 1, 6, 7)}));
  CHECK(g_split == x2.grad().to_vector());
}

TEST_CASE("ops/split: bad sizes or axis name what was expected") {
  Tensor x = Tensor::zeros({2, 5});
  CHECK_THROWS_WITH_AS(split(x, 1, {2, 2}),
                       doctest::Contains("split: part sizes summing to 4 (2 parts) along axis 1 of shape (2, 5), "
                                         "expected them to sum to 5"),
                       Error);
  CHECK_THROWS_WITH_AS(split(x, 1, {6, -1}), doctest::Contains("split: part sizes must be >= 0, got -1"), Error);
  CHECK_THROWS_WITH_AS(split(x, 2, {5}), doctest::Contains("split: axis 2 out of range for shape (2, 5)"), Error);
  CHECK_THROWS_WITH_AS(split(x, 0, {}), doctest::Contains("expected them to sum to 2"), Error);
}

TEST_CASE("ops/transpose: gradcheck") {
  for (const auto& [a0, a1] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {0, 2}, {1, 2}, {-1, -2}, {1, 1}})
    CHECK_OP_GRADCHECK("transpose",
                       ([a0, a1](const std::vector<Tensor>& in) { return transpose(in[0], a0, a1); }),
                       std::vector<Tensor>{gc_input({2, 3, 4}, 7)});
}

TEST_CASE("ops/flip: gradcheck, and it reverses exactly one axis") {
  for (int64_t axis : {0, 1, 2, -1})
    CHECK_OP_GRADCHECK("flip", ([axis](const std::vector<Tensor>& in) { return flip(in[0], axis); }),
                       std::vector<Tensor>{gc_input({2, 3, 4}, 10)});
  Tensor x = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {2, 3, 2});
  CHECK(flip(x, 1).to_vector() == std::vector<double>{4, 5, 2, 3, 0, 1, 10, 11, 8, 9, 6, 7});
  CHECK(flip(x, 0).to_vector() == std::vector<double>{6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5});
  CHECK(flip(x, -1).to_vector() == std::vector<double>{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10});
  CHECK(flip(flip(x, 1), 1).to_vector() == x.to_vector());
  CHECK_THROWS_WITH_AS(flip(x, 3), doctest::Contains("flip: axis 3 out of range"), Error);
}

TEST_CASE("ops/permute: gradcheck") {
  for (const auto& p : std::vector<std::vector<int64_t>>{{2, 0, 1}, {1, 2, 0}, {1, 0, 2}, {0, 1, 2}, {-1, 0, -2}})
    CHECK_OP_GRADCHECK("permute", ([p](const std::vector<Tensor>& in) { return permute(in[0], p); }),
                       std::vector<Tensor>{gc_input({2, 3, 4}, 8)});
  CHECK_OP_GRADCHECK("permute", [](const std::vector<Tensor>& in) { return permute(in[0], {3, 1, 0, 2}); },
                     std::vector<Tensor>{gc_input({2, 1, 3, 2}, 9)});
}

TEST_CASE("kernels/permute: every permutation matches naive index loops") {
  for (DType dt : {DType::f32, DType::f64, DType::i32}) {
    Generator g(10);
    Tensor x = dt == DType::i32 ? Tensor::empty({60, 50, 101}, dt) : randn({60, 50, 101}, 0, 1, dt, g);
    if (dt == DType::i32)
      for (int32_t i = 0; i < x.numel(); ++i) x.data<int32_t>()[i] = i;
    std::vector<int64_t> p{0, 1, 2};
    do {
      CAPTURE(p[0]);
      CAPTURE(p[1]);
      CAPTURE(p[2]);
      Tensor y = kernels::permute(x, p);
      CHECK(y.shape() == Shape{x.shape()[size_t(p[0])], x.shape()[size_t(p[1])], x.shape()[size_t(p[2])]});
      CHECK_CLOSE(y, naive_permute(x, p), 0, 0);
    } while (std::next_permutation(p.begin(), p.end()));
    Tensor m = randn({600, 501}, 0, 1, DType::f32, g);
    CHECK_CLOSE(kernels::transpose(m, 0, 1), naive_permute(m, {1, 0}), 0, 0);
    Tensor w = randn({3, 1, 200, 1, 500}, 0, 1, DType::f64, g);  // size-1 axes and a 4-D outer loop
    CHECK_CLOSE(kernels::permute(w, {4, 1, 0, 3, 2}), naive_permute(w, {4, 1, 0, 3, 2}), 0, 0);
    CHECK_CLOSE(kernels::permute(w, {1, 0, 2, 4, 3}), naive_permute(w, {1, 0, 2, 4, 3}), 0, 0);
  }
}

TEST_CASE("kernels/slice and concat: match naive loops") {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator g(11);
    Tensor x = randn({30, 100, 101}, 0, 1, dt, g);
    std::vector<double> v = x.to_vector();
    // Slice along the middle axis, then put it back with slice_backward.
    Tensor s = kernels::slice(x, 1, 10, 70);
    std::vector<double> e;
    for (int64_t a = 0; a < 30; ++a)
      for (int64_t k = 10; k < 70; ++k)
        for (int64_t b = 0; b < 101; ++b) e.push_back(v[static_cast<size_t>((a * 100 + k) * 101 + b)]);
    CHECK(s.shape() == Shape{30, 60, 101});
    CHECK_CLOSE(s, e, 0, 0);
    std::vector<double> back(v.size(), 0.0);
    for (int64_t a = 0; a < 30; ++a)
      for (int64_t k = 10; k < 70; ++k)
        for (int64_t b = 0; b < 101; ++b)
          back[static_cast<size_t>((a * 100 + k) * 101 + b)] = v[static_cast<size_t>((a * 100 + k) * 101 + b)];
    CHECK_CLOSE(kernels::slice_backward(s, x.shape(), 1, 10), back, 0, 0);
    // Concatenating the three slices of an axis rebuilds the tensor.
    for (int64_t axis : {0, 1, 2}) {
      CAPTURE(axis);
      const int64_t n = x.shape()[static_cast<size_t>(axis)];
      Tensor y = kernels::concat({kernels::slice(x, axis, 0, 7), kernels::slice(x, axis, 7, 7),
                                  kernels::slice(x, axis, 7, n - 3), kernels::slice(x, axis, -3, n)},
                                 axis);
      CHECK(y.shape() == x.shape());
      CHECK_CLOSE(y, v, 0, 0);
    }
  }
}

TEST_CASE("ops/shape: errors name the op and the shapes") {
  Tensor x = Tensor::zeros({2, 3});
  std::string m = error_of([&] { reshape(x, {4, -1}); });
  CHECK(m.find("reshape") != std::string::npos);
  CHECK(m.find("(2, 3)") != std::string::npos);
  CHECK(m.find("(4, -1)") != std::string::npos);
  CHECK_THROWS_AS(reshape(x, {5}), Error);
  CHECK_THROWS_AS(reshape(x, {-1, -1}), Error);
  CHECK_THROWS_AS(reshape(x, {-2, 3}), Error);
  m = error_of([&] { concat({x, Tensor::zeros({3, 3})}, 1); });
  CHECK(m.find("concat") != std::string::npos);
  CHECK(m.find("(3, 3)") != std::string::npos);
  CHECK_THROWS_AS(concat({x, Tensor::zeros({2, 3, 1})}, 0), Error);
  CHECK_THROWS_AS(concat({x, Tensor::zeros({2, 3}, DType::f64)}, 0), Error);
  CHECK_THROWS_AS(concat({}, 0), Error);
  CHECK_THROWS_AS(concat({x}, 2), Error);
  m = error_of([&] { slice(x, 1, 2, 5); });
  CHECK(m.find("slice") != std::string::npos);
  CHECK(m.find("(2, 3)") != std::string::npos);
  CHECK_THROWS_AS(slice(x, 2, 0, 1), Error);
  CHECK_THROWS_AS(slice(x, 0, 2, 1), Error);
  CHECK_THROWS_AS(transpose(x, 0, 2), Error);
  m = error_of([&] { permute(x, {0, 0}); });
  CHECK(m.find("permute") != std::string::npos);
  CHECK_THROWS_AS(permute(x, {0}), Error);
  CHECK_THROWS_AS(permute(x, {0, 2}), Error);
}
