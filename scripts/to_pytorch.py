#!/usr/bin/python3
"""Open a seqlab run directory in PyTorch: the model of its config.resolved.toml as a torch.nn.Module
with the weights of its checkpoint-best.h5 (or checkpoint-last.h5).

    python3 scripts/to_pytorch.py RUN_DIR [--checkpoint best|last] [--dtype float64|float32]
    python3 scripts/to_pytorch.py RUN_DIR --check FILE.h5     # exit 1 when outputs differ

As a library: `model = load_run(run_dir)`; `model(x)` maps x (B, T, C) -> (B, P, C') like seqlab's
SequenceModel (layers/model.h), in eval mode (dropout off). Every layer's maths is pure PyTorch,
written from seqlab's own layers (layers/*.cpp); where seqlab differs from the reference
implementation the comment at the module says how, and the code follows seqlab, so both give the
same outputs. Parameter names follow the reference where one exists (torch.nn.RNN/LSTM/GRU,
torch.nn.TransformerEncoderLayer, state-spaces S4D, mamba_ssm's Mamba); `SEQLAB_TO_TORCH` below is the
rename table. `--check` reads /params/x (B, T, C) and /params/y (seqlab's output on x) from an HDF5
file (tests/test_pytorch_interop.cpp writes it) and compares in float64 and float32 (--rtol).
Glossary: B batch, T time, D d_model, E expand * D, N state size, M = N/2 pairs, H heads, P horizon.
Complex sums are written as products and .sum(), never as complex dot products: Debian's torch
1.13 returns 0 for torch.dot / vdot / 1-D @ of complex128 vectors (matmul of matrices is right).
"""
import argparse
import math
import os
import re
import sys

try:
    import h5py
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # exit code 77: the tests report "skipped" (Debian: python3-torch python3-h5py)
    print(f"to_pytorch.py: cannot import torch and h5py: {e}", file=sys.stderr)
    sys.exit(77)

try:
    import tomllib
except ImportError:  # python < 3.11: config.resolved.toml uses only key = value lines and [tables]
    tomllib = None


# ---------------------------------------------------------------------------------------------
# Reading a run directory


def _parse_value(v):
    v = v.strip()
    if v in ("true", "false"):
        return v == "true"
    if v.startswith('"'):
        return v[1:-1].encode().decode("unicode_escape")
    if v.startswith("["):
        inner = v[1:-1].strip()
        return [_parse_value(p) for p in inner.split(",")] if inner else []
    if re.fullmatch(r"[+-]?\d+", v):
        return int(v)
    return float(v)  # also inf, nan


def _read_toml_small(text):
    """Enough of TOML for config.resolved.toml: [table], [[array]], key = scalar or flat array."""
    root = {}
    cur = root
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            name = line[2:-2].strip()
            cur = {}
            root.setdefault(name, []).append(cur)
        elif line.startswith("["):
            cur = root.setdefault(line[1:-1].strip(), {})
        else:
            k, _, v = line.partition("=")
            k = k.strip().strip('"')
            if "#" in v and not v.strip().startswith('"'):
                v = v.split("#", 1)[0]
            cur[k] = _parse_value(v)
    return root


def read_config(run_dir):
    path = os.path.join(run_dir, "config.resolved.toml")
    with open(path, "rb") as f:
        raw = f.read()
    if tomllib is not None:
        return tomllib.loads(raw.decode())
    return _read_toml_small(raw.decode())


def read_params(path):
    """{seqlab name: numpy array} from a checkpoint's /params group."""
    out = {}
    with h5py.File(path, "r") as f:
        if "params" not in f:
            raise SystemExit(f"{path}: no /params group (not a seqlab checkpoint)")
        f["params"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


# ---------------------------------------------------------------------------------------------
# The wrapper's pieces (layers/norm, layers/revin, layers/model)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight (layers/norm.h)."""

    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RevIN(nn.Module):
    """Kim et al. 2022 (layers/revin.cpp): per-window, per-channel statistics over time, biased
    variance, std = sqrt(var + eps); denormalise divides by (weight + eps^2) as the reference code."""

    def __init__(self, channels, affine=True, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

    def normalize(self, x):  # (B, T, C) -> (B, T, C), statistics (B, 1, C) kept for denormalize
        self.mean = x.detach().mean(1, keepdim=True)
        var = (x.detach() - self.mean).pow(2).mean(1, keepdim=True)
        self.std = torch.sqrt(var + self.eps)
        y = (x - self.mean) / self.std
        return y * self.weight + self.bias if self.affine else y

    def denormalize(self, y):  # (B, P, C)
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * self.std + self.mean


class Block(nn.Module):
    """x + mixer(norm(x)) [+ flip(mixer_rev(flip(norm(x))))] (layers/model.cpp Block; dropout off)."""

    def __init__(self, norm, mixer, mixer_rev=None):
        super().__init__()
        self.norm = norm
        self.mixer = mixer
        self.mixer_rev = mixer_rev

    def forward(self, x):
        n = self.norm(x)
        m = self.mixer(n)
        if self.mixer_rev is not None:
            m = m + self.mixer_rev(n.flip(1)).flip(1)
        return x + m


class SequenceModel(nn.Module):
    """seqlab's SequenceModel (layers/model.h): tokens -> input Linear (or an embedding) -> blocks ->
    norm_f -> head, RevIN optional, channel-independent series optional."""

    def __init__(self, o, mixers, mixers_rev):
        super().__init__()
        self.o = o
        D = o["d_model"]
        make_norm = (lambda: RMSNorm(D)) if o["norm"] == "rmsnorm" else (lambda: nn.LayerNorm(D, eps=1e-5))
        if o["vocab_size"] > 0:
            self.embedding = nn.Parameter(torch.zeros(o["vocab_size"], D))  # seqlab: a (V, D) table, "embedding"
        else:
            self.input = nn.Linear(o["token_in"], D)
        self.blocks = nn.ModuleList(
            Block(make_norm(), m, r) for m, r in zip(mixers, mixers_rev or [None] * len(mixers)))
        self.norm_f = make_norm()
        if not o.get("tie_embeddings"):
            self.head = nn.Linear(o["head_in"], o["head_out"])
        if o["revin"]:
            self.revin = RevIN(o["in_channels"], o["revin_affine"])

    def num_tokens(self, T, C):
        o = self.o
        if o["embed"] == "variate":
            return C
        if o["patch_len"] == 1 and o["patch_stride"] == 1:
            return T
        return (T - o["patch_len"]) // o["patch_stride"] + 1

    def tokens(self, x):  # (B, T, C) -> (B, L, patch_len * C) or (B, C, T)
        o = self.o
        B, T, C = x.shape
        if o["embed"] == "variate":
            return x.transpose(1, 2)
        n, s = o["patch_len"], o["patch_stride"]
        if n == 1 and s == 1:
            return x
        L, start = self.num_tokens(T, C), (T - n) % s  # patches end at the newest step
        return torch.stack([x[:, start + l * s:start + l * s + n].reshape(B, n * C) for l in range(L)], 1)

    def trunk(self, h):
        for b in self.blocks:
            h = b(h)
        return self.norm_f(h)

    def forward(self, x):
        o = self.o
        if o["vocab_size"] > 0:  # token ids (B, T) -> logits (B, T, V)
            h = self.trunk(self.embedding[x.long()])
            return h @ self.embedding.t() if o.get("tie_embeddings") else self.head(h)
        B, T, C = x.shape
        P = o["pred_len"]
        xin = self.revin.normalize(x) if o["revin"] else x
        Bs = B
        if o["channel_independent"]:
            xin = xin.permute(0, 2, 1).reshape(B * C, T, 1)
            Bs = B * C
        h = self.trunk(self.input(self.tokens(xin).contiguous()))  # (Bs, L, D)
        if o["head"] == "token":  # variate tokens: (Bs, C, P) -> (Bs, P, C)
            y = self.head(h).transpose(1, 2)
        else:
            h = h[:, -1] if o["head"] == "last" else h.reshape(Bs, -1)
            y = self.head(h).reshape(Bs, P, -1)
        if o["channel_independent"]:
            y = y.reshape(B, C, P).permute(0, 2, 1)
        return self.revin.denormalize(y) if o["revin"] else y


# ---------------------------------------------------------------------------------------------
# Mixers, one per registry family


class RNN(nn.RNN):
    """torch.nn.RNN(tanh) itself: seqlab's rnn uses PyTorch's equations, gate order and names."""

    def forward(self, x):
        return super().forward(x)[0]


class LSTM(nn.LSTM):
    def forward(self, x):
        return super().forward(x)[0]


class GRU(nn.GRU):
    def forward(self, x):
        return super().forward(x)[0]


class PositionwiseMLP(nn.Module):
    """mlp: Linear(D -> expand D) -> activation -> Linear(-> D) at every step; names mlp.layers.<i>.*."""

    def __init__(self, d, expand, activation):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.layers = nn.ModuleList([nn.Linear(d, expand * d), nn.Linear(expand * d, d)])
        self.act = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                    "identity": lambda v: v}[activation]

    def forward(self, x):
        return self.mlp.layers[1](self.act(self.mlp.layers[0](x).contiguous()))


def sinusoidal_positions(T, D, dtype):
    """pe[t, 2i] = sin(t / 10000^(2i/D)), pe[t, 2i+1] = cos(same) (layers/attention.cpp)."""
    t = torch.arange(T, dtype=torch.float64)[:, None]
    div = torch.exp(-torch.arange(0, D, 2, dtype=torch.float64) * math.log(10000.0) / D)
    pe = torch.zeros(T, D, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(t * div)
    pe[:, 1::2] = torch.cos(t * div)[:, :D // 2]
    return pe.to(dtype)


class TransformerLayer(nn.TransformerEncoderLayer):
    """torch.nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True), the
    layer seqlab's transformer implements. seqlab adds its optional position encoding at the layer's
    input (pos_weight: a learned (max_len, D) table; sinusoidal: no parameter), which the torch layer
    has not; and seqlab's MHA is one fused kernel with the same maths (softmax(q k^T / sqrt(Dh)) v)."""

    def __init__(self, d, n_heads, d_ff, causal, pos_encoding, max_len, norm_eps):
        super().__init__(d, n_heads, d_ff, dropout=0.0, activation="gelu", layer_norm_eps=norm_eps,
                         batch_first=True, norm_first=True)
        self.causal, self.pos_encoding = causal, pos_encoding
        if pos_encoding == "learned":
            self.pos_weight = nn.Parameter(torch.zeros(max_len, d))

    def forward(self, x):
        T, D = x.shape[1], x.shape[2]
        if self.pos_encoding == "learned":
            x = x + self.pos_weight[:T]
        elif self.pos_encoding == "sinusoidal":
            x = x + sinusoidal_positions(T, D, x.dtype)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1) if self.causal else None  # True: not attended
        n = self.norm1(x)
        x = x + self.dropout1(self.self_attn(n, n, n, attn_mask=mask, need_weights=False)[0])
        f = F.gelu(self.linear1(self.norm2(x)).contiguous())  # contiguous: torch 1.13's GELU
        return x + self.dropout2(self.linear2(self.dropout(f)))


def causal_conv_fft(u, K):
    """y[b, t, d] = sum_{j<=t} K[d, j] u[b, t-j, d]; with K (2, D, T) the anti-causal half
    sum_j K[1, d, j] u[b, t+1+j, d] is added (s4.py's bidirectional layout). u (B, T, D).
    seqlab pads to the next 2,3,5-smooth length >= 2T - 1; 2T gives the same linear convolution."""
    T = u.shape[1]
    if K.dim() == 3:
        K = F.pad(K[0], (0, T)) + F.pad(K[1].flip(-1), (T, 0))
    else:
        K = F.pad(K, (0, T))
    n = 2 * T
    y = torch.fft.irfft(torch.fft.rfft(u.transpose(1, 2), n=n) * torch.fft.rfft(K, n=n), n=n)[..., :T]
    return y.transpose(1, 2)


class _SSMConvGLU(nn.Module):
    """What S4D, S4 and LSSL share: y = gelu(K * u + D u) -> Linear(D -> 2D) -> GLU. The references
    (state-spaces s4d.py, s4.py) use output_linear = Conv1d(H, 2H, 1) + GLU on (B, H, L): the same
    matrix, here seqlab's out_proj Linear on (B, T, D)."""

    def _out(self, u, K):
        pre = causal_conv_fft(u, K) + u * self.D
        return F.glu(self.out_proj(F.gelu(pre.contiguous())), dim=-1)


class S4D(_SSMConvGLU):
    """state-spaces s4d.py's S4D with its kernel's parameters at the top level (log_dt (D),
    log_A_real, A_imag (D, M), C (D, M, 2) as view_as_real, or (2, D, M, 2) bidirectional; the reference
    nests them as kernel.*). K = 2 Re(sum_m C (exp(dtA) - 1) / A exp(dtA l)), ZOH, as the reference."""

    def __init__(self, d, d_state, bidirectional):
        super().__init__()
        M = d_state // 2
        self.log_dt = nn.Parameter(torch.zeros(d))
        self.log_A_real = nn.Parameter(torch.zeros(d, M))
        self.A_imag = nn.Parameter(torch.zeros(d, M))
        self.C = nn.Parameter(torch.zeros((2, d, M, 2) if bidirectional else (d, M, 2)))
        self.D = nn.Parameter(torch.zeros(d))
        self.out_proj = nn.Linear(d, 2 * d)

    def extra_repr(self):
        return f"d_model={self.D.shape[0]}, d_state={2 * self.A_imag.shape[1]}, bidirectional={self.C.dim() == 4}"

    def kernel(self, T):  # (D, T) or (2, D, T)
        dt = torch.exp(self.log_dt)                                     # (D)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)     # (D, M)
        dtA = A * dt[:, None]                                           # (D, M)
        C = torch.view_as_complex(self.C.contiguous()) * (torch.exp(dtA) - 1) / A  # ([2,] D, M)
        V = torch.exp(dtA[..., None] * torch.arange(T, dtype=self.log_dt.dtype))   # (D, M, T)
        return 2 * torch.einsum("...dm,dmt->...dt", C, V).real

    def forward(self, u):
        return self._out(u, self.kernel(u.shape[1]))


def hippo_legs(N):
    """A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); B_n = sqrt(2n+1)."""
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A = -torch.tril(q[:, None] * q[None, :], -1) - torch.diag(torch.arange(1, N + 1, dtype=torch.float64))
    return A, q.clone()


class LSSL(_SSMConvGLU):
    """LSSL (Gu et al. 2021) as seqlab has it (layers/s4.h): fixed HiPPO-LegS A, B (buffers), learned
    log_dt (D), C (D, N), D (D); K[d, l] = C dA^l dB with the bilinear dA = (I - dt/2 A)^-1 (I + dt/2 A),
    dB = (I - dt/2 A)^-1 dt B. No reference code of this exact layer; like seqlab the kernel is computed
    in float64 whatever the module's dtype."""

    def __init__(self, d, d_state):
        super().__init__()
        A, B = hippo_legs(d_state)
        self.register_buffer("A", A, persistent=False)
        self.register_buffer("B", B, persistent=False)
        self.log_dt = nn.Parameter(torch.zeros(d))
        self.C = nn.Parameter(torch.zeros(d, d_state))
        self.D = nn.Parameter(torch.zeros(d))
        self.out_proj = nn.Linear(d, 2 * d)

    def extra_repr(self):
        return f"d_model={self.D.shape[0]}, d_state={self.C.shape[1]}"

    def kernel(self, T):
        A, B = self.A.double(), self.B.double()
        N = A.shape[0]
        dt = torch.exp(self.log_dt.double())                            # (D)
        h = (dt / 2)[:, None, None]
        I = torch.eye(N, dtype=torch.float64)
        R1 = I - h * A                                                  # (D, N, N)
        dA = torch.linalg.solve(R1, I + h * A)                          # (D, N, N)
        x = torch.linalg.solve(R1, (B[None, :] * dt[:, None])[..., None])[..., 0]  # dB (D, N)
        C = self.C.double()
        K = []
        for _ in range(T):
            K.append((C * x).sum(-1))
            x = (dA @ x[..., None])[..., 0]
        return torch.stack(K, -1).to(self.log_dt.dtype)                # (D, T)

    def forward(self, u):
        return self._out(u, self.kernel(u.shape[1]))


class S4(_SSMConvGLU):
    """S4 (Gu, Goel, Re 2022) as seqlab parameterises it (layers/s4.h): per channel Lambda =
    -exp(log_A_real) + i A_imag (D, M), P, B, C (D, M, 2) complex as (re, im), log_dt (D), D (D); the
    full system of N = 2M states is conjugate-symmetric, A = diag(Lambda, conj Lambda) - [P; conj P]
    [P; conj P]^*. The kernel is seqlab's (core/kernels/s4.cpp): C~ = C (I - dA^T) by T transposed
    bilinear steps, the DPLR generating function at the T-th roots of unity by Cauchy sums and
    Woodbury, and an inverse real DFT; computed in complex128 whatever the module's dtype, as seqlab.
    The reference (state-spaces SSMKernelDPLR) stores other quantities (inv_dt, A_real through a
    transform, C~ itself, kernel.*-prefixed names); its state dict does not map one to one."""

    def __init__(self, d, d_state):
        super().__init__()
        M = d_state // 2
        self.log_dt = nn.Parameter(torch.zeros(d))
        self.log_A_real = nn.Parameter(torch.zeros(d, M))
        self.A_imag = nn.Parameter(torch.zeros(d, M))
        self.P = nn.Parameter(torch.zeros(d, M, 2))
        self.B = nn.Parameter(torch.zeros(d, M, 2))
        self.C = nn.Parameter(torch.zeros(d, M, 2))
        self.D = nn.Parameter(torch.zeros(d))
        self.out_proj = nn.Linear(d, 2 * d)

    def extra_repr(self):
        return f"d_model={self.D.shape[0]}, d_state={2 * self.A_imag.shape[1]}"

    def kernel(self, T):
        cplx = lambda p: torch.view_as_complex(p.double().contiguous())
        dt = torch.exp(self.log_dt.double())[:, None]                    # (D, 1)
        h = dt / 2
        lam = torch.complex(-torch.exp(self.log_A_real.double()), self.A_imag.double())  # (D, M)
        P, Bv, C = cplx(self.P), cplx(self.B), cplx(self.C)              # (D, M)
        inv1 = 1 / (1 - h * lam)
        e = P.conj() * inv1
        kappa = (2 * P.abs() ** 2 * inv1.real).sum(-1, keepdim=True)     # (D, 1)
        c = h / (1 + h * kappa)
        x = C
        for _ in range(T):  # one transposed step x' = R1^-T R2^T x (Sherman-Morrison), T times: C dA^T
            s1 = 2 * (P * x).real.sum(-1, keepdim=True)
            q = (x + h * (lam * x - P.conj() * s1)) * inv1
            s2 = 2 * (P * q).real.sum(-1, keepdim=True)
            x = q - e * (c * s2)
        Ct = C - x                                                       # (D, M)
        k = torch.arange(T // 2 + 1, dtype=torch.float64)
        z = torch.exp(torch.complex(torch.zeros_like(k), -2 * math.pi * k / T))[None, :, None]  # (1, F, 1)
        alpha, beta = (2 / dt[:, :, None]) * (1 - z), 1 + z             # (D, F, 1), (1, F, 1)
        idm = 1 / (alpha - beta * lam[:, None, :])                       # (D, F, M)
        idc = 1 / (alpha - beta * lam.conj()[:, None, :])
        r = lambda n: (n[:, None, :] * idm + n.conj()[:, None, :] * idc).sum(-1)  # (D, F)
        r00, r01, r10 = r(Ct * Bv), r(Ct * P), r(P.conj() * Bv)
        r11 = ((P.abs() ** 2)[:, None, :] * (idm + idc)).sum(-1)
        beta = beta[..., 0]
        Fk = 2 * (r00 - beta * r01 * r10 / (1 + beta * r11))            # (D, F)
        return torch.fft.irfft(Fk, n=T).to(self.log_dt.dtype)           # (D, T)

    def forward(self, u):
        return self._out(u, self.kernel(u.shape[1]))


class Mamba(nn.Module):
    """mamba_ssm's Mamba block (mamba_simple.py) with its parameter names: in_proj (2E, D, no bias),
    conv1d (depthwise, E x 1 x K; seqlab stores (E, K)), x_proj (R + 2N, E), dt_proj (E, R) + bias,
    A_log (E, N), D (E), out_proj (D, E). The selective scan is the sequential loop of
    selective_scan_ref: delta = softplus(dt_proj(dt)) (bias inside the softplus, as the fused kernel),
    h = exp(delta A) h + delta B u, y = (C . h + D u) * silu(z)."""

    def __init__(self, d, d_state, d_conv, expand, dt_rank):
        super().__init__()
        E, R = expand * d, dt_rank if dt_rank > 0 else (d + 15) // 16
        self.E, self.N, self.R = E, d_state, R
        self.in_proj = nn.Linear(d, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.zeros(E, d_state))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d, bias=False)

    def extra_repr(self):
        return f"d_inner={self.E}, d_state={self.N}, dt_rank={self.R}"

    def forward(self, u):  # (B, T, D)
        T = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)                                   # (B, T, E) each
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :T]).transpose(1, 2)       # causal: first T outputs
        dt, Bm, Cm = self.x_proj(x).split([self.R, self.N, self.N], dim=-1)       # (B, T, R), (B, T, N) x2
        delta = F.softplus(self.dt_proj(dt))                                      # (B, T, E)
        A = -torch.exp(self.A_log)                                                # (E, N)
        h = x.new_zeros(x.shape[0], self.E, self.N)                               # (B, E, N)
        ys = []
        for t in range(T):
            h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t, :, None] * Bm[:, t, None, :]) * x[:, t, :, None]
            ys.append((h * Cm[:, t, None, :]).sum(-1))                           # (B, E)
        y = (torch.stack(ys, 1) + x * self.D) * F.silu(z)                         # (B, T, E)
        return self.out_proj(y)


# ---------------------------------------------------------------------------------------------
# Building from a config, and the rename table


def _model_options(cfg, params):
    m = dict(cfg["model"]) if "model" in cfg else None
    if m is None:
        raise SystemExit("config.resolved.toml has no [model] (a comparison: open one model's directory, "
                         "dir/<name>, instead)")
    data = cfg.get("data", {})
    D = m["d_model"]
    o = {k: m.get(k, dflt) for k, dflt in [
        ("type", "lstm"), ("d_model", 64), ("n_layers", 2), ("head", "last"), ("norm", "layernorm"), ("embed", "time"),
        ("patch_len", 1), ("patch_stride", 0), ("channel_independent", False), ("bidir", False), ("revin", False),
        ("revin_affine", True)]}
    o["patch_stride"] = o["patch_stride"] or o["patch_len"]
    o["pred_len"] = data.get("pred_len", 1)
    o["seq_len"] = data.get("seq_len", 0)
    o["vocab_size"] = params["embedding"].shape[0] if "embedding" in params else 0
    # Widths from the checkpoint's shapes: what the data implied (channels, features) need not be read.
    if o["vocab_size"] == 0:
        o["token_in"] = params["input.weight"].shape[1]
    o["tie_embeddings"] = o["vocab_size"] > 0 and "head.weight" not in params  # logits = h @ embedding^T
    if not o["tie_embeddings"]:
        o["head_in"], o["head_out"] = params["head.weight"].shape[1], params["head.weight"].shape[0]
    if o["revin"]:
        o["in_channels"] = params["revin.weight"].shape[0] if "revin.weight" in params else (
            o["token_in"] // o["patch_len"])
        o["revin_affine"] = "revin.weight" in params
    assert o["d_model"] == D
    return o, m


def make_mixer(kind, D, m):
    """The mixer of a block from the [model] table's layer options (config.resolved.toml writes the
    layer's `dropout` option as mixer_dropout; dropout is off here: eval mode)."""
    g = lambda k, d: m.get(k, d)
    if kind in ("rnn", "lstm", "gru"):
        cls = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[kind]
        return cls(D, D, num_layers=g("num_layers", 1), bias=g("bias", True), batch_first=True)
    if kind == "mlp":
        return PositionwiseMLP(D, g("expand", 2), g("activation", "gelu"))
    if kind == "transformer":
        return TransformerLayer(D, g("n_heads", 4), g("d_ff", 0) or 4 * D, g("causal", False), g("pos_encoding", "none"),
                                g("max_len", 1024), g("norm_eps", 1e-5))
    if kind == "s4d":
        return S4D(D, g("d_state", 64), g("bidirectional", False))
    if kind == "lssl":
        return LSSL(D, g("d_state", 64))
    if kind == "s4":
        return S4(D, g("d_state", 64))
    if kind == "mamba":
        dt_rank = g("dt_rank", 0)
        return Mamba(D, g("d_state", 16), g("d_conv", 4), g("expand", 2), 0 if dt_rank == "auto" else dt_rank)
    raise SystemExit(f"layer type '{kind}' has no PyTorch counterpart in this script "
                     "(rnn, lstm, gru, mlp, transformer, s4d, s4, lssl, mamba)")


# seqlab name (a regex on the part after blocks.<i>.mixer[_rev].) -> the torch name. Unlisted names
# are the same in both (weight_ih_l0, norm1.weight, linear1.bias, log_dt, A_log, in_proj.weight, ...).
SEQLAB_TO_TORCH = [
    (r"attn\.in_proj\.weight", "self_attn.in_proj_weight"),  # (3D, D): rows q, k, v as PyTorch
    (r"attn\.in_proj\.bias", "self_attn.in_proj_bias"),
    (r"attn\.out_proj\.(weight|bias)", r"self_attn.out_proj.\1"),
    (r"pos\.weight", "pos_weight"),
]


def torch_name(name):
    mm = re.match(r"(blocks\.\d+\.mixer(?:_rev)?\.)(.*)", name)
    if not mm:
        return name
    for pat, rep in SEQLAB_TO_TORCH:
        if re.fullmatch(pat, mm.group(2)):
            return mm.group(1) + re.sub(pat, rep, mm.group(2))
    return name


def build_model(cfg, params, dtype=torch.float64):
    o, m = _model_options(cfg, params)
    kind, D = o["type"], o["d_model"]
    mixers = [make_mixer(kind, D, m) for _ in range(o["n_layers"])]
    mixers_rev = [make_mixer(kind, D, m) for _ in range(o["n_layers"])] if o["bidir"] else None
    model = SequenceModel(o, mixers, mixers_rev)
    load_params(model, params)
    return model.to(dtype).eval()


def load_params(model, params):
    """Copies every seqlab parameter into the module; every one must find its place and fill it."""
    own = dict(model.named_parameters())
    missing = set(own)
    with torch.no_grad():
        for name, value in params.items():
            tname = torch_name(name)
            if tname not in own:
                raise SystemExit(f"checkpoint parameter '{name}' (torch '{tname}') has no place in the module")
            p = own[tname]
            v = torch.from_numpy(np.asarray(value))
            if tuple(v.shape) != tuple(p.shape):
                if v.numel() != p.numel():  # conv1d.weight: seqlab (E, K), torch (E, 1, K)
                    raise SystemExit(f"'{name}': checkpoint shape {tuple(v.shape)}, module expects {tuple(p.shape)}")
                v = v.reshape(p.shape)
            p.copy_(v.to(p.dtype))
            missing.discard(tname)
    if missing:
        raise SystemExit(f"module parameters not in the checkpoint: {sorted(missing)}")


def load_run(run_dir, checkpoint="best", dtype=torch.float64):
    """The run's model as a torch.nn.Module in eval mode, weights from checkpoint-<checkpoint>.h5."""
    cfg = read_config(run_dir)
    path = os.path.join(run_dir, f"checkpoint-{checkpoint}.h5")
    if not os.path.exists(path):
        raise SystemExit(f"{path}: not found")
    return build_model(cfg, read_params(path), dtype)


# ---------------------------------------------------------------------------------------------
# The command line


def check(model32, model64, path, rtol=1e-5):
    """Compares the modules' outputs on /params/x with seqlab's /params/y; False (and a message
    naming the worst index and both values) when they differ by more than rtol of the output's scale."""
    p = read_params(path)
    x, y = p["x"], p["y"]
    ok = True
    for name, model, tol in (("float64", model64, rtol), ("float32", model32, rtol)):
        with torch.no_grad():
            xt = torch.from_numpy(x)
            out = model(xt if xt.dtype == torch.int32 else xt.to(next(model.parameters()).dtype)).double().numpy()
        if out.shape != y.shape:
            print(f"{name}: output shape {out.shape}, seqlab {y.shape}")
            return False
        scale = max(1.0, float(np.abs(y).max()))
        err = np.abs(out - y)
        i = np.unravel_index(int(err.argmax()), err.shape)
        worst = float(err[i]) / scale
        good = worst <= tol
        print(f"{name}: max |torch - seqlab| / max(1, max|seqlab|) = {worst:.3e} (tolerance {tol:.0e}) at {tuple(int(j) for j in i)}: "
              f"torch {out[i]:.9g}, seqlab {y[i]:.9g}{'' if good else '  FAIL'}")
        ok = ok and good
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--checkpoint", choices=["best", "last"], default="best")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--check", metavar="FILE.h5", help="compare with seqlab's outputs in FILE.h5 (/params/x, /params/y)")
    ap.add_argument("--rtol", type=float, default=1e-5,
                    help="--check: largest |torch - seqlab| / max(1, max |seqlab|) accepted (default 1e-5)")
    a = ap.parse_args(argv)
    if a.check:
        m64 = load_run(a.run_dir, a.checkpoint, torch.float64)
        m32 = load_run(a.run_dir, a.checkpoint, torch.float32)
        print(f"parameters: {sum(p.numel() for p in m64.parameters())}")
        return 0 if check(m32, m64, a.check, a.rtol) else 1
    model = load_run(a.run_dir, a.checkpoint, getattr(torch, a.dtype))
    print(model)
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
