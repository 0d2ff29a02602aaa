#!/usr/bin/env bash
# One batch of GPU work on the device machine (run through scripts/gpu-run.sh): what docs/GPU.md's
# figures come from. Writes logs to $OUT (or /tmp/gpu-out). Parts: tests, compare, bench (default all).
set -uo pipefail
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
parts=${*:-tests compare bench}
bin=build/portable/seqlab
nvidia-smi -L
$bin info | tail -4
for part in $parts; do
  case $part in
    tests)
      timeout 300 build/portable/tests/seqlab_cuda_tests -d >"$out/cuda_tests.log" 2>&1
      echo "cuda tests: rc=$?"
      grep -E "^\[doctest\] (test cases|assertions)|ERROR|FAILED|Status" "$out/cuda_tests.log" | head -60 ;;
    compare)
      # cuda twice (a GPU run is bit-identical to itself), then the CPU at the same seed.
      for run in cuda cuda_again cpu; do
        dev=${run%_again}
        t0=$(date +%s%N)
        timeout 400 $bin --log-level warn compare configs/etth1_compare.toml --set train.device="\"$dev\"" \
          --set output.dir="\"runs/gpu_compare_$run\"" >"$out/compare_$run.log" 2>&1
        echo "compare $run: rc=$? wall $((($(date +%s%N) - t0) / 1000000)) ms"
        cp runs/gpu_compare_$run/results.csv "$out/compare_$run.csv" 2>/dev/null
        tail -9 "$out/compare_$run.log"
      done
      cut -d, -f1,7-9 "$out/compare_cuda.csv" > /tmp/a; cut -d, -f1,7-9 "$out/compare_cuda_again.csv" > /tmp/b
      cmp -s /tmp/a /tmp/b && echo "compare: the two cuda runs have identical val/test figures" \
        || { echo "compare: the two cuda runs differ"; diff /tmp/a /tmp/b; } ;;
    bench)
      timeout 300 $bin bench --device cuda --models lstm,transformer,s4d,mamba --seq-lens 96,720,2880,8192 \
        --steps 10 --warmup 3 --csv "$out/bench_cuda.csv" >"$out/bench_cuda.log" 2>&1
      echo "bench: rc=$?"
      cat "$out/bench_cuda.log" | tail -22 ;;
  esac
done
