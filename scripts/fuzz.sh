#!/usr/bin/env bash
# Fuzzes the CSV reader and the config loader with libFuzzer for SECONDS each (default 60):
#   scripts/fuzz.sh [SECONDS]
# The code under test (data/series.cpp, apps/config*.cpp) and the targets in fuzz/ are compiled with
# clang++ -fsanitize=fuzzer,address,undefined into build/fuzz; the rest of seqlab (core, autograd,
# layers) is linked from the release tree (SEQLAB_RELEASE_DIR, default build/release; built here if
# needed), uninstrumented: Debian's clang 14 cannot compile all of core (it lacks C++20 lambda
# captures of structured bindings). Each target runs on its seed corpus (fuzz/corpus/<target>) plus
# what earlier runs found (build/fuzz/corpus/<target>). A crash fails the script and leaves the
# input in build/fuzz/artifacts/: make it a case in tests/bad_inputs (README.md there) and fix it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
release=${SEQLAB_RELEASE_DIR:-build/release}
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
if [ ! -f "$release/build.ninja" ]; then cmake --preset release >/dev/null; fi
cmake --build "$release" --target seqlab_layers seqlab_data >/dev/null

out=build/fuzz
mkdir -p "$out/artifacts"
cxx=(clang++ -std=c++20 -O1 -g1 -march=native -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
     -fno-omit-frame-pointer -I. -I/usr/include/hdf5/serial -I/usr/include/x86_64-linux-gnu/openblas-pthread)
libs=("$release/layers/libseqlab_layers.a" "$release/autograd/libseqlab_autograd.a" "$release/core/libseqlab_core.a"
      -L/usr/lib/x86_64-linux-gnu/hdf5/serial -lhdf5 -ltbb -lopenblas -lpthread)
# A release tree built with the CUDA backend (docs/GPU.md): core needs the CUDA runtime libraries too.
if grep -q '^SEQLAB_CUDA:BOOL=ON' "$release/CMakeCache.txt"; then
  cudalib=$(dirname "$(sed -n 's/^CUDA_cudart_LIBRARY:FILEPATH=//p' "$release/CMakeCache.txt")")
  libs+=(-L"$cudalib" -Wl,-rpath,"$cudalib" -lcudart -lcublas -lcufft)
fi
build() {  # target sources...
  local target=$1; shift
  if [ ! -x "$out/$target" ] || [ -n "$(find "$@" "$release/core/libseqlab_core.a" -newer "$out/$target" 2>/dev/null)" ]; then
    echo "fuzz: building $out/$target"
    "${cxx[@]}" -o "$out/$target" "$@" "${libs[@]}"
  fi
}
build fuzz_csv fuzz/fuzz_csv.cpp data/series.cpp &
build fuzz_config fuzz/fuzz_config.cpp apps/config.cpp apps/config_toml.cpp apps/config_write.cpp &
wait %1 && wait %2

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for target in csv config; do
  mkdir -p "$out/corpus/$target"
  echo "fuzz: fuzz_$target for ${seconds}s"
  # The config target checks [data] path = data/ETTh1.csv by default: it runs from the repository root.
  if ! "$out/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
      -print_final_stats=1 -artifact_prefix="$out/artifacts/$target-" \
      "$out/corpus/$target" "fuzz/corpus/$target" 2> "$out/fuzz_$target.log"; then
    status=1
    echo "fuzz: fuzz_$target FAILED; the input is in $out/artifacts/, the report:" >&2
    grep -A30 -m1 -E "ERROR|runtime error|deadly signal|uncaught" "$out/fuzz_$target.log" >&2 || tail -40 "$out/fuzz_$target.log" >&2
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$out/fuzz_$target.log" | sed "s/^/fuzz: $target /"
  fi
done
exit $status
