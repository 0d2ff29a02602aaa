#!/usr/bin/env bash
# The paper protocols on the GPU machine (run through scripts/gpu-run.sh), each part in the
# background, all stopped with SIGINT at a deadline (each run writes checkpoint-last.h5 and the
# next call continues with --resume); logs and run directories go to $OUT.
#   scripts/gpu-run.sh scripts/gpu-paper.sh DEADLINE_S PART...
# Parts: ih (induction heads, mamba and transformer at once), etth1 (the four horizons at once, seeds
# 0..2 in turn), sc4096 (selective copying at 4096: mamba, s4d, transformer at once), ih-eval (the
# final induction-heads models at 2^8 ... 2^20 on the GPU), ih-paper-mamba (the protocol of
# configs/paper/induction_heads_paper_mamba.toml, run to the end on the CPU in session 11, on the GPU
# into runs/paper/gpu/ih_paper_mamba), ih-paper-eval (its checkpoint-last at 2^8 ... 2^20 on the GPU);
# ih-paper-mimetic and ih-paper-mimetic-eval: the same for induction_heads_paper_mamba_mimetic.toml
# (session 12: learned from scratch on the CPU) into runs/paper/gpu/ih_paper_mamba_mimetic;
# ih-transformer and ih-transformer-eval: the transformer baseline of the same protocol alone
# (configs/paper/gpu/induction_heads_transformer.toml) into runs/paper/gpu/ih_transformer.
# ih-transformer-128: the same at length 128 for 30 epochs of 1000 steps into
# runs/paper/gpu/ih_transformer_128 (~2 min): on the CPU seqlab learned it after ~15,000 steps and
# a PyTorch replica after ~20,000 (session 14, RESULTS.md section 6), so the GPU should too.
set -uo pipefail
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
deadline=$1
shift
bin=build/portable/seqlab
start=$(date +%s)
pids=()
# bg LOG CMD...: CMD in the background, its output in $out/LOG.log
bg() {
  local log=$1
  shift
  "$@" >"$out/$log.log" 2>&1 &
  pids+=($!)
}
# eval_last LOG RUN_DIR: the run's checkpoint-last on the GPU at 2^8 ... 2^20 (150 s at most)
eval_last() {
  bg "$1" $bin eval "$2" --checkpoint last --device cuda --max-seconds 150 \
    --seq-lens 2^8,2^9,2^10,2^11,2^12,2^13,2^14,2^15,2^16,2^17,2^18,2^19,2^20
}
for part in "$@"; do
  case $part in
    ih) bg ih $bin --threads 2 compare configs/paper/gpu/induction_heads.toml --resume --jobs 2 ;;
    ih-train | ih-mamba)  # the runs of `ih` (ih-mamba: mamba alone), for a build without compare --jobs
      models="mamba transformer"
      [ "$part" = ih-mamba ] && models=mamba
      for m in $models; do
        $bin --threads 2 train runs/paper/gpu/ih/$m/config.resolved.toml --resume >"$out/ih_$m.log" 2>&1 &
        pids+=($!)
      done ;;
    etth1)
      for h in 96 192 336 720; do
        (for seed in 0 1 2; do
           $bin --threads 2 compare configs/paper/etth1_h$h.toml --resume --set train.device='"cuda"' \
             --set train.seed=$seed --set output.dir="\"runs/paper/gpu/etth1_h${h}_s$seed\"" || break
         done) >"$out/etth1_h$h.log" 2>&1 &
        pids+=($!)
      done ;;
    sc4096) bg sc4096 $bin --threads 2 compare configs/paper/gpu/selective_copying_4096.toml --resume --jobs 3 ;;
    ih-paper-mamba)
      bg ih_paper_mamba $bin --threads 2 compare configs/paper/induction_heads_paper_mamba.toml --resume \
        --set train.device='"cuda"' --set output.dir='"runs/paper/gpu/ih_paper_mamba"' ;;
    ih-paper-eval) eval_last ih_paper_eval runs/paper/gpu/ih_paper_mamba ;;
    ih-paper-mimetic)
      bg ih_paper_mimetic $bin --threads 2 compare configs/paper/induction_heads_paper_mamba_mimetic.toml --resume \
        --set train.device='"cuda"' --set output.dir='"runs/paper/gpu/ih_paper_mamba_mimetic"' ;;
    ih-paper-mimetic-eval) eval_last ih_paper_mimetic_eval runs/paper/gpu/ih_paper_mamba_mimetic ;;
    ih-transformer)
      bg ih_transformer $bin --threads 2 compare configs/paper/gpu/induction_heads_transformer.toml --resume ;;
    ih-transformer-128)
      bg ih_transformer_128 $bin --threads 2 compare configs/paper/gpu/induction_heads_transformer.toml --resume \
        --set data.seq_len=128 --set data.n_train_batches=1000 --set train.epochs=30 \
        --set output.dir='"runs/paper/gpu/ih_transformer_128"' ;;
    ih-transformer-eval) eval_last ih_transformer_eval runs/paper/gpu/ih_transformer ;;
    ih-eval) eval_last ih_eval runs/paper/gpu/ih ;;
  esac
done
while :; do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  if [ $(($(date +%s) - start)) -ge "$deadline" ]; then
    echo "deadline ${deadline}s: SIGINT to every run"
    pkill -INT -x seqlab; sleep 20; break  # by name: a -f pattern naming $bin also matches a shell whose command line holds it
  fi
  sleep 5
done
wait
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv
# The run directories without the forecasts' bulk (checkpoints, metrics, configs, tables: what
# --resume and eval need), one archive per run family (a file that comes back is at most 16 MiB).
for d in runs/paper/gpu/*/; do
  n=$(basename "$d")
  find "$d" \( -name '*.h5' -o -name '*.toml' -o -name 'results.*' -o -name '*.csv' \) -print0 |
    tar cf "$out/run_$n.tar" --null -T - 2>/dev/null
done
ls -l "$out"/*.tar 2>/dev/null
for f in "$out"/*.log; do echo "== $f"; grep -vE '\[info\].*(epoch [0-9]+/[0-9]+:)' "$f" | tail -4; grep -E 'epoch [0-9]+/' "$f" | tail -3; done
