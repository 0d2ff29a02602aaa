#!/usr/bin/env bash
# One batch of GPU work on the device machine (run through scripts/gpu-run.sh): what docs/GPU.md's
# figures come from. Writes logs to $OUT (or /tmp/gpu-out). Parts: tests, compare, bench (default all),
# scan (the scan alone against the official kernel), ncu (profiles of the scan kernels), etth1-alone,
# scan-chunked (the chunk-parallel forward, the default since session 15: its cuda tests, timing beside
# the one-pass tiled forward and the official kernel's cross-check), tf32 (TF32 GEMM rows of both benches, and ETTh1 horizon 96 in TF32 against fp32),
# multi-tensor (the default since session 15: its test and the short-sequence steps with and without);
# scan-chunked-tests and scan-chunked-time: the two halves of scan-chunked; step-profile (the kernels
# of one training step under Nsight Compute: how many, and their GPU time; STEP_PROFILE picks the cases);
# tests-tiled (the whole cuda suite with SEQLAB_SCAN_FWD=tiled: the chunked forward is the default since
# session 15); graph (the training step as one CUDA graph: its tests, eager and replayed steps side by
# side); bf16 (--matmul-precision medium and PyTorch's bfloat16 autocast, ETTh1 h96 against fp32).
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
      timeout ${TESTS_TIMEOUT:-300} build/portable/tests/seqlab_cuda_tests -d >"$out/cuda_tests.log" 2>&1
      echo "cuda tests: rc=$?"
      grep -E "^\[doctest\] (test cases|assertions)|ERROR|FAILED|Status" "$out/cuda_tests.log" | head -60 ;;
    tests-tiled)
      # The whole cuda suite with the one-pass tiled scan forward (SEQLAB_SCAN_FWD=tiled), the path the
      # default chunk-parallel forward replaced in session 15.
      SEQLAB_SCAN_FWD=tiled timeout ${TESTS_TIMEOUT:-300} build/portable/tests/seqlab_cuda_tests -d \
        >"$out/cuda_tests_all_tiled.log" 2>&1
      echo "cuda tests (all) with SEQLAB_SCAN_FWD=tiled: rc=$?"
      grep -E "^\[doctest\] (test cases|assertions)|ERROR|FAILED|Status" "$out/cuda_tests_all_tiled.log" | head -60 ;;
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
    scan)
      # The scan alone: the default backward and the sequential one, then the official kernel on the
      # same inputs (cross-check of outputs and gradients) and at the same sizes (python outside the
      # bundled libraries: torch brings its own).
      timeout 120 build/portable/bench_scan_cuda --dump /tmp/scan_dump --csv "$out/seqlab_scan.csv" \
        >"$out/scan.log" 2>&1
      echo "scan: rc=$?"; tail -6 "$out/scan.log"
      if [ "${SCAN_SEQUENTIAL:-1}" = 1 ]; then
        SEQLAB_SCAN_BWD=sequential timeout 120 build/portable/bench_scan_cuda --csv "$out/seqlab_scan_sequential.csv" \
          >"$out/scan_sequential.log" 2>&1
        echo "scan (sequential backward): rc=$?"; tail -5 "$out/scan_sequential.log"
      fi
      env -u LD_LIBRARY_PATH MAX_JOBS=16 timeout 240 python3 bench/scan_anchor_check.py \
        --anchor-dir .anchors/mamba_ssm_selective_scan --dump /tmp/scan_dump --seqlab-csv "$out/seqlab_scan.csv" \
        --csv "$out/anchor_scan.csv" >"$out/anchor.log" 2>&1
      echo "anchor: rc=$?"; tail -22 "$out/anchor.log" ;;
    ncu)
      # One launch of each backward kernel at L = 8192 under Nsight Compute (where it is installed).
      ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
      if [ -z "$ncu" ]; then echo "ncu: not installed"; continue; fi
      for v in ${NCU_VARIANTS:-chunked sequential}; do
        SEQLAB_SCAN_BWD=$v timeout 120 "$ncu" --kernel-name regex:'scan_bwd|scan_fwd_tiled' --launch-count 4 \
          --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
          build/portable/bench_scan_cuda --reps 1 --warmup 0 8192 >"$out/ncu_$v.log" 2>&1
        echo "ncu $v: rc=$?"
        grep -E '^  [a-z_]+.*\(|Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Shared Memory Config|Block Size|Grid Size|Waves Per SM' \
          "$out/ncu_$v.log" | head -60
      done ;;
    mamba-bench)
      # The Mamba step against PyTorch with the official fused scan, same run (the extension is cached
      # by the scan part's anchor build).
      timeout 100 $bin bench --device cuda --models mamba --seq-lens 96,720,2880,8192 --steps 10 --warmup 3 \
        --csv "$out/bench_mamba.csv" >"$out/bench_mamba.log" 2>&1
      echo "mamba bench: rc=$?"; grep -E '^model|^mamba' "$out/bench_mamba.log"
      env -u LD_LIBRARY_PATH MAX_JOBS=16 timeout 120 python3 bench/pytorch_reference.py --device cuda --models mamba \
        --seq-lens 96,720,2880,8192 --mamba-scan fused --steps 10 --warmup 3 --max-seconds 30 \
        --anchor-dir .anchors/mamba_ssm_selective_scan --csv "$out/torch_fused_mamba.csv" >"$out/torch_fused.log" 2>&1
      echo "torch fused: rc=$?"; tail -6 "$out/torch_fused.log" ;;
    ih64)
      # Induction heads trained at 64 (configs/paper/induction_heads_mamba.toml, 2000 steps, as in
      # docs/RESULTS.md section 3's session-2 runs) on the GPU, then its final model at 2^6 ... 2^20 on the
      # GPU (eval --device cuda: the full forward at every length).
      timeout 60 $bin --log-level warn train configs/paper/induction_heads_mamba.toml --set data.seq_len=64 \
        --set train.epochs=20 --set train.device='"cuda"' --set output.dir='"runs/gpu_ih64"' >"$out/ih64_train.log" 2>&1
      echo "ih64 train: rc=$?"; tail -3 "$out/ih64_train.log"
      timeout 90 $bin eval runs/gpu_ih64 --checkpoint last --device cuda --max-seconds 30 \
        --seq-lens 2^6,2^7,2^8,2^9,2^10,2^11,2^12,2^13,2^14,2^15,2^16,2^17,2^18,2^19,2^20 >"$out/ih64_eval.log" 2>&1
      echo "ih64 eval: rc=$?"; cat "$out/ih64_eval.log" | tail -18
      cp runs/gpu_ih64/extrapolation.csv "$out/ih64_extrapolation.csv" 2>/dev/null ;;
    scan-chunked | scan-chunked-tests | scan-chunked-time)
      # SEQLAB_SCAN_FWD=chunked: the scan's cuda tests with it (scan-chunked-tests), its timing beside
      # the default forward's and the official kernel's cross-check on the chunked forward's outputs
      # (scan-chunked-time); scan-chunked is both. The tests need not have the GPU alone, the timing does.
      [ "$part" = scan-chunked-time ] || { SEQLAB_SCAN_FWD=chunked timeout ${TESTS_TIMEOUT:-200} build/portable/tests/seqlab_cuda_tests -d \
        -tc='*scan*,*mamba*' >"$out/cuda_tests_chunked.log" 2>&1
      echo "cuda tests (scan, mamba) with SEQLAB_SCAN_FWD=chunked: rc=$?"
      grep -E "^\[doctest\] (test cases|assertions)|ERROR|FAILED" "$out/cuda_tests_chunked.log" | head -30; }
      [ "$part" = scan-chunked-tests ] && continue
      SEQLAB_SCAN_FWD=tiled timeout 120 build/portable/bench_scan_cuda --csv "$out/seqlab_scan_tiled.csv" \
        >"$out/scan_tiled.log" 2>&1
      echo "scan (tiled forward): rc=$?"; tail -5 "$out/scan_tiled.log"
      SEQLAB_SCAN_FWD=chunked timeout 120 build/portable/bench_scan_cuda --dump /tmp/scan_dump_chunked \
        --csv "$out/seqlab_scan_chunked.csv" >"$out/scan_chunked.log" 2>&1
      echo "scan (chunked forward): rc=$?"; tail -5 "$out/scan_chunked.log"
      env -u LD_LIBRARY_PATH MAX_JOBS=16 timeout 240 python3 bench/scan_anchor_check.py \
        --anchor-dir .anchors/mamba_ssm_selective_scan --dump /tmp/scan_dump_chunked \
        --seqlab-csv "$out/seqlab_scan_chunked.csv" --csv "$out/anchor_scan_chunked.csv" >"$out/anchor_chunked.log" 2>&1
      echo "anchor (chunked forward): rc=$?"; tail -22 "$out/anchor_chunked.log" ;;
    multi-tensor)
      # One launch per parameter group instead of per tensor (Adam, the gradient norm, the clip):
      # its cuda test, then the step at short lengths (launch-bound) with and without it, same run.
      timeout 120 build/portable/tests/seqlab_cuda_tests -tc='*optim*' >"$out/cuda_tests_optim.log" 2>&1
      echo "cuda optim tests: rc=$?"; grep -E "^\[doctest\] (test cases|assertions)|ERROR|FAILED" "$out/cuda_tests_optim.log"
      for mt in 0 1 0 1; do
        SEQLAB_CUDA_MULTI_TENSOR=$mt timeout 120 $bin bench --device cuda --models lstm,transformer,s4d,mamba \
          --seq-lens 96,720 --steps 20 --warmup 5 >"$out/bench_mt$mt.log" 2>&1
        echo "bench SEQLAB_CUDA_MULTI_TENSOR=$mt: rc=$?"; grep -E '^(lstm|transformer|s4d|mamba) ' "$out/bench_mt$mt.log"
      done ;;
    tf32 | bf16)
      # Reduced-precision rows, same sizes as bench. tf32: seqlab's cuBLAS GEMMs and PyTorch's GEMMs +
      # cuDNN on TF32 tensor cores (--matmul-precision high, --tf32); bf16: seqlab's cuBLAS GEMMs on
      # bfloat16 tensor cores (--matmul-precision medium) and PyTorch under torch.autocast(bfloat16)
      # (--bf16). Then ETTh1 horizon 96 (seed 0) in that precision beside fp32: the test MSE should
      # stay within 1%.
      prec=high; [ "$part" = bf16 ] && prec=medium
      timeout 200 $bin bench --device cuda --matmul-precision $prec --models lstm,transformer,s4d,mamba \
        --seq-lens 96,720,2880,8192 --steps 10 --warmup 3 --csv "$out/bench_cuda_$part.csv" >"$out/bench_$part.log" 2>&1
      echo "bench $part: rc=$?"; grep -E '^model|^(lstm|transformer|s4d|mamba) ' "$out/bench_$part.log"
      env -u LD_LIBRARY_PATH timeout 200 python3 bench/pytorch_reference.py --device cuda --$part \
        --models lstm,transformer,s4d,mamba --seq-lens 96,720,2880,8192 --steps 10 --warmup 3 --max-seconds 40 \
        --csv "$out/torch_$part.csv" >"$out/torch_$part.log" 2>&1
      echo "torch $part: rc=$?"; tail -18 "$out/torch_$part.log"
      for p in highest $prec; do
        timeout 200 $bin --log-level warn compare configs/paper/etth1_h96.toml --set train.device='"cuda"' \
          --set train.matmul_precision="\"$p\"" --set output.dir="\"runs/gpu_etth1_h96_$p\"" \
          >"$out/etth1_h96_$p.log" 2>&1
        echo "etth1 h96 $p: rc=$?"; cp runs/gpu_etth1_h96_$p/results.csv "$out/etth1_h96_$p.csv" 2>/dev/null
        tail -7 "$out/etth1_h96_$p.log"
      done ;;
    graph)
      # The training step as one CUDA graph (apps/graph_step.h): its cuda tests, then the step at short
      # and medium lengths eager and replayed, twice each, same run.
      timeout 200 build/portable/tests/seqlab_cuda_tests -tc='*graph*' >"$out/cuda_tests_graph.log" 2>&1
      echo "cuda graph tests: rc=$?"; grep -E "^\[doctest\] (test cases|assertions)|ERROR|FAILED" "$out/cuda_tests_graph.log" | head -30
      for mode in eager graph eager graph; do
        flag=; [ $mode = graph ] && flag=--cuda-graph
        timeout 150 $bin bench --device cuda $flag --models ${GRAPH_MODELS:-lstm,transformer,s4d,mamba} \
          --seq-lens ${GRAPH_LENS:-96,720} --steps 20 --warmup 5 >"$out/bench_$mode.log" 2>&1
        echo "bench $mode: rc=$?"; grep -E '^(lstm|transformer|s4d|mamba) |CUDA graph' "$out/bench_$mode.log"
      done ;;
    step-profile)
      # Where a training step's time goes: every kernel of `bench` under Nsight Compute with 1 and with
      # 2 timed steps; the difference is one step's kernels and their summed GPU time (against the
      # step's wall time from bench: the rest is launch gaps). STEP_PROFILE lists model:T cases
      # (default mamba:96, with SEQLAB_CUDA_MULTI_TENSOR off and on; e.g. "lstm:2880 s4d:2880").
      ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
      if [ -z "$ncu" ]; then echo "ncu: not installed"; continue; fi
      for case in ${STEP_PROFILE:-mamba:96}; do
        m=${case%%:*} T=${case##*:}
        for mt in ${STEP_PROFILE_MT:-0 1}; do
          for n in 1 2; do
            f="$out/ncu_step_${m}_T${T}_mt${mt}_n$n"
            SEQLAB_CUDA_MULTI_TENSOR=$mt timeout 150 "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv \
              --print-units base $bin bench --device cuda --models $m --seq-lens $T --steps $n --warmup 1 >"$f.csv" 2>"$f.err"
            echo "ncu step $m T=$T mt=$mt steps=$n: rc=$?"
          done
          env -u LD_LIBRARY_PATH python3 scripts/ncu-step-summary.py --top 8 "${f%_n2}_n1.csv" "$f.csv"
        done
      done ;;
    etth1-alone)
      # One horizon's five models alone on the GPU: wall times without other runs sharing it.
      t0=$(date +%s%N)
      timeout 200 $bin --log-level warn compare configs/paper/etth1_h96.toml --set train.device='"cuda"' \
        --set output.dir='"runs/gpu_etth1_h96_alone"' >"$out/etth1_h96_alone.log" 2>&1
      echo "etth1 h96 alone: rc=$? wall $((($(date +%s%N) - t0) / 1000000)) ms"
      tail -7 "$out/etth1_h96_alone.log" ;;
  esac
done
