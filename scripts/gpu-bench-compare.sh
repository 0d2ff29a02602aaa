#!/usr/bin/env bash
# seqlab against PyTorch on the GPU, in one go and within about 7 minutes (BUDGET_S), on the GPU
# machine, from the repo root, with build/portable/seqlab in place (scripts/gpu-run.sh, e.g.
# `scripts/gpu-run.sh scripts/gpu-bench-compare.sh`). Steps, each bounded by `timeout` (a failing
# step prints its error and the script goes on):
#   1. device-to-device copy bandwidth (torch, 1 GiB copy_), GB/s
#   2. mamba_ssm's selective-scan extension from ANCHOR_DIR: build (cached) and
#      bench/pytorch_reference.py --check-fused (the kernel against the sequential scan)
#   3. seqlab bench --device cuda
#   4. bench/pytorch_reference.py --device cuda: eager (mamba: parallel scan), mamba with
#      --mamba-scan fused, then torch.compile (each model gets an equal share of the time left)
# then one Markdown table (also in $OUT/table.md). CSVs and logs go to ${OUT:-/tmp/gpu-bench}.
# Environment: LENS (96,720,2880,8192), MODELS (lstm,transformer,s4d,mamba), STEPS (10), WARMUP (3),
#   COMPILE (1; 0: no torch.compile rows), COMPILE_LENS (LENS, longest first), COMPILE_DYNAMIC (0; 1:
#   torch.compile(dynamic=True)), BUDGET_S (420: the whole script), BIN (build/portable/seqlab),
#   PYTHON (python3), ANCHOR_DIR (.anchors/mamba_ssm_selective_scan, an ignored path: carry it),
#   GRAPH (0; 1: seqlab's steps as CUDA graph replays, bench --cuda-graph)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-/tmp/gpu-bench}
mkdir -p "$out"
rm -f "$out"/seqlab.csv "$out"/torch_eager.csv "$out"/torch_fused.csv "$out"/torch_compile_*.csv
LENS=${LENS:-96,720,2880,8192}
MODELS=${MODELS:-lstm,transformer,s4d,mamba}
STEPS=${STEPS:-10} WARMUP=${WARMUP:-3}
# torch.compile pays a compilation per case, so its share of the budget may not reach every length:
# the longest go first
COMPILE_LENS=${COMPILE_LENS:-$(tr , '\n' <<<"$LENS" | sort -rn | paste -sd, -)}
COMPILE_DYNAMIC=${COMPILE_DYNAMIC:-0} COMPILE=${COMPILE:-1}
GRAPH=${GRAPH:-0}
graph_flag=()
[[ $GRAPH == 1 ]] && graph_flag=(--cuda-graph)
BUDGET_S=${BUDGET_S:-420}
BIN=${BIN:-build/portable/seqlab}
PY=${PYTHON:-python3}
ANCHOR_DIR=${ANCHOR_DIR:-.anchors/mamba_ssm_selective_scan}
export MAX_JOBS=${MAX_JOBS:-16}

# gpu-run.sh puts seqlab's bundled libraries first on LD_LIBRARY_PATH: seqlab needs them, torch must
# not see them (its wheels bring their own)
py_ld=${LD_LIBRARY_PATH:-}
py_ld=${py_ld#/tmp/devkit/lib}
py_ld=${py_ld#:}
seqlab_ld=${LD_LIBRARY_PATH:-}
if [[ -d /tmp/devkit/lib && ":$seqlab_ld:" != *":/tmp/devkit/lib:"* ]]; then
  seqlab_ld=/tmp/devkit/lib${seqlab_ld:+:$seqlab_ld}
fi
if [[ -n $py_ld ]]; then PYENV=(env LD_LIBRARY_PATH="$py_ld" "$PY"); else PYENV=(env -u LD_LIBRARY_PATH "$PY"); fi
# the result rows of a bench log (its column header and one line per case), not the tracebacks
rows() { grep -E '^model +T |^[a-z0-9_]+ +[0-9]+ ' "$1"; }

t_start=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - t_start))); }
# step NAME CAP LOG CMD...: CMD under `timeout` for min(CAP, what the budget has left less 15 s for the
# table), its output in LOG; prints rc and wall time, and the log's tail when it failed
step() {
  local name=$1 cap=$2 log=$3
  shift 3
  local l lim t0 rc
  l=$(left)
  lim=$((cap < l - 15 ? cap : l - 15))
  if ((lim < 5)); then
    echo "$name: not run (budget of $BUDGET_S s spent)" | tee "$log"
    return 124
  fi
  t0=$(date +%s)
  timeout -k 10 "$lim" "$@" >"$log" 2>&1
  rc=$?
  echo "$name: rc=$rc, $(($(date +%s) - t0)) s (limit $lim s) -> $log"
  if ((rc == 124 || rc == 137)); then echo "  $name: stopped by its time limit"; fi
  if ((rc != 0)); then tail -5 "$log" | sed 's/^/  | /'; fi
  return $rc
}

echo "# gpu-bench-compare $(date -Is): LENS=$LENS MODELS=$MODELS STEPS=$STEPS WARMUP=$WARMUP BUDGET_S=$BUDGET_S" \
  | tee "$out/run.txt"
timeout 20 nvidia-smi -L 2>&1 | tee -a "$out/run.txt"

# 1. copy bandwidth, as in the anchor's build_and_bench.py: 2^28 floats read and written, 20 copies
cat >"$out/copy_bw.py" <<'EOF'
import torch
x = torch.empty(2**28, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): y.copy_(x)
e.record(); torch.cuda.synchronize()
ms = s.elapsed_time(e) / 20
print(f"torch {torch.__version__} CUDA {torch.version.cuda} {torch.cuda.get_device_name(0)}")
print(f"copy_GBps {2 * x.numel() * 4 / ms / 1e6:.1f} ({ms:.3f} ms per 1 GiB device-to-device copy)")
EOF
step copy-bandwidth 60 "$out/copy_bw.log" "${PYENV[@]}" "$out/copy_bw.py" && cat "$out/copy_bw.log"

# 2. the fused scan's extension: built once here (the benchmark children then load it from the cache)
fused_ok=0
if [[ ",$MODELS," == *,mamba,* ]]; then
  step check-fused 240 "$out/check_fused.log" "${PYENV[@]}" bench/pytorch_reference.py --device cuda --check-fused \
    --anchor-dir "$ANCHOR_DIR"
  grep '^check-fused' "$out/check_fused.log"
  grep -q 'extension ready' "$out/check_fused.log" && fused_ok=1
fi

# 3. seqlab (its CSV is rewritten after every case, so a stopped run keeps what it measured)
step seqlab 150 "$out/seqlab.log" env LD_LIBRARY_PATH="$seqlab_ld" "$BIN" bench --device cuda "${graph_flag[@]}" \
  --models "$MODELS" --seq-lens "$LENS" --steps "$STEPS" --warmup "$WARMUP" --csv "$out/seqlab.csv"
rows "$out/seqlab.log"

# 4. PyTorch, one process per case (the CSVs are written row by row)
REF=("${PYENV[@]}" bench/pytorch_reference.py --device cuda --steps "$STEPS" --warmup "$WARMUP"
  --anchor-dir "$ANCHOR_DIR")
step torch-eager 180 "$out/torch_eager.log" "${REF[@]}" --models "$MODELS" --seq-lens "$LENS" --mamba-scan parallel \
  --max-seconds 60 --csv "$out/torch_eager.csv"
rows "$out/torch_eager.log"
if ((fused_ok)); then
  step torch-fused 75 "$out/torch_fused.log" "${REF[@]}" --models mamba --seq-lens "$LENS" --mamba-scan fused \
    --max-seconds 40 --csv "$out/torch_fused.csv"
  rows "$out/torch_fused.log"
elif [[ ",$MODELS," == *,mamba,* ]]; then
  echo "torch-fused: not run (the extension did not build: $out/check_fused.log)"
fi
if ((COMPILE)); then
  IFS=, read -ra model_list <<<"$MODELS"
  n=${#model_list[@]}
  dyn=()
  if ((COMPILE_DYNAMIC)); then dyn=(--compile-dynamic); fi
  for m in "${model_list[@]}"; do
    share=$((($(left) - 15) / n))  # an equal share of what is left for this and the models after it
    n=$((n - 1))
    step "torch-compile $m" "$share" "$out/torch_compile_$m.log" "${REF[@]}" --compile ${dyn[@]+"${dyn[@]}"} \
      --models "$m" --seq-lens "$COMPILE_LENS" --mamba-scan parallel --max-seconds "$((share > 180 ? 180 : share))" \
      --csv "$out/torch_compile_$m.csv"
    rows "$out/torch_compile_$m.log"
  done
fi

# the table: every CSV that exists, whatever stopped early
timeout 30 "${PYENV[@]}" - "$out" "$LENS" "$MODELS" "$GRAPH" <<'EOF' | tee "$out/table.md"
import csv, glob, os, re, sys
out, lens, models = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], sys.argv[3].split(",")
graph = sys.argv[4] == "1"

def load(*names):
    rows = {}
    for pattern in names:
        for path in sorted(glob.glob(os.path.join(out, pattern))):
            try:
                for r in csv.DictReader(open(path)):
                    if r.get("step_ms"):
                        rows[(r["model"], int(r["seq_len"]))] = (float(r["step_ms"]), float(r["peak_rss_mib"]))
            except (OSError, ValueError, KeyError) as e:
                print(f"(could not read {path}: {e})")
    return rows

seqlab, eager, fused = load("seqlab.csv"), load("torch_eager.csv"), load("torch_fused.csv")
comp = load("torch_compile_*.csv")
def text(path):
    try:
        return open(os.path.join(out, path)).read()
    except OSError:
        return ""
bw = re.search(r"copy_GBps ([\d.]+)", text("copy_bw.log"))
check = re.search(r"check-fused: (PASS|FAIL)", text("check_fused.log"))
sdpa = sorted(set(re.findall(r"sdpa (\S+?)[,;\s]", text("torch_eager.log"))))
print()
print(f"Device-to-device copy: {bw.group(1) + ' GB/s' if bw else 'not measured'}; fused scan check: "
      f"{check.group(1) if check else 'not run'}; transformer SDPA backend (eager): {', '.join(sdpa) or 'unknown'}. "
      f"Step ms (median, CUDA events for PyTorch) and peak device MiB (seqlab: its pool's peak; PyTorch: "
      f"max_memory_allocated). Strict fp32. ratio = seqlab / the fastest PyTorch column."
      + (" seqlab's steps are CUDA graph replays (--cuda-graph)." if graph else ""))
print()
print("| model | T | seqlab ms | torch eager ms | torch fused-scan ms | torch compile ms | seqlab / best torch "
      "| seqlab MiB | eager MiB | fused MiB | compile MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
ms = lambda d, k: f"{d[k][0]:.2f}" if k in d else "-"
mib = lambda d, k: f"{d[k][1]:.0f}" if k in d else "-"
for m in models:
    for T in lens:
        k = (m, T)
        torch_ms = {name: d[k][0] for name, d in (("eager", eager), ("fused", fused), ("compile", comp)) if k in d}
        ratio = "-"
        if k in seqlab and torch_ms:
            best = min(torch_ms, key=torch_ms.get)
            ratio = f"{seqlab[k][0] / torch_ms[best]:.2f} ({best})"
        fz = (ms(fused, k), mib(fused, k)) if m == "mamba" else ("n/a", "n/a")
        print(f"| {m} | {T} | {ms(seqlab, k)} | {ms(eager, k)} | {fz[0]} | {ms(comp, k)} | {ratio} | {mib(seqlab, k)} "
              f"| {mib(eager, k)} | {fz[1]} | {mib(comp, k)} |")
print()
print("'-': not measured; the reason is in the logs (skipped / failed lines):")
for log in ["seqlab.log", "torch_eager.log", "torch_fused.log"] + sorted(
        os.path.basename(p) for p in glob.glob(os.path.join(out, "torch_compile_*.log"))):
    seen = set()
    for line in text(log).splitlines():
        line = line.strip()[:240]
        if re.search(r"skipped|failed|not run|\w+(Error|Exception):", line) and line not in seen:
            seen.add(line)
            print(f"  {log}: {line}")
EOF
echo "gpu-bench-compare: $(($(date +%s) - t_start)) s in all; CSVs, logs and table.md in $out"
