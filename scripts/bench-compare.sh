#!/usr/bin/env bash
# Side-by-side training-step benchmark: seqlab (`bench` subcommand) and PyTorch
# (bench/pytorch_reference.py), alternating model by model so that both see the same machine load,
# then the ratio table (seqlab / PyTorch step time and peak RSS). See docs/BENCHMARKS.md.
#
# usage: scripts/bench-compare.sh [--bin PATH] [--out DIR] [--models a,b] [--seq-lens 96,...]
#                                 [--steps N] [--threads N] [--max-seconds S] [--no-tcmalloc]
#                                 [--mamba-scan auto|sequential|parallel]
#   --bin   a seqlab binary (default: build/release/seqlab, else build/perf/seqlab)
#   --out   where seqlab.csv, pytorch.csv and ratio.txt go (default: bench-results/)
#   PYTHON  the interpreter with torch (default /usr/bin/python3, Debian's python3-torch)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="" OUT="bench-results" MODELS="lstm,transformer,s4d,mamba" SEQ_LENS="96,336,720,1440,2880"
STEPS=10 THREADS=2 MAX_SECONDS=600 TCMALLOC=1 MAMBA_SCAN=auto
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --seq-lens) SEQ_LENS="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --max-seconds) MAX_SECONDS="$2"; shift 2 ;;
    --no-tcmalloc) TCMALLOC=0; shift ;;
    --mamba-scan) MAMBA_SCAN="$2"; shift 2 ;;  # PyTorch's Mamba scan (auto: both, the faster reported)
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "bench-compare: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$BIN" ]]; then
  for c in build/release/seqlab build/perf/seqlab; do
    [[ -x "$c" ]] && { BIN="$c"; break; }
  done
fi
[[ -x "$BIN" ]] || { echo "bench-compare: no seqlab binary (build first, or pass --bin)" >&2; exit 1; }

# PyTorch's best environment: one OpenBLAS thread (torch uses its own intra-op pool), tcmalloc.
TORCH_ENV=(OPENBLAS_NUM_THREADS=1)
TC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
if [[ $TCMALLOC == 1 && -e $TC ]]; then TORCH_ENV+=(LD_PRELOAD=$TC); fi

mkdir -p "$OUT"
echo "# $(date -Is) $(uptime)" > "$OUT/load.txt"
# What every figure depends on: the CPU, seqlab's ISA path (SEQLAB_ISA forces one), OpenBLAS's core.
{ echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  "$BIN" info | grep -E '^(ISA path|BLAS):' | sed 's/^/# /'
  echo "# SEQLAB_ISA=${SEQLAB_ISA:-} OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-}"; } | tee -a "$OUT/load.txt"
HEADER="model,seq_len,batch,params,step_ms,samples_per_s,peak_rss_mib,gflop_per_step,gflops,base_rss_mib"
echo "$HEADER" > "$OUT/seqlab.csv"
echo "$HEADER" > "$OUT/pytorch.csv"
IFS=, read -ra MODEL_LIST <<< "$MODELS"
for m in "${MODEL_LIST[@]}"; do
  "$BIN" bench --models "$m" --seq-lens "$SEQ_LENS" --steps "$STEPS" --threads "$THREADS" --csv "$OUT/.s.csv" \
    | tee -a "$OUT/seqlab.txt"
  tail -n +2 "$OUT/.s.csv" >> "$OUT/seqlab.csv"
  env "${TORCH_ENV[@]}" "${PYTHON:-/usr/bin/python3}" bench/pytorch_reference.py --models "$m" --seq-lens "$SEQ_LENS" \
    --steps "$STEPS" --threads "$THREADS" --max-seconds "$MAX_SECONDS" --mamba-scan "$MAMBA_SCAN" --csv "$OUT/.p.csv" \
    | tee -a "$OUT/pytorch.txt"
  tail -n +2 "$OUT/.p.csv" >> "$OUT/pytorch.csv"
  echo "# after $m: $(uptime)" >> "$OUT/load.txt"
done
rm -f "$OUT/.s.csv" "$OUT/.p.csv"

python3 - "$OUT" <<'EOF' | tee "$OUT/ratio.txt"
import csv, sys
out = sys.argv[1]
def load(name):
    return {(r["model"], int(r["seq_len"])): r for r in csv.DictReader(open(f"{out}/{name}"))}
s, p = load("seqlab.csv"), load("pytorch.csv")
print(f"{'model':<12} {'T':>6} {'seqlab ms':>10} {'torch ms':>10} {'time x':>7} {'seqlab MiB':>11} {'torch MiB':>10} "
      f"{'RSS x':>7} {'net x':>7} {'seqlab GF/s':>11} {'torch GF/s':>10}")
# net x: peak RSS minus each process's resident size before its first step (torch starts near 270 MiB).
def net(r):
    return float(r["peak_rss_mib"]) - float(r["base_rss_mib"] or 0)
for key in sorted(s, key=lambda k: (k[0], k[1])):
    a, b = s[key], p.get(key)
    if b is None or not b["step_ms"]:
        print(f"{key[0]:<12} {key[1]:>6} {float(a['step_ms']):>10.1f} {'skipped':>10} {'-':>7} "
              f"{float(a['peak_rss_mib']):>11.1f} {'-':>10} {'-':>7} {'-':>7} {float(a['gflops']):>11.2f} {'-':>10}")
        continue
    rt = float(a["step_ms"]) / float(b["step_ms"])
    rm = float(a["peak_rss_mib"]) / float(b["peak_rss_mib"])
    rn = net(a) / net(b) if net(b) > 0 else float("nan")
    print(f"{key[0]:<12} {key[1]:>6} {float(a['step_ms']):>10.1f} {float(b['step_ms']):>10.1f} {rt:>7.3f} "
          f"{float(a['peak_rss_mib']):>11.1f} {float(b['peak_rss_mib']):>10.1f} {rm:>7.3f} {rn:>7.3f} "
          f"{float(a['gflops']):>11.2f} {float(b['gflops']):>10.2f}")
EOF
