"""PyTorch baselines for `cargo xtask bench` (stdlib + torch only).

Each subcommand does the same work as the `ap-bench` subcommand of the same name, written
the idiomatic PyTorch way (nn.Module, torch.optim, `F.cross_entropy`, a mask multiply
after each optimizer step), and prints one JSON line per measured series on stdout, with
the schema `ap-bench` uses ({"case", "key", "impl", "unit", "samples", "threads",
"note"}). The xtask passes both programs the same arguments and runs them alternately.

Run with the venv python that `cargo xtask setup` installs (torch 2.11.0, the libtorch the
Rust side links), e.g.
    ~/.cache/ap-prune/torch-2.11.0/bin/python bench/baselines.py train --model lenet300-100 \
        --steps 200 --reps 5
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time
import warnings

# torch warns on import when numpy is absent; nothing here uses numpy.
warnings.filterwarnings("ignore", message=".*NumPy.*")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def emit(case, key, unit, samples, threads, note):
    print(
        json.dumps(
            {
                "case": case,
                "key": key,
                "impl": "pytorch",
                "unit": unit,
                "samples": [float(s) for s in samples],
                "threads": threads,
                "note": note,
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------- data


def default_data_dir():
    """Same precedence as `ap_data::default_data_dir`."""
    env = lambda k: os.environ.get(k) or None  # noqa: E731
    if env("AP_DATA_DIR"):
        return env("AP_DATA_DIR")
    if env("AP_CACHE_DIR"):
        return os.path.join(env("AP_CACHE_DIR"), "data")
    base = env("XDG_CACHE_HOME") or os.path.join(env("HOME") or ".", ".cache")
    return os.path.join(base, "ap-prune", "data")


def read_idx(path):
    """Reads an IDX file (raw or .gz) into a uint8 tensor of its shape."""
    for p in (path, path + ".gz"):
        if os.path.isfile(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as f:
                raw = f.read()
            break
    else:
        sys.exit(f"baselines.py: {path} not found (run `cargo xtask setup` to fetch MNIST)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"baselines.py: {path} is not a uint8 IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.view(*dims)


def load_mnist(data_dir):
    """MNIST as float tensors normalised like ap-data: (x / 255 - mean) / std."""
    d = os.path.join(data_dir or default_data_dir(), "mnist")

    def split(prefix):
        x = read_idx(os.path.join(d, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte"))
        x = (x.unsqueeze(1).float() / 255 - MNIST_MEAN) / MNIST_STD
        return x, y.long()

    return split("train"), split("t10k")


# ---------------------------------------------------------------- models
# Same layers, shapes and parameter counts as ap-models (crates/ap-models/src).


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Conv2(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1, self.fc2, self.fc3 = nn.Linear(64 * 14 * 14, 256), nn.Linear(256, 256), nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Block(nn.Module):
    """Basic block with an option A shortcut (subsample, zero-pad channels)."""

    def __init__(self, c_in, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.stride, self.pad = stride, (width - c_in) // 2

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        s = x
        if self.stride != 1:
            s = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(h + s)


class ResNet20(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for stage, width in enumerate([16, 32, 64]):
            for i in range(3):
                blocks.append(Block(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        h = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


class LeNet5(nn.Module):
    """LeNet-5 (Caffe): conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10, ReLU after each hidden layer."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def build(name):
    torch.manual_seed(0)
    return {"lenet300-100": LeNet, "lenet5": LeNet5, "conv2": Conv2, "resnet20": ResNet20}[name]()


def optimizer_for(name, model):
    """The recipes ap-bench uses (torch.optim defaults otherwise)."""
    if name == "lenet300-100":
        return torch.optim.Adam(model.parameters(), lr=1.2e-3)
    if name == "conv2":
        return torch.optim.Adam(model.parameters(), lr=2e-4)
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def prunable(model):
    """Weights of Conv2d and Linear layers (never biases or norms), as in ap-models."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def magnitude_masks(weights, density):
    """Global magnitude masks keeping `density` of the weights (kthvalue threshold)."""
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    n = round((1 - density) * flat.numel())
    if n == 0:
        return [torch.ones_like(w) for w in weights]
    thr = flat.kthvalue(n).values
    masks = [(w.detach().abs() > thr).float() for w in weights]
    with torch.no_grad():
        for w, m in zip(weights, masks):
            w.mul_(m)
    return masks


# ---------------------------------------------------------------- cases


def timed_step(model, opt, x, y, parts, after_step=None):
    """One cross-entropy training step on (x, y), `after_step` run after the optimizer's;
    adds its forward, backward and optimizer (with `after_step`) seconds to `parts`.
    Returns the loss."""
    t1 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    t2 = time.perf_counter()
    opt.zero_grad()
    loss.backward()
    t3 = time.perf_counter()
    opt.step()
    if after_step is not None:
        after_step()
    t4 = time.perf_counter()
    parts["forward"] += t2 - t1
    parts["backward"] += t3 - t2
    parts["optimizer"] += t4 - t3
    return loss


def time_steps(a, step, parts):
    """`a.warmup` calls of `step`, then `a.reps` reps of `a.steps` calls, each rep with
    `parts` (which `step` adds seconds to) zeroed first. Returns the seconds per step of
    each rep, and per part the milliseconds per step of each rep."""
    for _ in range(a.warmup):
        step()
    per_step, part_samples = [], {k: [] for k in parts}
    for _ in range(a.reps):
        for k in parts:
            parts[k] = 0.0
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        per_step.append((time.perf_counter() - t) / a.steps)
        for k, v in parts.items():
            part_samples[k].append(v * 1e3 / a.steps)
    return per_step, part_samples


def train(a):
    (x_train, y_train), _ = load_mnist(a.data_dir)
    model = build(a.model)
    opt = optimizer_for(a.model, model)
    weights = prunable(model)
    masks = magnitude_masks(weights, a.density) if a.density < 1 else None
    n = x_train.shape[0]
    state = {"perm": torch.randperm(n), "pos": 0}
    total = torch.zeros(())
    parts = {"gather": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}

    def apply_masks():
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.mul_(m)

    after_step = apply_masks if masks is not None else None

    def step():
        nonlocal total
        t0 = time.perf_counter()
        if state["pos"] + a.batch > n:
            state["perm"], state["pos"] = torch.randperm(n), 0
        idx = state["perm"][state["pos"] : state["pos"] + a.batch]
        state["pos"] += a.batch
        x, y = x_train[idx], y_train[idx]
        parts["gather"] += time.perf_counter() - t0
        total += timed_step(model, opt, x, y, parts, after_step).detach()

    steps_per_epoch = math.ceil(n / a.batch)
    per_step, part_samples = time_steps(a, step, parts)
    epoch = [s * steps_per_epoch for s in per_step]
    if not math.isfinite(total.item()):
        sys.exit("baselines.py: training diverged")
    key = f"train/{a.model}/{'masked' if a.density < 1 else 'dense'}"
    note = f"{a.reps} reps of {a.steps} steps (batch {a.batch}), per-step time x {steps_per_epoch} steps"
    emit("train", key, "s/epoch", epoch, a.threads, note)
    for k, v in part_samples.items():
        emit("train", f"{key}/part/{k}", "ms/step", v, a.threads, "part of the step above")


def vgg19_shapes(shrink):
    plan = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    shapes, c_in = [], 3
    for c in plan:
        c = max(c // shrink, 1)
        shapes.append((c, c_in, 3, 3))
        c_in = c
    shapes.append((10, c_in))
    return shapes


def select(a):
    torch.manual_seed(0)
    scores = [torch.randn(s).abs() for s in vgg19_shapes(a.shrink)]
    total = sum(s.numel() for s in scores)
    n = round(a.fraction * total)

    def by_kthvalue():
        # The idiom: one threshold from kthvalue, a compare per tensor (ties may select
        # more than n; ours is exact).
        thr = torch.cat([s.flatten() for s in scores]).kthvalue(n).values
        return [s <= thr for s in scores]

    def by_topk():
        # Exact count: indices of the n smallest, scattered into one flat mask.
        flat = torch.cat([s.flatten() for s in scores])
        keep = torch.zeros(total, dtype=torch.bool)
        keep[flat.topk(n, largest=False).indices] = True
        return list(keep.split([s.numel() for s in scores]))

    by_kthvalue(), by_topk()  # warm-up
    kth, topk = [], []
    for _ in range(a.reps):
        t = time.perf_counter()
        by_kthvalue()
        kth.append(time.perf_counter() - t)
        t = time.perf_counter()
        by_topk()
        topk.append(time.perf_counter() - t)
    note = f"{a.reps} reps, {total} weights in {len(scores)} tensors (VGG-19 shapes / {a.shrink}), n = {n}"
    emit("select", "select/kthvalue", "s", kth, a.threads, note)
    emit("select", "select/topk", "s", topk, a.threads, note)


def resnet_step(a):
    model = build("resnet20")
    model.train()
    opt = optimizer_for("resnet20", model)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.randint(10, (a.batch,))
    parts = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}

    def step():
        if not math.isfinite(timed_step(model, opt, x, y, parts).item()):
            sys.exit("baselines.py: ResNet-20 training diverged")

    times, part_samples = time_steps(a, step, parts)
    note = f"{a.reps} reps of {a.steps} steps, batch {a.batch}, SGD momentum 0.9 wd 5e-4, random data"
    emit("resnet", "resnet20/step", "s/step", times, a.threads, note)
    for k, v in part_samples.items():
        emit("resnet", f"resnet20/step/part/{k}", "ms/step", v, a.threads, "part of the step above")


def proc_status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    sys.exit(f"baselines.py: no {field} in /proc/self/status")


def imp_memory(a):
    """One IMP round: train a phase with a mask multiply after each step, prune `rate` of
    the surviving weights by global magnitude, rewind to the initial weights, mask."""
    (x_train, y_train), _ = load_mnist(a.data_dir)
    model = build(a.model)
    weights = prunable(model)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    masks = [torch.ones_like(w) for w in weights]
    after_load = proc_status_mib("VmRSS")
    peak_load = proc_status_mib("VmHWM")
    opt = optimizer_for(a.model, model)
    n = x_train.shape[0]
    perm, pos = torch.randperm(n), 0
    for _ in range(a.steps):
        if pos + a.batch > n:
            perm, pos = torch.randperm(n), 0
        idx = perm[pos : pos + a.batch]
        pos += a.batch
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.mul_(m)
    # Prune: the smallest surviving magnitudes, globally.
    alive = torch.cat([w.detach().abs()[m.bool()] for w, m in zip(weights, masks)])
    k = int(a.rate * alive.numel())
    thr = alive.kthvalue(k).values
    masks = [m * (w.detach().abs() > thr) for w, m in zip(weights, masks)]
    model.load_state_dict(init)
    with torch.no_grad():
        for w, m in zip(weights, masks):
            w.mul_(m)
    peak = proc_status_mib("VmHWM")
    note = f"{a.steps} steps of {a.model} then prune {a.rate} of the weights; one process"
    emit("imp", "imp/peak", "MiB", [peak], a.threads, note)
    emit("imp", "imp/after-load", "MiB", [after_load], a.threads, "VmRSS after loading MNIST and building the model")
    emit("imp", "imp/peak-during-load", "MiB", [peak_load], a.threads, "VmHWM after loading MNIST and building the model")


def infer(a):
    """The dense network's forward pass (eval, no grad): the baseline of the inference table."""
    model = build(a.model).eval()
    x = torch.randn(a.batch, 1, 28, 28)
    samples = []
    with torch.no_grad():
        model(x)
        for _ in range(a.reps):
            t = time.perf_counter()
            for _ in range(a.iters):
                model(x)
            samples.append((time.perf_counter() - t) / a.iters)
    key = f"infer/{a.model}/d{a.density:g}/b{a.batch}/dense"
    emit("infer", key, "s", samples, a.threads, f"{a.iters} iters x {a.reps} reps, nn.Module eval under no_grad")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    sub = p.add_subparsers(dest="case", required=True)

    t = sub.add_parser("train")
    t.add_argument("--model", required=True, choices=["lenet300-100", "conv2"])
    t.add_argument("--density", type=float, default=1.0)
    t.add_argument("--batch", type=int, default=60)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--reps", type=int, required=True)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--data-dir")
    # The Rust side's layout setting; the baseline is PyTorch's default (NCHW) either way.
    t.add_argument("--channels-last", action="store_true")

    s = sub.add_parser("select")
    s.add_argument("--shrink", type=int, default=1)
    s.add_argument("--fraction", type=float, default=0.2)
    s.add_argument("--reps", type=int, required=True)

    r = sub.add_parser("resnet-step")
    r.add_argument("--batch", type=int, default=128)
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--reps", type=int, required=True)
    r.add_argument("--warmup", type=int, default=2)
    r.add_argument("--channels-last", action="store_true")  # as for train: NCHW here

    m = sub.add_parser("imp-memory")
    m.add_argument("--model", default="lenet300-100", choices=["lenet300-100", "conv2"])
    m.add_argument("--steps", type=int, required=True)
    m.add_argument("--batch", type=int, default=60)
    m.add_argument("--rate", type=float, default=0.2)
    m.add_argument("--data-dir")

    i = sub.add_parser("infer")
    i.add_argument("--model", required=True, choices=["lenet300-100", "lenet5"])
    i.add_argument("--density", type=float, required=True)
    i.add_argument("--batch", type=int, required=True)
    i.add_argument("--iters", type=int, default=10)
    i.add_argument("--reps", type=int, required=True)
    i.add_argument("--tickets")  # the Rust side's run store and grid; the dense baseline needs no mask
    i.add_argument("--grid")
    i.add_argument("--data-dir")

    # The xtask puts --threads after the subcommand, as ap-bench (clap, global) accepts.
    for sp in (t, s, r, m, i):
        sp.add_argument("--threads", type=int, default=argparse.SUPPRESS)

    a = p.parse_args()
    if a.threads < 1:
        sys.exit("baselines.py: --threads must be at least 1")
    torch.set_num_threads(a.threads)
    cases = {"train": train, "select": select, "resnet-step": resnet_step, "imp-memory": imp_memory, "infer": infer}
    cases[a.case](a)


if __name__ == "__main__":
    main()
