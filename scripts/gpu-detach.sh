#!/usr/bin/env bash
# GPU work longer than one device call (10 minutes at most), on the device machine in the tree that
# scripts/gpu-run.sh set up. `start CMD` runs CMD in its own process session, so it keeps running
# between device calls while the machine is held (it is given back after 30 s idle: chain the calls);
# `wait S` waits up to S seconds for it to end; `snapshot` packs what it has written so far into
# $OUT/detached.tar.gz: the run directories under runs/paper/gpu (checkpoints, configs, tables; a
# checkpoint is written to a temporary file and renamed, so the archive holds whole ones) and its logs.
#   scripts/gpu-run.sh scripts/gpu-detach.sh start 'scripts/gpu-paper.sh 700 ih-transformer; ...'
#   scripts/gpu-detach.sh wait 500; scripts/gpu-detach.sh snapshot
set -uo pipefail
cd "$(dirname "$0")/.."
dir=/tmp/detached
case ${1:-} in
  start)
    mkdir -p "$dir/out"
    export LD_LIBRARY_PATH=/tmp/devkit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    OUT="$dir/out" setsid nohup bash -c "$2" >"$dir/log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    echo "detached: pid $(cat "$dir/pid"): $2" ;;
  wait)
    end=$(($(date +%s) + $2))
    while kill -0 "$(cat "$dir/pid")" 2>/dev/null && [ "$(date +%s)" -lt $end ]; do sleep 5; done
    kill -0 "$(cat "$dir/pid")" 2>/dev/null && echo "detached: still running" || echo "detached: ended" ;;
  snapshot)
    mkdir -p runs/paper/gpu
    { find runs/paper/gpu \( -name '*.h5' -o -name '*.toml' -o -name 'results.*' -o -name '*.csv' \) -print0
      find "$dir" -type f \( -name '*.log' -o -name log \) -print0; } |
      tar czf "${OUT:-/tmp/gpu-out}/detached.tar.gz" --null -T - 2>/dev/null
    ls -l "${OUT:-/tmp/gpu-out}/detached.tar.gz"
    tail -5 "$dir/log" 2>/dev/null
    for f in "$dir"/out/*.log; do [ -e "$f" ] || continue; echo "== $f"; grep -E 'epoch [0-9]+/' "$f" | tail -2; done ;;
  *) echo "usage: $0 start CMD | wait SECONDS | snapshot" >&2; exit 2 ;;
esac
