#!/usr/bin/env bash
# On the GPU machine, in a copy of this source tree holding build/devkit.tar.xz (scripts/gpu-bundle.sh):
# unpacks it, puts the binaries where the tests expect them (build/portable, as configured here, and
# the tree at the path it was built in) and runs the command with the bundled libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
tar xJf build/devkit.tar.xz -C /tmp
built_in=$(cat /tmp/devkit/source_dir)
if [ "$built_in" != "$src" ] && [ ! -e "$built_in" ]; then
  mkdir -p "$(dirname "$built_in")" && ln -sfn "$src" "$built_in"
fi
mkdir -p build/portable/tests
cp /tmp/devkit/bin/seqlab /tmp/devkit/bin/bench_scan_cuda build/portable/
cp /tmp/devkit/bin/seqlab_tests /tmp/devkit/bin/seqlab_cuda_tests build/portable/tests/
export LD_LIBRARY_PATH=/tmp/devkit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec "$@"
