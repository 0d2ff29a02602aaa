#!/usr/bin/env bash
# Compiles the given CUDA (.cu) or test (.cpp) files on their own, with the CUDA build's flags, without
# the whole build: the quick check while writing a kernel. Needs nvcc (PATH or /usr/local/cuda/bin).
# Usage: scripts/cuda-check.sh core/cuda/scan.cu tests/cuda/test_cuda_scan.cpp
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "$@"; do
  case "$f" in
    *.cu) "$nvcc" -std=c++20 -O3 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo \
            -Xptxas -warn-spills -I. -DSEQLAB_WITH_CUDA -c "$f" -o "$out/x.o" ;;
    *.cpp) g++ -std=c++20 -fsyntax-only -Wall -Wextra -I. -DSEQLAB_WITH_CUDA -I/usr/local/cuda/include "$f" ;;
    *) echo "cuda-check: $f is neither .cu nor .cpp" >&2; exit 2 ;;
  esac
  echo "cuda-check: $f ok"
done
