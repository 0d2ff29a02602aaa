#!/usr/bin/env bash
# Induction heads, "does more training at 256 lengthen Mamba's memory?" (docs/RESULTS.md section 3,
# issue 16). Each variant continues the curriculum's seed-0 Mamba (2000 steps at 64, 1000 at 256:
# configs/paper/induction_heads_mamba.toml, runs/ih/s0_256) from its LAST checkpoint for 20000 steps at
# length 256, batch 8, one thread, keeping snapshots after 5000, 10000 and 20000 steps, and evaluates
# each snapshot's last checkpoint with the key D = 16384 and D = 65535 positions before the query, at
# T = D + 1 (the trigger at the start; 64 fresh sequences each, step mode).
#
#   scripts/ih-continuation.sh curriculum         # runs/ih/s0_64 and runs/ih/s0_256 (about 5 min)
#   scripts/ih-continuation.sh a b c              # the three continuations (each about 20-30 min + evals)
#
#   a: the paper's optimizer: Adam, no weight decay, constant lr 1e-3, no clipping, batch 8
#   b: the same with this repository's AdamW: weight decay 0.01, gradient clipping at 1
#   c: as a, trained with the first trigger fixed near the start (data.key_distance = 250: the key
#      sits at position 6 of 256 and the query at the end, so every sequence needs the full memory)
#
# SEQLAB (default ./build/release/seqlab) picks the binary; OUT (default runs/ih) the directory;
# EVAL=0 trains without evaluating (rerun with EVAL_ONLY=1 to evaluate the snapshots).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SEQLAB:-./build/release/seqlab}
OUT=${OUT:-runs/ih}
CFG=configs/paper/induction_heads_mamba.toml

curriculum() {
  "$S" --threads 1 train "$CFG" --set data.seq_len=64 --set train.epochs=20 --set train.seed=0 \
      --set output.dir="\"$OUT/s0_64\""
  "$S" --threads 1 train "$CFG" --set train.init_from="\"$OUT/s0_64\"" --set train.epochs=10 --set train.seed=0 \
      --set output.dir="\"$OUT/s0_256\""
}

# The paper's optimizer (Mamba paper, appendix E.1: Adam, lr 1e-3, batch 8, no weight decay or clipping).
paper=(--set optim.name='"adam"' --set optim.weight_decay=0 --set optim.lr=1e-3 --set optim.schedule='"constant"'
       --set optim.grad_clip=0)

continuation() {  # NAME ARGS...: 20000 steps (200 epochs of 100 batches of 8), snapshots at 5k/10k/20k
  local name=$1; shift
  local dir="$OUT/$name" epochs
  if [ "${EVAL_ONLY:-0}" = 1 ]; then evaluate "$dir"; return; fi
  for epochs in 50 100 200; do
    local resume=()
    [ "$epochs" -gt 50 ] && resume=(--resume)
    "$S" --threads 1 train "$CFG" --set train.init_from="\"$OUT/s0_256/checkpoint-last.h5\"" \
        --set train.batch_size=8 --set train.seed=0 "$@" --set train.epochs=$epochs \
        --set output.dir="\"$dir\"" "${resume[@]}"
    local snap="$dir-$((epochs / 10))k"
    rm -rf "$snap" && mkdir -p "$snap"
    cp "$dir"/{config.resolved.toml,checkpoint-last.h5,checkpoint-best.h5,metrics.h5,results.csv} "$snap"/
  done
  [ "${EVAL:-1}" = 0 ] || evaluate "$dir"
}

evaluate() {  # DIR: each snapshot's last checkpoint with the key D = 16384 and 65535 back, at T = D + 1
  local k d
  for k in 5 10 20; do
    for d in 16384 65535; do
      "$S" --threads 1 eval "$1-${k}k" --checkpoint last --seq-lens $((d + 1)) --key-distance $d --max-seconds 1200
    done
  done
}

for v in "$@"; do
  case "$v" in
    curriculum) curriculum ;;
    a) continuation a_adam "${paper[@]}" ;;
    b) continuation b_adamw --set optim.name='"adamw"' --set optim.weight_decay=0.01 --set optim.lr=1e-3 \
           --set optim.schedule='"constant"' --set optim.grad_clip=1 ;;
    c) continuation c_fixed "${paper[@]}" --set data.key_distance=250 ;;
    *) echo "ih-continuation.sh: unknown variant '$v' (expected curriculum, a, b or c)" >&2; exit 1 ;;
  esac
done
