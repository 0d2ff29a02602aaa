#!/usr/bin/env python3
"""Where one PyTorch training step's GPU time goes: the model of bench/pytorch_reference.py (same
build, AdamW fused, strict fp32), a few warm-up steps, then one step under torch.profiler; prints
the CUDA kernels by total time with their launch counts, beside seqlab's `gpu-session.sh step-profile`
(docs/GPU.md: the LSTM step against cuDNN's).

    python3 bench/torch_step_profile.py --model lstm --seq-len 2880 [--top 15]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_reference as ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--seq-len", type=int, default=2880)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    ref.strict_fp32(torch)
    dev = torch.device("cuda")
    torch.manual_seed(1234)
    net = ref.build(args.model, args.seq_len, "parallel").to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
    x = torch.randn(args.batch, args.seq_len, ref.C_IN, device=dev)
    y = torch.randn(args.batch, ref.HORIZON, ref.C_IN, device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    kernels = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = e.device_time if hasattr(e, "device_time") else e.cuda_time
        n, t = kernels.get(e.name, (0, 0.0))
        kernels[e.name] = (n + 1, t + us)
    total = sum(t for _, t in kernels.values())
    launches = sum(n for n, _ in kernels.values())
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}: {args.model} T={args.seq_len} "
          f"B={args.batch}, one step: {launches} kernels, {total:.0f} us of GPU time")
    for name, (n, t) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"  {t:10.1f} us  {n:6d}x  {name[:110]}")


if __name__ == "__main__":
    main()
