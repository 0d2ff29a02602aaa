// HiPPO-LegS, a Hermitian Jacobi eigen-solver and the LegS NPLR decomposition (S4, Sec. 3.2).
// The normal part A + p p^T = -1/2 I + S is diagonalised through -i S, which is Hermitian, so the
// eigenvalues are -1/2 + i w with w real, in conjugate pairs (S is real).
#include "core/kernels/hippo.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace seqlab::kernels {

using cd = std::complex<double>;

HippoLegs hippo_legs(int64_t N) {
  SEQLAB_CHECK(N >= 1, "hippo_legs: expected a state size N >= 1, got ", N);
  HippoLegs h;
  h.N = N;
  h.A.assign(static_cast<size_t>(N * N), 0.0);
  h.B.resize(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    h.B[n] = std::sqrt(2.0 * n + 1);
    for (int64_t k = 0; k < n; ++k) h.A[n * N + k] = -std::sqrt(2.0 * n + 1) * std::sqrt(2.0 * k + 1);
    h.A[n * N + n] = -static_cast<double>(n + 1);
  }
  return h;
}

// Each rotation zeroes h_pq: first a phase D = diag(1, e^{-i phi}) makes the (p, q) block real
// symmetric, then a real Jacobi rotation (Rutishauser's stable tangent) diagonalises it.
HermitianEig hermitian_eigh(int64_t n, const std::vector<cd>& H0) {
  SEQLAB_CHECK(n >= 1 && static_cast<int64_t>(H0.size()) == n * n, "hermitian_eigh: expected an n x n matrix");
  std::vector<cd> H = H0, V(static_cast<size_t>(n * n), cd(0, 0));
  for (int64_t i = 0; i < n; ++i) V[i * n + i] = 1.0;
  double total = 0;
  for (const cd& h : H) total += std::norm(h);
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) off += std::norm(H[p * n + q]);
    if (off <= 1e-32 * total || off == 0) break;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        cd hpq = H[p * n + q];
        double r = std::abs(hpq);
        if (r < 1e-300) continue;
        cd ph = std::conj(hpq) / r;  // e^{-i phi}
        double a = H[p * n + p].real(), b = H[q * n + q].real();
        double theta = (b - a) / (2 * r);
        double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        double c = 1 / std::sqrt(t * t + 1), s = t * c;
        // G = D R: G_pp = c, G_pq = s, G_qp = -e^{-i phi} s, G_qq = e^{-i phi} c;  H <- G* H G, V <- V G
        cd gpp = c, gpq = s, gqp = -ph * s, gqq = ph * c;
        for (int64_t k = 0; k < n; ++k) {  // columns
          cd hp = H[k * n + p], hq = H[k * n + q];
          H[k * n + p] = hp * gpp + hq * gqp;
          H[k * n + q] = hp * gpq + hq * gqq;
          cd vp = V[k * n + p], vq = V[k * n + q];
          V[k * n + p] = vp * gpp + vq * gqp;
          V[k * n + q] = vp * gpq + vq * gqq;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows
          cd hp = H[p * n + k], hq = H[q * n + k];
          H[p * n + k] = std::conj(gpp) * hp + std::conj(gqp) * hq;
          H[q * n + k] = std::conj(gpq) * hp + std::conj(gqq) * hq;
        }
        H[p * n + q] = H[q * n + p] = 0.0;
        H[p * n + p] = H[p * n + p].real();
        H[q * n + q] = H[q * n + q].real();
      }
  }
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t i, int64_t j) { return H[i * n + i].real() < H[j * n + j].real(); });
  HermitianEig e;
  e.w.resize(static_cast<size_t>(n));
  e.V.resize(static_cast<size_t>(n * n));
  for (int64_t j = 0; j < n; ++j) {
    e.w[j] = H[idx[j] * n + idx[j]].real();
    for (int64_t k = 0; k < n; ++k) e.V[k * n + j] = V[k * n + idx[j]];
  }
  return e;
}

NplrLegs nplr_legs(int64_t N) {
  SEQLAB_CHECK(N >= 2 && N % 2 == 0 && N <= 512, "nplr_legs: expected an even state size 2 <= N <= 512, got ", N);
  HippoLegs h = hippo_legs(N);
  NplrLegs r;
  r.N = N;
  r.p.resize(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) r.p[n] = std::sqrt(n + 0.5);
  // -i S with S = A + p p^T + 1/2 I (skew-symmetric: the diagonal of A + p p^T is -1/2)
  std::vector<cd> H(static_cast<size_t>(N * N));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < N; ++k) {
      double s = n == k ? 0.0 : h.A[n * N + k] + r.p[n] * r.p[k];
      H[n * N + k] = cd(0, -s);
    }
  HermitianEig e = hermitian_eigh(N, H);
  const int64_t M = N / 2;  // ascending w: the first M have negative imaginary part
  r.Lambda.resize(static_cast<size_t>(M));
  r.P.assign(static_cast<size_t>(M), cd(0, 0));
  r.B.assign(static_cast<size_t>(M), cd(0, 0));
  r.V.resize(static_cast<size_t>(N * M));
  for (int64_t m = 0; m < M; ++m) {
    r.Lambda[m] = cd(-0.5, e.w[m]);
    for (int64_t n = 0; n < N; ++n) {
      cd v = e.V[n * N + m];
      r.V[n * M + m] = v;
      r.P[m] += std::conj(v) * r.p[n];
      r.B[m] += std::conj(v) * h.B[n];
    }
  }
  return r;
}

}  // namespace seqlab::kernels
