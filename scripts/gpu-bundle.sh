#!/usr/bin/env bash
# Packs seqlab for a GPU machine that has CUDA but not seqlab's other libraries (the H200 machine of
# docs/GPU.md: no TBB, no apt): builds build/portable (no -march=native, no MPI, CUDA on), then puts
# seqlab, the test binaries and every shared library they need except the C/C++ runtime and CUDA's
# into build/devkit.tar.xz. On that machine, in a copy of this source tree:
#     scripts/gpu-run.sh COMMAND...   (unpacks the bundle, sets LD_LIBRARY_PATH, runs COMMAND)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build/portable -G Ninja -DCMAKE_BUILD_TYPE=Release -DSEQLAB_NATIVE=OFF -DSEQLAB_MPI=OFF -DSEQLAB_CUDA=ON \
  >/dev/null
cmake --build build/portable -j2 --target seqlab seqlab_tests seqlab_cuda_tests bench_scan_cuda
rm -rf build/devkit
mkdir -p build/devkit/bin build/devkit/lib
cp build/portable/seqlab build/portable/tests/seqlab_tests build/portable/tests/seqlab_cuda_tests \
  build/portable/bench_scan_cuda build/devkit/bin/
for lib in $(ldd build/devkit/bin/* | awk '/=> \// {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libc.so* | libm.so* | libresolv* | libnss* | libstdc++* | libgcc_s* | ld-linux* | libpthread* | libdl.so* | librt.so* | libcuda* | \
      libcublas* | libcufft* | libcudart* | libnvJitLink* | libnvrtc*) ;;
    *) cp -L "$lib" build/devkit/lib/ ;;
  esac
done
pwd > build/devkit/source_dir  # the tests hold paths into the tree they were built in
(cd build && tar cJf devkit.tar.xz devkit)
ls -l build/devkit.tar.xz
