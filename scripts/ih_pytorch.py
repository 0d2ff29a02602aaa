#!/usr/bin/python3
"""The induction-heads protocol (Mamba paper, appendix E.1) trained in PyTorch, as an outside check
of seqlab's transformer on the same task: does a plain PyTorch transformer of the same size learn it
with the same data, batch, optimizer and number of steps?

Data: seqlab's InductionHeads generator (data/synthetic.cpp) re-written here: vocabulary 16, 0 is
the trigger, every other position an ordinary token 1..15 drawn uniformly, the trigger at a random
p in [0, T - 3] followed by the key x[p + 1], the trigger again at T - 1, and one scored token: the
key at T - 1. (Same distribution, not the same draws: the generators differ.)

Models (--arch):
  seqlab  seqlab's token model: embedding N(0, 1) -> 2 blocks x + T(LN(x)), where each transformer
          layer T adds sinusoidal positions at its input and is pre-LN (attention, GELU MLP 4D),
          -> final LN -> linear head. Mirrors layers/model.cpp + layers/transformer.cpp.
  gpt     the usual GPT-2 layout: embedding + sinusoidal positions once, 2 pre-LN layers, final LN,
          linear head.
Usage: /usr/bin/python3 scripts/ih_pytorch.py --arch seqlab --steps 30000 [--seq-len 256]
       [--targets all --triggers 4]   (safari's training data: loss on every next token, repeated pairs)
Prints validation accuracy (512 fixed sequences) every --eval-every steps, one line each.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sample(batch, T, gen, triggers=1):
    """x (batch, T), the key (batch,) and the next-token targets (batch, T): x[t + 1], the key at T - 1.
    triggers > 1: as safari's generator (HazyResearch/safari, src/dataloaders/synthetics.py), half
    the sequences get up to `triggers` trigger-key pairs (positions closer than 2 dropped), all with
    the same key."""
    x = torch.randint(1, 16, (batch, T), generator=gen)
    p = torch.randint(0, T - 2, (batch,), generator=gen)
    rows = torch.arange(batch)
    y = x[rows, p + 1].clone()
    x[rows, p] = 0
    if triggers > 1:
        many = torch.rand(batch, generator=gen) >= 0.5
        extra = torch.randint(0, T - 2, (batch, triggers - 1), generator=gen)
        for b in range(batch):
            if not many[b]:
                continue
            kept = [int(p[b])]
            for q in sorted(set(int(v) for v in extra[b]) | {int(p[b])}):
                if q != kept[0] and all(abs(q - k) >= 2 for k in kept):
                    kept.append(q)
            for q in kept:
                x[b, q] = 0
                x[b, q + 1] = y[b]
    x[:, T - 1] = 0
    nxt = torch.cat([x[:, 1:], y[:, None]], 1)
    return x, y, nxt


def sinusoid(T, D):
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    i = torch.arange(0, D, 2, dtype=torch.float32)[None, :]
    ang = pos / torch.pow(10000.0, i / D)
    pe = torch.zeros(T, D)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang)
    return pe


class Layer(nn.Module):
    def __init__(self, D, H, add_pos):
        super().__init__()
        self.H, self.add_pos = H, add_pos
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.out = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, h):
        B, T, D = h.shape
        if self.add_pos:
            h = h + sinusoid(T, D)
        q, k, v = self.qkv(self.ln1(h)).view(B, T, 3, self.H, D // self.H).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(D // self.H)
        s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        h = h + self.out(a)
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h).contiguous())).contiguous())


class Model(nn.Module):
    def __init__(self, arch, D=64, H=4, L=2):
        super().__init__()
        self.arch = arch
        self.emb = nn.Embedding(16, D)
        self.layers = nn.ModuleList(Layer(D, H, add_pos=(arch == "seqlab")) for _ in range(L))
        self.block_norms = nn.ModuleList(nn.LayerNorm(D) for _ in range(L)) if arch == "seqlab" else None
        self.lnf, self.head = nn.LayerNorm(D), nn.Linear(D, 16)

    def forward(self, x):
        h = self.emb(x)
        if self.arch == "gpt":
            h = h + sinusoid(x.shape[1], h.shape[2])
            for layer in self.layers:
                h = layer(h)
        else:
            for norm, layer in zip(self.block_norms, self.layers):
                h = h + layer(norm(h))
        return self.head(self.lnf(h))  # (B, T, V)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["seqlab", "gpt"], default="seqlab")
    ap.add_argument("--steps", type=int, default=30000)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", choices=["last", "all"], default="last",
                    help="train on the last token only (seqlab) or on every next token (safari)")
    ap.add_argument("--triggers", type=int, default=1, help="safari's induction_num_triggers")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = Model(a.arch)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(1000 + a.seed)
    vx, vy, _ = sample(512, a.seq_len, torch.Generator().manual_seed(1))  # validation: one trigger pair
    t0, run_loss = time.time(), 0.0
    for step in range(1, a.steps + 1):
        x, y, nxt = sample(a.batch, a.seq_len, gen, a.triggers)
        logits = model(x)
        if a.targets == "all":
            loss = F.cross_entropy(logits.reshape(-1, 16), nxt.reshape(-1))
        else:
            loss = F.cross_entropy(logits[:, -1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run_loss += loss.item()
        if step % a.eval_every == 0:
            with torch.no_grad():
                acc = (model(vx)[:, -1].argmax(-1) == vy).float().mean().item()
            print(f"step {step} train_loss {run_loss / a.eval_every:.4f} val_acc {acc:.3f} "
                  f"({(time.time() - t0) / step * 1e3:.1f} ms/step)", flush=True)
            run_loss = 0.0


if __name__ == "__main__":
    main()
