#!/usr/bin/env bash
# Installs the build tree at $1 into a temporary prefix, builds examples/custom_layer against it
# with find_package(seqlab), and runs it: it registers its own layer type and trains from a config
# (examples/custom_layer/short_conv.toml) that names it.
set -euo pipefail
build=$(realpath "$1")
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
# A sanitized tree (the asan preset) installs instrumented libraries: the example needs the runtimes.
sanitize=()
if grep -q '^SEQLAB_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  sanitize=(-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined)
fi
cmake -S "$src/examples/custom_layer" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/prefix" "${sanitize[@]}" >/dev/null
cmake --build "$work/build" -j2 >/dev/null
"$work/build/custom_layer" "$src/examples/custom_layer/short_conv.toml" "$work/run"
test -f "$work/run/metrics.h5" && test -f "$work/run/checkpoint-best.h5"
