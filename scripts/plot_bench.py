#!/usr/bin/env python3
"""Step time against sequence length, log-log, every family: seqlab solid, PyTorch dashed. Writes an
SVG with the Python standard library only (matplotlib is not installed on the build machines).
Also prints the least-squares exponent k of step_ms ~ T^k per family and framework.

usage: scripts/plot_bench.py SEQLAB_CSV PYTORCH_CSV [-o docs/bench_step_time.svg]
"""
import argparse
import csv
import math

COLORS = {"lstm": "#1f77b4", "transformer": "#d62728", "s4d": "#2ca02c", "mamba": "#9467bd"}


def load(path):
    rows = {}
    for r in csv.DictReader(open(path)):
        if r["step_ms"]:
            rows.setdefault(r["model"], []).append((int(r["seq_len"]), float(r["step_ms"])))
    return {m: sorted(v) for m, v in rows.items()}


def exponent(points):
    """Least-squares slope of log(step_ms) against log(T)."""
    if len(points) < 2:
        return float("nan")
    xs = [math.log(t) for t, _ in points]
    ys = [math.log(ms) for _, ms in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("seqlab_csv")
    ap.add_argument("pytorch_csv")
    ap.add_argument("-o", "--output", default="docs/bench_step_time.svg")
    args = ap.parse_args()
    series = {"seqlab": load(args.seqlab_csv), "pytorch": load(args.pytorch_csv)}

    for fw, data in series.items():
        for m, pts in data.items():
            print(f"{fw:<8} {m:<12} exponent {exponent(pts):.2f}  (T {pts[0][0]}..{pts[-1][0]})")

    pts = [p for d in series.values() for v in d.values() for p in v]
    tmin, tmax = min(p[0] for p in pts), max(p[0] for p in pts)
    ymin, ymax = min(p[1] for p in pts), max(p[1] for p in pts)
    lx0, lx1 = math.log10(tmin) - 0.05, math.log10(tmax) + 0.05
    ly0, ly1 = math.floor(math.log10(ymin)), math.ceil(math.log10(ymax))
    W, H, L, R, T, B = 760, 500, 70, 170, 30, 50

    def px(t):
        return L + (math.log10(t) - lx0) / (lx1 - lx0) * (W - L - R)

    def py(ms):
        return T + (ly1 - math.log10(ms)) / (ly1 - ly0) * (H - T - B)

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{(W - R + L) / 2}" y="18" text-anchor="middle" font-size="14">'
         'Training step time vs sequence length (B=32, D=64, 2 layers, 2 threads)</text>']
    for e in range(ly0, ly1 + 1):  # y grid: decades
        y = py(10 ** e)
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
    ts = sorted({p[0] for p in pts})
    for t in ts:  # x grid: the measured lengths
        x = px(t)
        s.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#ddd"/>')
        s.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{t}</text>')
    s.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="black"/>')
    s.append(f'<text x="{(W - R + L) / 2}" y="{H - 12}" text-anchor="middle">sequence length T (log)</text>')
    s.append(f'<text transform="translate(16,{(H - B + T) / 2}) rotate(-90)" text-anchor="middle">'
             'step time, ms (log)</text>')
    ly = T + 10
    for fw, dash in (("seqlab", ""), ("pytorch", ' stroke-dasharray="6,4"')):
        for m, p in sorted(series[fw].items()):
            c = COLORS.get(m, "black")
            path = " ".join(f"{px(t):.1f},{py(ms):.1f}" for t, ms in p)
            s.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
            for t, ms in p:
                s.append(f'<circle cx="{px(t):.1f}" cy="{py(ms):.1f}" r="3" fill="{c}"/>')
            s.append(f'<line x1="{W - R + 12}" y1="{ly}" x2="{W - R + 42}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>')
            s.append(f'<text x="{W - R + 48}" y="{ly + 4}">{fw} {m} (k={exponent(p):.2f})</text>')
            ly += 18
    s.append("</svg>")
    with open(args.output, "w") as f:
        f.write("\n".join(s) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
