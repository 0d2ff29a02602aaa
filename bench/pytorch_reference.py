#!/usr/bin/python3
"""PyTorch side of `seqlab bench`: the same four model families at the same sizes, one training step
(forward, MSE, backward, AdamW) timed per (model, T), each case in its own process so that its peak
RSS is its own. Each family is written in its fastest honest form for PyTorch on a CPU:

  lstm         nn.LSTM (oneDNN/ATen fused cell)
  transformer  nn.TransformerEncoderLayer(norm_first=True, activation="gelu", dropout=0)
  s4d          s4d.py: Vandermonde kernel, then FFT convolution with torch.fft.rfft(n=2T)
  mamba        mamba-minimal block; the scan is either sequential (a Python loop over T of
               (B, E, N) updates) or parallel in log space (Heinsen 2023: logcumsumexp over T, the
               sign of B x handled by splitting into positive and negative parts); --mamba-scan auto
               runs both in separate processes and reports the faster.

All inside the shared wrapper: Linear(C -> D), n x [x + mixer(LayerNorm(x))], LayerNorm, last-step
Linear(D -> P*C). Prints `model,seq_len,batch,params,step_ms,samples_per_s,peak_rss_mib,
gflop_per_step,gflops` CSV rows (gflop_per_step is seqlab's analytic count, copied from
bench/step_bench.cpp, so that GFLOP/s compare like for like).

Run with Debian's /usr/bin/python3 (python3-torch 1.13). scripts/bench-compare.sh sets
OPENBLAS_NUM_THREADS=1 and LD_PRELOAD=libtcmalloc when available.
"""
import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import time

C_IN, D_MODEL, N_LAYERS, HORIZON = 7, 64, 2, 96
CSV_HEADER = "model,seq_len,batch,params,step_ms,samples_per_s,peak_rss_mib,gflop_per_step,gflops,base_rss_mib"
TAG = "TORCH_BENCH_RESULT"


# ---------------------------------------------------------------------------------------------
# Analytic FLOPs: the same formulas as seqlab::bench::step_gflop (docs/BENCHMARKS.md).

def fft_size(min_n):
    n = max(2, min_n)
    while True:
        if n % 2 == 0:
            m = n
            for p in (2, 3, 5):
                while m % p == 0:
                    m //= p
            if m == 1:
                return n
        n += 1


def step_gflop(model, T, B):
    D, C, L, PC = D_MODEL, C_IN, N_LAYERS, HORIZON * C_IN
    input_fwd = 2 * B * T * C * D
    head_fwd = 2 * B * D * PC
    if model == "lstm":
        layer = 2 * (2 * B * T * D * 4 * D)
    elif model == "transformer":
        F = 256
        layer = 2 * B * T * (3 * D * D + D * D + 2 * D * F) + 4 * B * T * T * D
    elif model == "s4d":
        M = 32
        n = fft_size(2 * T - 1)
        rfft = 2.5 * n * math.log2(n)
        layer = 8 * D * M * T + D * rfft + B * D * (2 * rfft + 6 * (n / 2 + 1)) + 2 * B * T * D * 2 * D
    elif model == "mamba":
        E, N, R, K = 2 * D, 16, 4, 4
        layer = 2 * B * T * (D * 2 * E + E * K + E * (R + 2 * N) + R * E + E * D) + 8 * B * T * E * N
    else:
        raise ValueError(model)
    return (2 * input_fwd + 3 * (head_fwd + L * layer)) / 1e9


# ---------------------------------------------------------------------------------------------
# Rough peak-memory estimates (bytes) used only to skip cases that cannot fit.

def estimate_bytes(model, T, B, scan):
    D, L = D_MODEL, N_LAYERS
    base = 400e6 + 40 * B * T * D * 4 * L
    if model == "transformer":
        # scores and softmax output saved per layer, plus the backward's transient copies
        return base + (2 * L + 3) * B * 4 * T * T * 4
    if model == "mamba":
        E, N = 2 * D, 16
        per = (8 if scan == "sequential" else 16) * B * T * E * N * 4
        return base + L * per
    return base


def mem_available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 40


# ---------------------------------------------------------------------------------------------
# Models (imported lazily so that the parent process stays small).

def build(model, T, scan):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    D = D_MODEL

    class S4D(nn.Module):
        """state-spaces/s4 models/s4/s4d.py (S4D-Lin init), kernel + FFT convolution + GELU + GLU."""

        def __init__(self, d, n=64, dt_min=1e-3, dt_max=1e-1):
            super().__init__()
            m = n // 2
            self.log_dt = nn.Parameter(torch.rand(d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            self.C = nn.Parameter(torch.view_as_real(torch.randn(d, m, dtype=torch.cfloat)))
            self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(d, m)))
            self.A_imag = nn.Parameter(math.pi * torch.arange(m).float().repeat(d, 1))
            self.D = nn.Parameter(torch.randn(d))
            self.out = nn.Linear(d, 2 * d)

        def kernel(self, L):
            dt = torch.exp(self.log_dt)                                   # (H)
            C = torch.view_as_complex(self.C)                             # (H, M)
            A = -torch.exp(self.log_A_real) + 1j * self.A_imag            # (H, M)
            dtA = A * dt.unsqueeze(-1)                                    # (H, M)
            K = dtA.unsqueeze(-1) * torch.arange(L, device=A.device)      # (H, M, L)
            C = C * (torch.exp(dtA) - 1.0) / A
            return 2 * torch.einsum("hn,hnl->hl", C, torch.exp(K)).real   # (H, L)

        def forward(self, u):                                             # (B, T, H)
            L = u.size(1)
            k = self.kernel(L)                                            # (H, L)
            n = 2 * L
            k_f = torch.fft.rfft(k, n=n)                                  # (H, n/2+1)
            u_f = torch.fft.rfft(u.transpose(1, 2), n=n)                  # (B, H, n/2+1)
            y = torch.fft.irfft(u_f * k_f, n=n)[..., :L]                  # (B, H, L)
            y = y.transpose(1, 2) + u * self.D                            # (B, T, H)
            return F.glu(self.out(F.gelu(y)), dim=-1)

    class Mamba(nn.Module):
        """mamba-minimal model.py MambaBlock (expand 2, N 16, conv 4, dt_rank 4)."""

        def __init__(self, d, expand=2, n=16, k=4, r=4):
            super().__init__()
            e = expand * d
            self.e, self.n, self.r = e, n, r
            self.in_proj = nn.Linear(d, 2 * e, bias=False)
            self.conv1d = nn.Conv1d(e, e, k, groups=e, padding=k - 1)
            self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
            self.dt_proj = nn.Linear(r, e)
            self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1).float().repeat(e, 1)))
            self.D = nn.Parameter(torch.ones(e))
            self.out_proj = nn.Linear(e, d, bias=False)

        def forward(self, u):                                             # (B, T, D)
            Bsz, L, _ = u.shape
            x, z = self.in_proj(u).chunk(2, dim=-1)                       # (B, T, E) each
            x = F.silu(self.conv1d(x.transpose(1, 2))[..., :L].transpose(1, 2))
            dt, Bm, Cm = self.x_proj(x).split([self.r, self.n, self.n], dim=-1)
            delta = F.softplus(self.dt_proj(dt))                          # (B, T, E)
            A = -torch.exp(self.A_log)                                    # (E, N)
            dA = delta.unsqueeze(-1) * A                                  # (B, T, E, N)  log decay
            bx = (delta * x).unsqueeze(-1) * Bm.unsqueeze(2)              # (B, T, E, N)
            if scan == "sequential":
                # unbind, not a[:, t]: the backward of one index op is a zero-filled full tensor
                # per step (O(T^2) traffic), unbind's backward is one stack
                a_t, b_t = torch.exp(dA).unbind(1), bx.unbind(1)
                h = torch.zeros(Bsz, self.e, self.n, dtype=u.dtype)
                hs = []
                for t in range(L):
                    h = torch.addcmul(b_t[t], a_t[t], h)
                    hs.append(h)
                hs = torch.stack(hs, dim=1)                               # (B, T, E, N)
            else:
                # h_t = exp(S_t) sum_{s<=t} exp(-S_s) b_s with S = cumsum(dA), in log space
                S = torch.cumsum(dA, dim=1)
                pos = torch.log(F.relu(bx) + 1e-20) - S
                neg = torch.log(F.relu(-bx) + 1e-20) - S
                hs = torch.exp(S + torch.logcumsumexp(pos, dim=1)) - torch.exp(S + torch.logcumsumexp(neg, dim=1))
            y = torch.einsum("bten,btn->bte", hs, Cm) + x * self.D
            return self.out_proj(y * F.silu(z))

    def mixer():
        if model == "lstm":
            class LSTM(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.rnn = nn.LSTM(D, D, batch_first=True)

                def forward(self, x):
                    return self.rnn(x)[0]
            return LSTM()
        if model == "transformer":
            return nn.TransformerEncoderLayer(D, 4, 256, dropout=0.0, activation="gelu", batch_first=True,
                                              norm_first=True)
        if model == "s4d":
            return S4D(D)
        if model == "mamba":
            return Mamba(D)
        raise ValueError(model)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(D)
            self.mixer = mixer()

        def forward(self, x):
            return x + self.mixer(self.norm(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.input = nn.Linear(C_IN, D)
            self.blocks = nn.ModuleList([Block() for _ in range(N_LAYERS)])
            self.norm_f = nn.LayerNorm(D)
            self.head = nn.Linear(D, HORIZON * C_IN)

        def forward(self, x):                                             # (B, T, C)
            h = self.input(x)
            for b in self.blocks:
                h = b(h)
            h = self.norm_f(h)
            return self.head(h[:, -1]).view(x.size(0), HORIZON, C_IN)

    return Model()


def vm_rss_mib():
    """Resident size now (VmRSS of /proc/self/status), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return 0.0


def run_single(model, T, args):
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    net = build(model, T, args.mamba_scan)
    net.train()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randn(args.batch, T, C_IN)
    y = torch.randn(args.batch, HORIZON, C_IN)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()

    base_mib = vm_rss_mib()  # before the first step: interpreter, torch, model, data
    for _ in range(args.warmup):
        step()
    ms = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t0) * 1e3)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"{TAG} {model} {T} {args.batch} {params} {statistics.median(ms):.4f} {rss_mib:.2f} {base_mib:.2f}",
          flush=True)


def run_child(model, T, args, scan):
    """Returns (row fields, None) or (None, reason)."""
    need = estimate_bytes(model, T, args.batch, scan)
    avail = mem_available_bytes()
    if need > 0.8 * avail:
        return None, f"skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
    cmd = [sys.executable, os.path.abspath(__file__), "--single", model, str(T), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--mamba-scan", scan]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.max_seconds)
    except subprocess.TimeoutExpired:
        return None, f"skipped: over --max-seconds {args.max_seconds}"
    for line in p.stdout.splitlines():
        if line.startswith(TAG):
            f = line.split()
            return (f[1], int(f[2]), int(f[3]), int(f[4]), float(f[5]), float(f[6]), float(f[7])), None
    return None, f"failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:] if p.stderr else ''}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lstm,transformer,s4d,mamba")
    ap.add_argument("--seq-lens", default="96,336,720,1440,2880")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--csv", default="")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="wall-time cap per case (skipped beyond)")
    ap.add_argument("--mamba-scan", choices=["auto", "sequential", "parallel"], default="auto")
    ap.add_argument("--single", nargs=2, metavar=("MODEL", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.single:
        run_single(args.single[0], int(args.single[1]), args)
        return

    import torch  # noqa: F401  (only for the version line)
    print(f"pytorch bench: torch {torch.__version__}, B={args.batch}, {args.threads} threads, median of "
          f"{args.steps} steps after {args.warmup} warm-up; LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '')!r}", flush=True)
    out = open(args.csv, "w") if args.csv else None
    if out:
        print(CSV_HEADER, file=out, flush=True)
    print(f"{'model':<12} {'T':>6} {'params':>9} {'step_ms':>11} {'samples/s':>11} {'peak_MiB':>10} {'GFLOP':>9} "
          f"{'GFLOP/s':>9}  note", flush=True)
    for model in args.models.split(","):
        prev = {}  # scan -> (T, step_ms) of the last measured length, to predict the next one
        for T in (int(t) for t in args.seq_lens.split(",")):
            scans = ["sequential", "parallel"] if model == "mamba" and args.mamba_scan == "auto" else [args.mamba_scan]
            best, notes = None, []
            for scan in scans:
                if scan in prev:
                    # predicted from the previous length: T^2 for attention, T otherwise
                    t0, ms0 = prev[scan]
                    pred = ms0 * (T / t0) ** (2 if model == "transformer" else 1) * (args.steps + args.warmup) / 1e3
                    if pred > args.max_seconds:
                        notes.append(f"{scan if model == 'mamba' else ''} skipped: predicted {pred:.0f} s > "
                                     f"--max-seconds {args.max_seconds:.0f}".strip())
                        continue
                row, why = run_child(model, T, args, scan)
                if row is not None:
                    prev[scan] = (T, row[4])
                tag = scan if model == "mamba" else ""
                if row is None:
                    notes.append(f"{tag} {why}".strip())
                    continue
                if model == "mamba":
                    notes.append(f"{scan} {row[4]:.1f} ms {row[5]:.0f} MiB")
                if best is None or row[4] < best[0][4]:
                    best = (row, scan)
            if best is None:
                print(f"{model:<12} {T:>6} {'':>9} {'skipped':>11}  {'; '.join(notes)}", flush=True)
                if out:
                    # a skipped case keeps its row with the measured fields empty
                    print(f"{model},{T},{args.batch},,,,,{step_gflop(model, T, args.batch):.4f},,", file=out, flush=True)
                continue
            (m, t, b, params, step_ms, rss, base), scan = best
            g = step_gflop(model, T, args.batch)
            sps, gflops = b / (step_ms / 1e3), g / (step_ms / 1e3)
            note = f"best: {scan} ({'; '.join(notes)})" if model == "mamba" else ""
            print(f"{m:<12} {t:>6} {params:>9} {step_ms:>11.2f} {sps:>11.1f} {rss:>10.1f} {g:>9.2f} {gflops:>9.2f}  "
                  f"{note}", flush=True)
            if out:
                print(f"{m},{t},{b},{params},{step_ms:.3f},{sps:.2f},{rss:.1f},{g:.4f},{gflops:.3f},{base:.1f}", file=out,
                      flush=True)
    if out:
        out.close()


if __name__ == "__main__":
    main()
