// The long causal convolution of S4D, S4 and LSSL on the device (core/kernels/long_conv.h's twins,
// same names, shapes, checks and maths). Two methods:
//   direct: one thread per output (b, t, d), the lags in the CPU's order (any float dtype);
//   FFT: cuFFT R2C / C2R (float32 or float64) of an even 2,3,5,7-smooth length n >= 2T - 1, batched
//        over the B*D channel rows; dK sums the B spectra in a fixed order.
// causal_conv_forward / _backward take the direct method for T <= 64 and the FFT beyond, in both
// dtypes (the CPU takes the direct loops for float64); _direct_ and _fft_ force one (the FFT variants
// accept float32 only, as on the CPU).
#pragma once
#include "core/kernels/long_conv.h"
#include "core/tensor.h"

namespace seqlab::cuda {

Tensor causal_conv_forward(const Tensor& u, const Tensor& K);
kernels::ConvGrads causal_conv_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u,
                                        bool need_K);
Tensor causal_conv_direct_forward(const Tensor& u, const Tensor& K);
kernels::ConvGrads causal_conv_direct_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u,
                                               bool need_K);
Tensor causal_conv_fft_forward(const Tensor& u, const Tensor& K);
kernels::ConvGrads causal_conv_fft_backward(const Tensor& dy, const Tensor& u, const Tensor& K, bool need_u,
                                            bool need_K);

}  // namespace seqlab::cuda
