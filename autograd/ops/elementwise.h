// Broadcasting binary ops and scalar ops (NumPy/PyTorch broadcasting rules). Backward reduces the
// output gradient back to each input's shape (sum over broadcast axes).
#pragma once
#include "core/tensor.h"

namespace seqlab {

/// a + b, broadcasting.
Tensor add(const Tensor& a, const Tensor& b);
/// a - b, broadcasting.
Tensor sub(const Tensor& a, const Tensor& b);
/// a * b, broadcasting.
Tensor mul(const Tensor& a, const Tensor& b);
/// a / b, broadcasting.
Tensor div(const Tensor& a, const Tensor& b);
/// -x.
Tensor neg(const Tensor& x);
/// x + s.
Tensor add_scalar(const Tensor& x, double s);
/// x * s.
Tensor mul_scalar(const Tensor& x, double s);
/// x^p (elementwise, real p).
Tensor pow_scalar(const Tensor& x, double p);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& x, double s) { return add_scalar(x, s); }
inline Tensor operator*(const Tensor& x, double s) { return mul_scalar(x, s); }
inline Tensor operator*(double s, const Tensor& x) { return mul_scalar(x, s); }

}  // namespace seqlab
