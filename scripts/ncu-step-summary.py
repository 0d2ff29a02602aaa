#!/usr/bin/env python3
"""One training step's kernels from `scripts/gpu-session.sh step-profile`: the Nsight Compute CSV of
the run with 2 timed steps minus the run with 1, per kernel name (count, summed GPU time).
    scripts/ncu-step-summary.py RUN_N1.csv RUN_N2.csv [--top 16]
ncu flushes the caches before each kernel, so the times are upper bounds."""
import argparse
import collections
import csv


def load(path):
    lines = [line for line in open(path) if line.startswith('"')]
    counts, times = collections.Counter(), collections.Counter()
    for row in csv.DictReader(lines):
        if row.get("Metric Name") == "gpu__time_duration.sum":
            name = row["Kernel Name"][:70]
            counts[name] += 1
            times[name] += float(row["Metric Value"].replace(",", ""))
    return counts, times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n1")
    ap.add_argument("n2")
    ap.add_argument("--top", type=int, default=16)
    a = ap.parse_args()
    c1, t1 = load(a.n1)
    c2, t2 = load(a.n2)
    kernels = sum(c2.values()) - sum(c1.values())
    us = (sum(t2.values()) - sum(t1.values())) / 1000
    print(f"{kernels} kernels per step, {us:.0f} us of GPU time per step")
    rows = sorted((((t2[k] - t1[k]) / 1000, c2[k] - c1[k], k) for k in t2), reverse=True)
    for t, c, k in rows[: a.top]:
        print(f"  {t:8.1f} us {c:4d}x {k}")


if __name__ == "__main__":
    main()
