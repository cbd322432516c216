"""The PyTorch eager baseline of `xtask/gpu-bench.sh`: the step `gpu_bench` times
(ResNet-20, CIFAR-10-shaped random data on the device, batch 128, SGD momentum 0.9, weight
decay 5e-4, a mask multiply of the weights after each step at --density), written the
idiomatic way (`nn.Module`, `torch.optim.SGD` with its default foreach implementation,
`torch.backends.cudnn.benchmark = True`). Prints one JSON line like `gpu_bench`'s, plus
the kernels one step launches on the device (torch.profiler), by name, so the step's
make-up can be compared (docs/performance.md).

Usage: <python with torch> bench/gpu_step.py DEVICE STEPS [--warmup N] [--density D]
       [--channels-last] [--profile]
"""
import argparse
import json
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from baselines import ResNet20, prunable  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("device")
    p.add_argument("steps", type=int)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = ResNet20().to(device)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    masks = [(torch.rand_like(w) < a.density).float() for w in prunable(model)]
    with torch.no_grad():
        for w, m in zip(prunable(model), masks):
            w.mul_(m)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(50_000, 3, 32, 32, device=device)
    labels = torch.randint(10, (50_000,), device=device)
    order = torch.randperm(50_000, device=device)
    batch = 128

    def step(i):
        idx = order[(i * batch) % (50_000 - batch):][:batch]
        x, y = images[idx], labels[idx]
        if a.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(prunable(model), masks)

    for i in range(a.warmup):
        step(i)
    sync(device)
    t = time.perf_counter()
    for i in range(a.steps):
        step(i)
    sync(device)
    seconds = time.perf_counter() - t
    out = {
        "label": "pytorch-eager",
        "device": str(device),
        "steps": a.steps,
        "batch": batch,
        "density": a.density,
        "channels_last": a.channels_last,
        "seconds": seconds,
        "epoch_s": seconds / a.steps * 391,
    }
    if a.profile:
        acts = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=acts) as prof:
            step(0)
            sync(device)
        kernels = Counter()
        ops = 0
        for e in prof.events():
            if device.type == "cuda" and e.device_type == torch.autograd.DeviceType.CUDA:
                kernels[e.name[:60]] += 1
            elif e.name.startswith("aten::"):
                ops += 1
        out["kernels_per_step"] = sum(kernels.values())
        out["aten_ops_per_step"] = ops
        out["top_kernels"] = kernels.most_common(12)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
