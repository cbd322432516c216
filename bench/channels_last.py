"""Is channels-last faster than the default (contiguous NCHW) layout for our conv models
on this CPU? Same libtorch build as the Rust side (the venv of `cargo xtask setup`).

Times training steps (forward, backward, SGD) of Conv-2 (batch 60, 1x28x28) and of a
ResNet-20 (batch 128, 3x32x32) in both memory formats, one thread, median of N steps.
Usage: <venv>/bin/python bench/channels_last.py [--steps N] [--threads T]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Conv2(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 64, 3, padding=1)
        self.c2 = nn.Conv2d(64, 64, 3, padding=1)
        self.f1 = nn.Linear(64 * 14 * 14, 256)
        self.f2 = nn.Linear(256, 256)
        self.f3 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c2(F.relu(self.c1(x)))), 2)
        x = x.flatten(1)
        return self.f3(F.relu(self.f2(F.relu(self.f1(x)))))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        s = x
        if self.stride != 1 or self.pad:
            s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad // 2))
        return F.relu(y + s)


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.b = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(3):
                layers.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layers(F.relu(self.b(self.c(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def time_steps(model, shape, steps, channels_last):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(shape).to(memory_format=fmt)
    y = torch.randint(0, 10, (shape[0],))
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), median of {a.steps} steps")
    print("| model | NCHW (default) | channels-last | ratio |")
    print("|---|---:|---:|---:|")
    for name, make, shape in [
        ("Conv-2, batch 60", Conv2, (60, 1, 28, 28)),
        ("ResNet-20, batch 128", ResNet20, (128, 3, 32, 32)),
    ]:
        a_ = time_steps(make(), shape, a.steps, False)
        b_ = time_steps(make(), shape, a.steps, True)
        print(f"| {name} | {1000 * a_:.1f} ms | {1000 * b_:.1f} ms | {b_ / a_:.2f}x |")


if __name__ == "__main__":
    main()
