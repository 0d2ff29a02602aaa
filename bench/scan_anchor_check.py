#!/usr/bin/env python3
"""Cross-check and time seqlab's CUDA selective scan against the official Mamba kernel (the anchor).

On the GPU machine (python3 with PyTorch 2.11 and nvcc):

  1. `bench_scan_cuda --dump DIR --csv FILE` (bench/scan_bench_cuda.cpp) writes seqlab's inputs,
     outputs and gradients of B=2, E=64, N=16 at L=1000 and 4096 (DIR/L<L>/*.f32 + meta.json, seqlab
     layouts) and its timings (CSV).
  2. This script builds the anchor (mamba_ssm csrc/selective_scan, float32, real A) with
     torch.utils.cpp_extension.load as the anchor's build_and_bench.py does, runs ext.fwd / ext.bwd on
     the dumped inputs (transposed to the anchor's layouts: u, delta, z (B, E, L); B, C (B, 1, N, L)),
     prints the max abs and relative (scaled by max|ref|) differences of y, du, ddelta, dA, dB, dC, dD,
     ddelta_bias, dz, then times the anchor at the C++ tool's sizes and prints both side by side.
     Exit status 1 when a relative difference exceeds --tol (1e-4).

  MAX_JOBS=16 python3 bench/scan_anchor_check.py --anchor-dir .anchors/mamba_ssm_selective_scan \\
      --dump DIR --seqlab-csv FILE

--numpy-ref also checks the dumps against a float64 NumPy reference (forward and backward; needs no
torch and no GPU: `--numpy-ref --dump DIR` alone runs only that, e.g. on `bench_scan_cuda --dump DIR
--dump-cpu` output).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

NAMES_IN = ["u", "delta", "A", "Bm", "Cm", "D", "z", "delta_bias", "dy"]
NAMES_OUT = ["y", "du", "ddelta", "dA", "dB", "dC", "dD", "ddelta_bias", "dz"]


# ---- dumps -------------------------------------------------------------------------------------

def load_dump(case_dir):
    with open(os.path.join(case_dir, "meta.json")) as f:
        meta = json.load(f)
    t = {}
    for name, shape in meta["tensors"].items():
        a = np.fromfile(os.path.join(case_dir, name + ".f32"), dtype="<f4")
        if a.size != math.prod(shape):
            raise SystemExit(f"{case_dir}/{name}.f32: {a.size} values, meta.json says {shape}")
        t[name] = a.reshape(shape)
    return meta, t


def dump_cases(root):
    cases = sorted((d for d in os.listdir(root) if d.startswith("L") and os.path.isfile(os.path.join(root, d, "meta.json"))),
                   key=lambda d: int(d[1:]))
    if not cases:
        raise SystemExit(f"no L*/meta.json under {root} (run bench_scan_cuda --dump {root} first)")
    return [os.path.join(root, d) for d in cases]


def compare(label, got, ref, tol):
    """Prints one line per output; returns True when every relative difference is within tol."""
    ok = True
    print(f"{label}: {'tensor':<12} {'max|diff|':>11} {'max|ref|':>11} {'rel':>10}")
    for name in NAMES_OUT:
        g, r = np.asarray(got[name], np.float64), np.asarray(ref[name], np.float64)
        if g.shape != r.shape:
            print(f"  {name:<12} shape {g.shape} vs reference {r.shape}  FAIL")
            ok = False
            continue
        diff = float(np.max(np.abs(g - r))) if g.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        rel = diff / scale if scale > 0 else diff
        bad = not (rel <= tol)  # NaN fails
        ok &= not bad
        print(f"  {name:<12} {diff:11.3e} {scale:11.3e} {rel:10.3e}{'  FAIL' if bad else ''}")
    return ok


# ---- NumPy float64 reference (Mamba's selective_scan_ref and its hand-written backward) ----------

def numpy_reference(t):
    f = lambda k: np.asarray(t[k], np.float64)
    u, dl, A, Bm, Cm, D, z, bias, dy = (f(k) for k in NAMES_IN)
    Bsz, L, E = u.shape
    N = A.shape[1]
    x = dl + bias
    dt = np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))
    H = np.empty((L, Bsz, E, N))  # states h_t
    h = np.zeros((Bsz, E, N))
    for i in range(L):
        h = np.exp(dt[:, i, :, None] * A) * h + (dt[:, i] * u[:, i])[:, :, None] * Bm[:, i, None, :]
        H[i] = h
    s = np.einsum("lben,bln->ble", H, Cm)
    o = s + D * u
    sig = 1 / (1 + np.exp(-z))
    y = o * z * sig
    do = dy * z * sig
    dz = dy * o * sig * (1 + z * (1 - sig))
    dD = np.sum(do * u, axis=(0, 1))
    du = do * D
    dC = np.einsum("lben,ble->bln", H, do)
    g = np.zeros((Bsz, E, N))
    ddt = np.zeros_like(dt)
    dA = np.zeros_like(A)
    dB = np.zeros_like(Bm)
    for i in range(L - 1, -1, -1):
        g = g + do[:, i, :, None] * Cm[:, i, None, :]  # dL/dh_t
        a = np.exp(dt[:, i, :, None] * A)
        hp = H[i - 1] if i > 0 else np.zeros_like(g)
        gda = g * hp * a  # dL/d(exp(dt A)) * exp(dt A)
        dA += np.sum(gda * dt[:, i, :, None], axis=0)
        ddt[:, i] = np.sum(gda * A + g * u[:, i, :, None] * Bm[:, i, None, :], axis=2)
        du[:, i] += dt[:, i] * np.sum(g * Bm[:, i, None, :], axis=2)
        dB[:, i] = np.einsum("ben,be->bn", g, dt[:, i] * u[:, i])
        g = g * a  # to dL/dh_{t-1}
    ddelta = ddt * np.where(x > 20, 1.0, 1 / (1 + np.exp(-np.minimum(x, 20))))
    return {"y": y, "du": du, "ddelta": ddelta, "dA": dA, "dB": dB, "dC": dC, "dD": dD,
            "ddelta_bias": np.sum(ddelta, axis=(0, 1)), "dz": dz}


# ---- the anchor ----------------------------------------------------------------------------------

def build_anchor(anchor_dir):
    from torch.utils.cpp_extension import load
    # The same name, sources and flags as the anchor's build_and_bench.py (the build is cached
    # under ~/.cache/torch_extensions).
    t0 = time.time()
    ext = load(name="selective_scan_cuda",
               sources=[f"{anchor_dir}/selective_scan.cpp", f"{anchor_dir}/selective_scan_fwd_fp32.cu",
                        f"{anchor_dir}/selective_scan_bwd_fp32_real.cu"],
               extra_cflags=["-O3", "-std=c++17"],
               extra_cuda_cflags=["-O3", "-std=c++17", "--expt-relaxed-constexpr", "--expt-extended-lambda",
                                  "--use_fast_math", "-gencode", "arch=compute_90,code=sm_90"],
               verbose=False)
    print(f"anchor built/loaded in {time.time() - t0:.1f} s", flush=True)
    return ext


def anchor_on_dump(ext, t):
    """Runs the anchor on seqlab-layout arrays; returns its outputs in seqlab's layouts."""
    import torch
    dev = "cuda"
    ble = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1))).to(dev)  # (B,L,E) -> (B,E,L)
    bln = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1)[:, None])).to(dev)  # -> (B,1,N,L)
    vec = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    u, delta, z, dout = ble(t["u"]), ble(t["delta"]), ble(t["z"]), ble(t["dy"])
    A, D, bias = vec(t["A"]), vec(t["D"]), vec(t["delta_bias"])
    Bm, Cm = bln(t["Bm"]), bln(t["Cm"])
    out, x, out_z = ext.fwd(u, delta, A, Bm, Cm, D, z, bias, True)
    du, ddelta, dA, dB, dC, dD, ddelta_bias, dz = ext.bwd(u, delta, A, Bm, Cm, D, z, bias, dout, x, out, None,
                                                          True, False)[:8]
    torch.cuda.synchronize()
    back_ble = lambda a: a.permute(0, 2, 1).cpu().numpy()  # (B,E,L) -> (B,L,E)
    back_bln = lambda a: a[:, 0].permute(0, 2, 1).cpu().numpy()  # (B,1,N,L) -> (B,L,N)
    return {"y": back_ble(out_z), "du": back_ble(du), "ddelta": back_ble(ddelta), "dA": dA.cpu().numpy(),
            "dB": back_bln(dB), "dC": back_bln(dC), "dD": dD.cpu().numpy(), "ddelta_bias": ddelta_bias.cpu().numpy(),
            "dz": back_ble(dz)}


def time_gpu(fn, warmup, reps):
    """Events around each of reps back-to-back calls (after warmup): median, mean, host wall per call (ms)."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    t0 = time.perf_counter()
    for s, e in ev:
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3 / reps
    ms = sorted(s.elapsed_time(e) for s, e in ev)
    med = ms[reps // 2] if reps % 2 else 0.5 * (ms[reps // 2 - 1] + ms[reps // 2])
    return med, sum(ms) / reps, wall


def copy_bandwidth(warmup, reps):
    """GB/s of a 1 GiB device-to-device copy, read + write counted (as the anchor's build_and_bench.py)."""
    import torch
    src = torch.empty(2 ** 28, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / time_gpu(lambda: dst.copy_(src), warmup, reps)[0] / 1e6


def bench_size(ext, B, E, N, L, warmup, reps, copy_gbps):
    import torch
    dev = "cuda"
    torch.manual_seed(0)  # build_and_bench.py's inputs
    u = torch.randn(B, E, L, device=dev)
    delta = torch.rand(B, E, L, device=dev) * 0.1
    A = -torch.rand(E, N, device=dev)
    Bm = torch.randn(B, 1, N, L, device=dev)
    Cm = torch.randn(B, 1, N, L, device=dev)
    D = torch.randn(E, device=dev)
    z = torch.randn(B, E, L, device=dev)
    dtb = torch.randn(E, device=dev)
    dout = torch.randn(B, E, L, device=dev)

    def fwd():
        return ext.fwd(u, delta, A, Bm, Cm, D, z, dtb, True)

    def bwd(o):  # o = fwd()'s (out, x, out_z): the backward reads out (before the gate) and x (chunk states)
        return ext.bwd(u, delta, A, Bm, Cm, D, z, dtb, dout, o[1], o[0], None, True, False)

    f = time_gpu(fwd, warmup, reps)
    o = fwd()
    b = time_gpu(lambda: bwd(o), warmup, reps)
    o = None
    # device memory of one forward + backward, the inputs (u, delta, z, dout, A, B, C, D, bias) held
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    o = fwd()
    g = bwd(o)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del g  # frees the gradients (o too, below)
    o = None
    nch = (L + 2047) // 2048
    ble, bln = B * L * E, B * L * N
    fwd_min = 4 * (4 * ble + 2 * bln)  # build_and_bench.py's count: u, delta, z, out, B, C
    # what this kernel moves: read u, delta, z, B, C, A, D, bias; write out and out_z, and x
    fwd_bytes = 4 * (3 * ble + 2 * bln + E * N + 2 * E + 2 * ble + B * E * nch * 2 * N)
    bwd_min = 4 * (4 * ble + 2 * bln + 3 * ble + 2 * bln)  # as bench_scan_cuda (the anchor also reads out, x)
    return dict(impl="anchor", B=B, E=E, N=N, L=L, fwd_ms=f[0], fwd_mean_ms=f[1], fwd_wall_ms=f[2],
                bwd_ms=b[0], bwd_mean_ms=b[1], bwd_wall_ms=b[2], fwd_bytes=fwd_bytes, fwd_min_bytes=fwd_min,
                fwd_GBps=fwd_bytes / f[0] / 1e6, fwd_min_GBps=fwd_min / f[0] / 1e6,
                fwd_frac_copy=fwd_bytes / f[0] / 1e6 / copy_gbps, bwd_min_bytes=bwd_min,
                bwd_GBps=bwd_min / b[0] / 1e6, copy_GBps=copy_gbps, peak_bytes=peak, peak_extra_bytes=peak - base)


def bench_anchor(ext, sizes, warmup, reps):
    import torch
    copy_gbps = copy_bandwidth(warmup, reps)
    print(f"device-to-device copy (torch): {copy_gbps:.1f} GB/s", flush=True)
    rows = []
    for (B, E, N, L) in sizes:
        r = bench_size(ext, B, E, N, L, warmup, reps, copy_gbps)
        torch.cuda.empty_cache()
        rows.append(r)
        print(f"anchor B={B} E={E} N={N} L={L}: fwd {r['fwd_ms']:.4f} ms (mean {r['fwd_mean_ms']:.4f}), "
              f"bwd {r['bwd_ms']:.4f} ms (mean {r['bwd_mean_ms']:.4f}), fwd {r['fwd_min_GBps']:.1f} GB/s (min bytes), "
              f"{100 * r['fwd_frac_copy']:.1f}% of copy (own bytes), peak extra {r['peak_extra_bytes'] / 2**20:.1f} MiB",
              flush=True)
    return rows


CSV_COLS = ["impl", "B", "E", "N", "L", "fwd_ms", "fwd_mean_ms", "fwd_wall_ms", "bwd_ms", "bwd_mean_ms", "bwd_wall_ms",
            "fwd_bytes", "fwd_min_bytes", "fwd_GBps", "fwd_min_GBps", "fwd_frac_copy", "bwd_min_bytes", "bwd_GBps",
            "copy_GBps", "peak_bytes", "peak_extra_bytes"]


def read_seqlab_csv(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == len(CSV_COLS) + 1 and parts[0] == "csv" and parts[1] == "seqlab":
                r = dict(zip(CSV_COLS, parts[1:]))
                for k in CSV_COLS[1:]:
                    r[k] = float(r[k]) if "." in r[k] or "e" in r[k] else int(r[k])
                rows.append(r)
    if not rows:
        raise SystemExit(f"{path}: no 'csv,seqlab,...' lines (bench_scan_cuda --csv FILE writes them)")
    return rows


def print_side_by_side(seq, anc):
    key = lambda r: (r["B"], r["E"], r["N"], r["L"])
    a_by = {key(r): r for r in anc}
    print("\nseqlab vs mamba_ssm anchor (ms: median of per-call CUDA events; GB/s: the anchor's min byte count; "
          "ratio = seqlab / anchor)")
    print(f"{'B':>3} {'E':>5} {'N':>3} {'L':>6} | {'fwd seqlab':>10} {'anchor':>8} {'ratio':>6} | "
          f"{'bwd seqlab':>10} {'anchor':>8} {'ratio':>6} | {'fwd GB/s s':>10} {'a':>7} | {'extra MiB s':>11} {'a':>8}")
    for s in seq:
        a = a_by.get(key(s))
        if a is None:
            continue
        print(f"{s['B']:3d} {s['E']:5d} {s['N']:3d} {s['L']:6d} | {s['fwd_ms']:10.4f} {a['fwd_ms']:8.4f} "
              f"{s['fwd_ms'] / a['fwd_ms']:6.2f} | {s['bwd_ms']:10.4f} {a['bwd_ms']:8.4f} {s['bwd_ms'] / a['bwd_ms']:6.2f} | "
              f"{s['fwd_min_GBps']:10.1f} {a['fwd_min_GBps']:7.1f} | {s['peak_extra_bytes'] / 2**20:11.1f} "
              f"{a['peak_extra_bytes'] / 2**20:8.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchor-dir", help="directory holding the anchor's sources (selective_scan.cpp, ...)")
    ap.add_argument("--dump", help="directory written by bench_scan_cuda --dump (L*/meta.json, *.f32)")
    ap.add_argument("--seqlab-csv", help="CSV written by bench_scan_cuda --csv: its sizes are timed, side by side")
    ap.add_argument("--sizes", type=int, nargs="*", help="L values to time (default: the CSV's, else 720 2880 8192 32768)")
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--E", type=int, default=128)
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--tol", type=float, default=1e-4, help="max of max|diff| / max|ref| (default 1e-4)")
    ap.add_argument("--no-bench", action="store_true", help="cross-check only")
    ap.add_argument("--numpy-ref", action="store_true", help="also check the dumps against a float64 NumPy reference")
    ap.add_argument("--csv", help="write the anchor's CSV lines here too")
    args = ap.parse_args()

    ok = True
    cases = dump_cases(args.dump) if args.dump else []
    dumps = [load_dump(c) for c in cases]
    if args.numpy_ref:
        for (meta, t) in dumps:
            ok &= compare(f"seqlab vs numpy float64, B={meta['B']} E={meta['E']} N={meta['N']} L={meta['L']}",
                          t, numpy_reference(t), args.tol)
    if not args.anchor_dir:
        if not args.numpy_ref:
            ap.error("--anchor-dir is needed (or --numpy-ref --dump DIR alone)")
        print("OK" if ok else "FAILED: a relative difference above the tolerance")
        return 0 if ok else 1

    import torch
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    ext = build_anchor(args.anchor_dir)
    for (meta, t) in dumps:
        ok &= compare(f"seqlab vs anchor, B={meta['B']} E={meta['E']} N={meta['N']} L={meta['L']}",
                      t, anchor_on_dump(ext, t), args.tol)
    sys.stdout.flush()

    if not args.no_bench:
        seq = read_seqlab_csv(args.seqlab_csv) if args.seqlab_csv else []
        if args.sizes:
            sizes = [(args.B, args.E, args.N, L) for L in args.sizes]
        elif seq:
            sizes = [(r["B"], r["E"], r["N"], r["L"]) for r in seq]
        else:
            sizes = [(args.B, args.E, args.N, L) for L in (720, 2880, 8192, 32768)]
        anc = bench_anchor(ext, sizes, args.warmup, args.reps)
        lines = ["csv," + ",".join(CSV_COLS)]
        for r in anc:
            lines.append("csv," + ",".join(f"{r[k]:.5f}" if isinstance(r[k], float) else str(r[k]) for k in CSV_COLS))
        print("\n".join(lines))
        if args.csv:
            with open(args.csv, "w") as f:
                f.write("\n".join(lines) + "\n")
        if seq:
            print_side_by_side(seq, anc)
    if dumps:
        print("cross-check OK" if ok else "cross-check FAILED: a relative difference above the tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
