#!/usr/bin/env python3
"""The ETTh1 tables of docs/RESULTS.md section 1, from the committed per-seed results.csv files.

    python3 scripts/etth1-tables.py [docs/results/etth1]

Reads <dir>/h<H>/seed<S>.csv (copies of runs/paper/etth1_h<H>/seed<S>/results.csv: one row per model,
val/test at its best-validation epoch) and prints: mean +- sample std of test MSE / mean test MAE per
model and horizon, the model validation picks per horizon (lowest mean validation MSE) and its test
MSE, and the per-seed rows. Standard library only.
"""
import csv
import statistics
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/etth1")
horizons = sorted(int(p.name[1:]) for p in root.glob("h*") if p.is_dir())
runs = {}  # (h, model) -> list of rows
models = []
for h in horizons:
    for f in sorted((root / f"h{h}").glob("seed*.csv")):
        seed = int(f.stem[4:])
        for row in csv.DictReader(f.open()):
            row["seed"] = seed
            runs.setdefault((h, row["model"]), []).append(row)
            if row["model"] not in models:
                models.append(row["model"])


def col(rows, key):
    return [float(r[key]) for r in rows]


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


print("| model | " + " | ".join(str(h) for h in horizons) + " |")
print("|---|" + "---|" * len(horizons))
for m in models:
    cells = []
    for h in horizons:
        rows = runs.get((h, m), [])
        if not rows:
            cells.append("")
            continue
        mu, sd = mean_std(col(rows, "test_mse"))
        cells.append(f"{mu:.4f} ± {sd:.4f} / {statistics.mean(col(rows, 'test_mae')):.3f}")
    print(f"| {m} | " + " | ".join(cells) + " |")

print()
print("| horizon | " + " | ".join(models) + " | picked by val | its test MSE | lowest test MSE |")
print("|---|" + "---:|" * len(models) + "---|---:|---|")
for h in horizons:
    val = {m: statistics.mean(col(runs[(h, m)], "val_mse")) for m in models if (h, m) in runs}
    test = {m: statistics.mean(col(runs[(h, m)], "test_mse")) for m in models if (h, m) in runs}
    pick = min(val, key=val.get)
    best = min(test, key=test.get)
    print(f"| {h} | " + " | ".join(f"{val[m]:.4f}" for m in models) +
          f" | {pick} | {test[pick]:.4f} | {best} ({test[best]:.4f}) |")

print()
print("| horizon | model | seeds | val MSE | test MSE | test MAE | epochs | train s/seed |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for h in horizons:
    for m in models:
        rows = sorted(runs.get((h, m), []), key=lambda r: r["seed"])
        if not rows:
            continue
        v, vs = mean_std(col(rows, "val_mse"))
        t, ts = mean_std(col(rows, "test_mse"))
        a, as_ = mean_std(col(rows, "test_mae"))
        epochs = "/".join(r["epochs"] for r in rows)
        secs = statistics.mean(col(rows, "train_seconds"))
        print(f"| {h} | {m} | {len(rows)} | {v:.4f} ± {vs:.4f} | {t:.4f} ± {ts:.4f} | {a:.4f} ± {as_:.4f} | "
              f"{epochs} | {secs:.0f} |")
