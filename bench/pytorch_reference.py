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

--device cuda (PyTorch 2.x on the GPU machine; scripts/gpu-bench-compare.sh): model and data on the
GPU, strict IEEE fp32 (TF32 off for cuBLAS and cuDNN, float32 matmul precision "highest"; --tf32 turns
TF32 on for both, as seqlab bench --matmul-precision high), AdamW with
fused=True; nn.LSTM runs cuDNN, the transformer's attention runs F.scaled_dot_product_attention (the
backend that ran is reported; --sdpa-backend forces one), S4D torch.fft, Mamba the parallel scan or,
with --mamba-scan fused, the official mamba_ssm selective-scan CUDA kernel (built once from
--anchor-dir with torch.utils.cpp_extension.load, called through an autograd.Function as in
mamba_ssm's selective_scan_fn; in_proj, conv1d, x_proj, dt_proj, out_proj stay in PyTorch as in
mamba_ssm's non-fused-block path). A step is timed with CUDA events (synchronised), median of
--steps after --warmup; peak_rss_mib is then torch.cuda.max_memory_allocated() of the case (reset
after the model, optimizer and data are in place) and base_rss_mib memory_allocated() at that point.
--compile wraps the model in torch.compile (the loss, backward and AdamW stay eager); a case whose
compilation fails keeps its row empty with the reason. --check-fused builds the kernel and compares
loss and gradients of the fused and sequential Mamba scans on the same weights (exit 1 on mismatch).
"""
import argparse
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

C_IN, D_MODEL, N_LAYERS, HORIZON = 7, 64, 2, 96
CSV_HEADER = "model,seq_len,batch,params,step_ms,samples_per_s,peak_rss_mib,gflop_per_step,gflops,base_rss_mib"
TAG = "TORCH_BENCH_RESULT"
ERROR_TAG = "TORCH_BENCH_ERROR"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ANCHOR_DIR = os.path.join(REPO_ROOT, ".anchors", "mamba_ssm_selective_scan")
_SCAN_EXT = None  # the selective-scan extension module (--mamba-scan fused), loaded once per process


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
# mamba_ssm's fused selective scan (--mamba-scan fused, CUDA only).

def load_scan_ext(anchor_dir):
    """Builds (first time; cached under TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions) and
    loads the anchor's selective_scan extension with build_and_bench.py's flags. Returns the module."""
    global _SCAN_EXT
    if _SCAN_EXT is not None:
        return _SCAN_EXT
    from torch.utils.cpp_extension import load
    names = ["selective_scan.cpp", "selective_scan_fwd_fp32.cu", "selective_scan_bwd_fp32_real.cu"]
    missing = [n for n in names if not os.path.isfile(os.path.join(anchor_dir, n))]
    if missing:
        raise RuntimeError(f"--anchor-dir {anchor_dir}: missing {', '.join(missing)}")
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    _SCAN_EXT = load(name="selective_scan_cuda", sources=[os.path.join(anchor_dir, n) for n in names],
                     extra_cflags=["-O3", "-std=c++17"],
                     extra_cuda_cflags=["-O3", "-std=c++17", "--expt-relaxed-constexpr", "--expt-extended-lambda",
                                        "--use_fast_math", "-gencode", "arch=compute_90,code=sm_90"],
                     verbose=False)
    return _SCAN_EXT


_SCAN_FN = None


def selective_scan_fn():
    """mamba_ssm.ops.selective_scan_interface.SelectiveScanFn with z, D, delta_bias and
    delta_softplus=True: u, delta, z (B, E, L); A (E, N); B, C (B, 1, N, L); D, delta_bias (E,).
    Returns out_z = (scan(u) + D u) * silu(z), (B, E, L)."""
    global _SCAN_FN
    if _SCAN_FN is not None:
        return _SCAN_FN
    import torch

    def unit_last(t):
        return t if t.stride(-1) == 1 else t.contiguous()

    class SelectiveScanFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, delta, A, B, C, D, z, delta_bias):
            u, delta, B, C, z = (unit_last(t) for t in (u, delta, B, C, z))
            D, delta_bias, A = D.contiguous(), delta_bias.contiguous(), A.contiguous()
            out, x, out_z = _SCAN_EXT.fwd(u, delta, A, B, C, D, z, delta_bias, True)
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
            return out_z

        @staticmethod
        def backward(ctx, dout):
            u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
            du, ddelta, dA, dB, dC, dD, ddelta_bias, dz = _SCAN_EXT.bwd(
                u, delta, A, B, C, D, z, delta_bias, unit_last(dout), x, out, None, True, False)[:8]
            return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias

    _SCAN_FN = SelectiveScanFn
    return _SCAN_FN


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

        def forward_fused(self, u):                                       # (B, T, D)
            # mamba_ssm Mamba.forward without the fused block (use_fast_path=False), the scan in
            # selective_scan_fn: channels-first (B, E, L) layouts, delta's bias and softplus, D and
            # the silu(z) gate inside the kernel
            Bsz, L, Dm = u.shape
            xz = (self.in_proj.weight @ u.reshape(Bsz * L, Dm).t()).view(2 * self.e, Bsz, L).permute(1, 0, 2)
            x, z = xz.chunk(2, dim=1)                                     # (B, E, L) each
            x = F.silu(self.conv1d(x)[..., :L])                           # (B, E, L)
            x_dbl = self.x_proj(x.transpose(1, 2).reshape(Bsz * L, self.e))
            dt, Bm, Cm = x_dbl.split([self.r, self.n, self.n], dim=-1)
            dt = (self.dt_proj.weight @ dt.t()).view(self.e, Bsz, L).permute(1, 0, 2)   # (B, E, L), no bias
            Bm = Bm.reshape(Bsz, L, self.n).transpose(1, 2).contiguous().unsqueeze(1)   # (B, 1, N, L)
            Cm = Cm.reshape(Bsz, L, self.n).transpose(1, 2).contiguous().unsqueeze(1)
            A = -torch.exp(self.A_log)                                    # (E, N)
            y = selective_scan_fn().apply(x, dt, A, Bm, Cm, self.D, z, self.dt_proj.bias)  # (B, E, L)
            return self.out_proj(y.transpose(1, 2))

        def forward(self, u):                                             # (B, T, D)
            if scan == "fused":
                return self.forward_fused(u)
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
                h = torch.zeros(Bsz, self.e, self.n, dtype=u.dtype, device=u.device)
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


def strict_fp32(torch):
    """IEEE fp32 everywhere on the GPU: no TF32 in cuBLAS or cuDNN (the legacy switches only: mixing
    them with the newer fp32_precision API makes PyTorch 2.9+ raise when either is read)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def tf32_gemms(torch):
    """--tf32: float32 matmuls (cuBLAS) and cuDNN's RNNs and convolutions on TF32 tensor cores, as
    seqlab's --matmul-precision high (PyTorch's set_float32_matmul_precision("high")); the scan, FFTs
    and elementwise kernels stay fp32."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")


def sdpa_context(backend):
    import contextlib
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel  # PyTorch >= 2.3
    return sdpa_kernel({"efficient": SDPBackend.EFFICIENT_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                        "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[backend])


# aten ops of F.scaled_dot_product_attention's backends, as the profiler names them
SDPA_OPS = (("_scaled_dot_product_flash_attention", "flash"), ("_flash_attention_forward", "flash"),
            ("_scaled_dot_product_efficient_attention", "efficient"), ("_efficient_attention_forward", "efficient"),
            ("_scaled_dot_product_cudnn_attention", "cudnn"), ("_scaled_dot_product_attention_math", "math"))


def sdpa_backends_of(step):
    """Runs step() once under the profiler (CPU activities: the aten ops) and names the SDPA backends
    whose ops ran, e.g. "efficient"; "none" if no SDPA op ran."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages()}
    found = sorted({b for op, b in SDPA_OPS if any(n.endswith(op) or n.endswith(op + "_backward") for n in names)})
    return "+".join(found) if found else "none"


def first_line(e):
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def run_single_cuda(model, T, args):
    """The --device cuda child: as run_single, on the GPU, timed with CUDA events."""
    import torch
    phase = "setup"
    try:
        tf32_gemms(torch) if args.tf32 else strict_fp32(torch)
        torch.set_num_threads(args.threads)
        dev = torch.device("cuda")
        if model == "mamba" and args.mamba_scan == "fused":
            phase = "building the selective-scan extension"
            load_scan_ext(args.anchor_dir)
            phase = "setup"
        torch.manual_seed(1234)
        net = build(model, T, args.mamba_scan)  # initialised on the host, as on the CPU path, then moved
        net.to(dev)
        net.train()
        params = sum(p.numel() for p in net.parameters())
        try:
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
            adamw = "fused"
        except (TypeError, RuntimeError):  # PyTorch < 2.0
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
            adamw = "foreach"
        x = torch.randn(args.batch, T, C_IN).to(dev)
        y = torch.randn(args.batch, HORIZON, C_IN).to(dev)
        fwd = net
        if args.compile:
            if not hasattr(torch, "compile"):
                raise RuntimeError(f"torch.compile is not in PyTorch {torch.__version__}")
            fwd = torch.compile(net, mode=None if args.compile_mode == "default" else args.compile_mode,
                                dynamic=True if args.compile_dynamic else None)

        def autocast():
            import contextlib
            return torch.autocast("cuda", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

        def step():
            opt.zero_grad(set_to_none=True)
            with sdpa_context(args.sdpa_backend):
                with autocast():
                    loss = torch.nn.functional.mse_loss(fwd(x).float(), y)
                loss.backward()
            opt.step()

        torch.cuda.synchronize()
        base_mib = torch.cuda.memory_allocated() / 2**20  # parameters, optimizer state (lazy: empty), data
        torch.cuda.reset_peak_memory_stats()
        phase = "compiling (first steps)" if args.compile else "warm-up"
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        warmup_s = time.perf_counter() - t0
        phase = "timed steps"
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ms, wall = [], []
        for _ in range(args.steps):
            w0 = time.perf_counter()
            start.record()
            step()
            end.record()
            end.synchronize()
            wall.append((time.perf_counter() - w0) * 1e3)
            ms.append(start.elapsed_time(end))
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
        reserved_mib = torch.cuda.max_memory_reserved() / 2**20
        extras = [f"wall_ms={statistics.median(wall):.3f}", f"reserved_mib={reserved_mib:.1f}",
                  f"warmup_s={warmup_s:.1f}", f"adamw={adamw}"]
        if model == "transformer":
            phase = "profiling the SDPA backend"
            try:
                extras.append(f"sdpa={sdpa_backends_of(step)}")
            except Exception as e:  # the figure is measured; the backend name is only a note
                extras.append(f"sdpa=unknown({type(e).__name__})")
        if args.compile:
            try:
                from torch._dynamo.utils import counters
                extras.append(f"graph_breaks={sum(counters['graph_break'].values())}")
            except Exception:
                pass
    except Exception as e:
        what = "compile failed" if args.compile and phase.startswith("compiling") else f"failed in {phase}"
        print(f"{ERROR_TAG} {what}: {first_line(e)}", flush=True)
        sys.exit(1)
    print(f"{TAG} {model} {T} {args.batch} {params} {statistics.median(ms):.4f} {peak_mib:.2f} {base_mib:.2f} "
          + " ".join(extras), flush=True)


def check_fused(args):
    """--check-fused: the fused kernel against the sequential scan (plain PyTorch maths) on the same
    weights and data, loss and every parameter's gradient, at a length of one kernel chunk and one
    of two (the kernel scans in chunks of 2048). Exit 1 on a mismatch."""
    import torch
    dev = torch.device(args.device)
    if dev.type == "cuda":
        strict_fp32(torch)
    t0 = time.time()
    if _SCAN_EXT is None:
        # a build killed while holding torch's file lock would make every later load() wait forever;
        # this is the one builder (the benchmark cases run after it), so a lock found now is stale
        try:
            from torch.utils.cpp_extension import _get_build_directory
            lock = os.path.join(_get_build_directory("selective_scan_cuda", False), "lock")
            if os.path.exists(lock):
                os.remove(lock)
                print(f"check-fused: removed a stale build lock {lock}", flush=True)
        except Exception:
            pass
    load_scan_ext(args.anchor_dir)
    print(f"check-fused: selective-scan extension ready in {time.time() - t0:.1f} s (from {args.anchor_dir})",
          flush=True)
    ok = True
    for T in (96, 2100):
        res = {}
        for scan in ("sequential", "fused"):
            torch.manual_seed(1234)
            net = build("mamba", T, scan).to(dev)
            torch.manual_seed(99)
            x, y = torch.randn(4, T, C_IN).to(dev), torch.randn(4, HORIZON, C_IN).to(dev)
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            res[scan] = (loss.item(), {n: p.grad.detach().clone() for n, p in net.named_parameters()})
        (l0, g0), (l1, g1) = res["sequential"], res["fused"]
        loss_rel = abs(l1 - l0) / max(abs(l0), 1e-30)
        errs = {n: ((g1[n] - g0[n]).norm() / g0[n].norm().clamp_min(1e-30)).item() for n in g0}
        worst = max(errs, key=errs.get)
        good = loss_rel < 1e-4 and errs[worst] < 1e-3
        ok = ok and good
        print(f"check-fused T={T}: loss sequential {l0:.7g} fused {l1:.7g} (relative {loss_rel:.1e}); worst "
              f"gradient relative error {errs[worst]:.1e} ({worst}) -> {'ok' if good else 'MISMATCH'}", flush=True)
    print(f"check-fused: {'PASS' if ok else 'FAIL'}", flush=True)
    sys.exit(0 if ok else 1)


def run_single(model, T, args):
    import torch
    if args.device == "cuda":
        run_single_cuda(model, T, args)
        return
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
    """Returns (row fields, None) or (None, reason). On cuda the row has an 8th field: a dict of the
    child's notes (wall_ms, reserved_mib, warmup_s, sdpa, graph_breaks)."""
    cuda = args.device == "cuda"
    if not cuda:  # on the GPU an out-of-memory case fails fast and says so; no estimate needed
        need = estimate_bytes(model, T, args.batch, scan)
        avail = mem_available_bytes()
        if need > 0.8 * avail:
            return None, f"skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
    cmd = [sys.executable, os.path.abspath(__file__), "--single", model, str(T), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--mamba-scan", scan]
    if cuda:
        cmd += ["--device", "cuda", "--anchor-dir", args.anchor_dir, "--sdpa-backend", args.sdpa_backend]
        cmd += ["--tf32"] if args.tf32 else []
        cmd += ["--bf16"] if args.bf16 else []
        if args.compile:
            cmd += ["--compile", "--compile-mode", args.compile_mode]
            cmd += ["--compile-dynamic"] if args.compile_dynamic else []
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.max_seconds)
    except subprocess.TimeoutExpired:
        return None, f"skipped: over --max-seconds {args.max_seconds}"
    for line in p.stdout.splitlines():
        if line.startswith(TAG):
            f = line.split()
            row = (f[1], int(f[2]), int(f[3]), int(f[4]), float(f[5]), float(f[6]), float(f[7]))
            if cuda:
                row += (dict(kv.split("=", 1) for kv in f[8:] if "=" in kv),)
            return row, None
    for line in p.stdout.splitlines():
        if line.startswith(ERROR_TAG):
            return None, line[len(ERROR_TAG):].strip()
    return None, f"failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:] if p.stderr else ''}"


def cuda_note(extra):
    """The console note of a cuda row: what the CSV has no column for."""
    parts = [f"wall {extra['wall_ms']} ms" if "wall_ms" in extra else "",
             f"reserved {float(extra['reserved_mib']):.0f} MiB" if "reserved_mib" in extra else "",
             f"sdpa {extra['sdpa']}" if "sdpa" in extra else "",
             f"warm-up {extra['warmup_s']} s" if "warmup_s" in extra else "",
             f"graph breaks {extra['graph_breaks']}" if "graph_breaks" in extra else ""]
    return ", ".join(p for p in parts if p)


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
    ap.add_argument("--mamba-scan", choices=["auto", "sequential", "parallel", "fused"], default="auto",
                    help="auto: sequential and parallel on the CPU; on cuda parallel, and fused when --anchor-dir "
                         "holds the kernel's sources; the faster is reported. fused: cuda only")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--anchor-dir", default=DEFAULT_ANCHOR_DIR,
                    help="mamba_ssm selective-scan sources for --mamba-scan fused (default: %(default)s)")
    ap.add_argument("--compile", action="store_true", help="cuda: time torch.compile(model)")
    ap.add_argument("--compile-mode", default="default",
                    choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    ap.add_argument("--compile-dynamic", action="store_true",
                    help="torch.compile(dynamic=True): one graph for every T, so that a later length can reuse the "
                         "compile caches of an earlier one (default: static shapes, PyTorch's default)")
    ap.add_argument("--sdpa-backend", choices=["auto", "efficient", "flash", "cudnn", "math"], default="auto",
                    help="cuda: force the transformer's SDPA backend (auto: PyTorch's choice, reported)")
    ap.add_argument("--tf32", action="store_true",
                    help="cuda: float32 GEMMs and cuDNN on TF32 tensor cores (seqlab bench --matmul-precision high)")
    ap.add_argument("--bf16", action="store_true",
                    help="cuda: the forward and loss under torch.autocast to bfloat16 (GEMMs, cuDNN, SDPA; the "
                         "counterpart of seqlab bench --matmul-precision medium, which casts only its GEMMs)")
    ap.add_argument("--check-fused", action="store_true",
                    help="build the fused scan and compare it with the sequential scan (loss, gradients); exit")
    ap.add_argument("--single", nargs=2, metavar=("MODEL", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.anchor_dir = os.path.abspath(args.anchor_dir)
    cuda = args.device == "cuda"
    if not cuda and (args.mamba_scan == "fused" or args.compile or args.sdpa_backend != "auto" or args.tf32
                     or args.bf16):
        ap.error("--mamba-scan fused, --compile, --sdpa-backend, --tf32 and --bf16 need --device cuda")
    if args.tf32 and args.bf16:
        ap.error("--tf32 and --bf16 are two different rows: pick one")
    if args.compile_dynamic and not args.compile:
        ap.error("--compile-dynamic goes with --compile")
    if args.check_fused:
        check_fused(args)
        return
    if args.single:
        run_single(args.single[0], int(args.single[1]), args)
        return
    # a `timeout` (SIGTERM) stops the case in flight too: subprocess.run kills its child on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import torch  # noqa: F401  (only for the version line)
    if cuda:
        have_anchor = os.path.isfile(os.path.join(args.anchor_dir, "selective_scan.cpp"))
        mode = "eager"
        if args.compile:
            mode = f"torch.compile(mode={args.compile_mode}{', dynamic=True' if args.compile_dynamic else ''})"
        print(f"pytorch bench: torch {torch.__version__} (CUDA {torch.version.cuda}), device cuda "
              f"({torch.cuda.get_device_name(0)}), {'TF32 GEMMs (--tf32)' if args.tf32 else 'bfloat16 autocast (--bf16)' if args.bf16 else 'strict fp32 (TF32 off)'}, B={args.batch}, median of {args.steps} "
              f"steps after {args.warmup} warm-up, timed with CUDA events; "
              f"{mode}; "
              f"peak_MiB (CSV peak_rss_mib) is torch.cuda.max_memory_allocated() of the case, base_rss_mib "
              f"memory_allocated() before the first step", flush=True)
    else:
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
            if model != "mamba" or args.mamba_scan != "auto":
                scans = [args.mamba_scan]
            elif cuda:
                scans = ["parallel", "fused"] if have_anchor else ["parallel"]
            else:
                scans = ["sequential", "parallel"]
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
            row, scan = best
            m, t, b, params, step_ms, rss, base = row[:7]
            g = step_gflop(model, T, args.batch)
            sps, gflops = b / (step_ms / 1e3), g / (step_ms / 1e3)
            note = f"best: {scan} ({'; '.join(notes)})" if model == "mamba" else ""
            if cuda:
                note = "; ".join(n for n in (cuda_note(row[7]), note) if n)
            print(f"{m:<12} {t:>6} {params:>9} {step_ms:>11.2f} {sps:>11.1f} {rss:>10.1f} {g:>9.2f} {gflops:>9.2f}  "
                  f"{note}", flush=True)
            if out:
                print(f"{m},{t},{b},{params},{step_ms:.3f},{sps:.2f},{rss:.1f},{g:.4f},{gflops:.3f},{base:.1f}", file=out,
                      flush=True)
    if out:
        out.close()


if __name__ == "__main__":
    main()
