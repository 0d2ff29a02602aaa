// HiPPO-LegS (Gu et al. 2020, "HiPPO: Recurrent Memory with Optimal Polynomial Projections") and its
// normal-plus-low-rank (NPLR / DPLR) form used by S4 (Gu, Goel, Ré 2022, Sec. 3.2 and state-spaces
// `nplr`): A = V Λ V* - P P^T with A + P P^T = -1/2 I + S, S skew-symmetric, diagonalised here by a
// small cyclic Jacobi eigen-solver on the Hermitian matrix -i S (no LAPACK dependency).
// Glossary: N state size, M = N/2 conjugate pairs kept.
#pragma once
#include <complex>
#include <cstdint>
#include <vector>

namespace seqlab::kernels {

/// HiPPO-LegS transition: A (N x N, row-major), B (N).
struct HippoLegs {
  int64_t N = 0;
  std::vector<double> A, B;  // A_nk = -sqrt(2n+1)sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); B_n = sqrt(2n+1)
};
/// Builds the LegS A and B of size N >= 1.
HippoLegs hippo_legs(int64_t N);

/// Eigen-decomposition of a Hermitian n x n matrix H (row-major): H = V diag(w) V*, w ascending,
/// V unitary (column j is the eigenvector of w[j]). Cyclic Jacobi with complex rotations.
struct HermitianEig {
  std::vector<double> w;
  std::vector<std::complex<double>> V;  // n x n, row-major
};
HermitianEig hermitian_eigh(int64_t n, const std::vector<std::complex<double>>& H);

/// LegS in DPLR form, half of each conjugate pair (the eigenvalues with negative imaginary part, as
/// state-spaces `nplr`): Lambda (M), P = V* p and B = V* b (M) in the eigenbasis, V (N x M), with the
/// real rank-1 factor p_n = sqrt(n + 1/2). A = 2 Re(V diag(Lambda) V*) - p p^T.
struct NplrLegs {
  int64_t N = 0;
  std::vector<std::complex<double>> Lambda, P, B, V;
  std::vector<double> p;
};
/// N even, 2 <= N <= 512.
NplrLegs nplr_legs(int64_t N);

}  // namespace seqlab::kernels
