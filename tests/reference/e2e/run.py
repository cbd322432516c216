#!/usr/bin/env python3
"""Plain-PyTorch reference for the LeNet-300-100 / MNIST experiments of ap-prune.

Independent of the Rust code (it shares no code with it, only the recipe), so the Rust
numbers can be checked against PyTorch within the seed spread. Data order and random
streams differ from the Rust tool's: agreement is statistical, not bit for bit.

Usage (one process, one CPU thread by default):

    python tests/reference/e2e/run.py imp    --seeds 0 1 2 --out docs/data/pytorch-reference/imp.json
    python tests/reference/e2e/run.py gmp    --seeds 0 1 2 --out docs/data/pytorch-reference/gmp.json
    python tests/reference/e2e/run.py granet --seeds 0 1 2 --out docs/data/pytorch-reference/granet.json
    python tests/reference/e2e/run.py rigl   --seeds 0 1 2 --out docs/data/pytorch-reference/rigl.json

`imp` runs every seed without and with AP (`--variants plain ap` by default); the dynamic
methods run without AP. The output file is rewritten (atomically) after every finished
run, so a partial file is usable; a rerun recomputes everything it is asked for.

What is implemented, and which reference each choice follows
------------------------------------------------------------
Data (as ap-data): MNIST IDX files from $AP_DATA_DIR, $AP_CACHE_DIR/data or
~/.cache/ap-prune/data (`mnist/train-images-idx3-ubyte`, optionally `.gz`); pixels
x/255, normalised (x - 0.1307)/0.3081; all 60,000 training images are trained on (no
validation split), the 10,000 test images are evaluated. Each epoch is a fresh random
permutation of the training set, cut into batches of 60 (the last one partial if the
batch size does not divide 60,000), seeded by (seed, epoch) only, so every IMP round sees
the same data order (as ap-data and OpenLTH); the generator is torch's, not ap-data's
splitmix64.

Model (LeNet-300-100, Frankle & Carbin 2019): 784-300-100-10, ReLU after fc1 and fc2,
biases, PyTorch's default nn.Linear initialisation (weights Kaiming-uniform a = sqrt(5),
i.e. U(+-1/sqrt(fan_in)), biases U(+-1/sqrt(fan_in))), drawn after torch.manual_seed(seed).
Prunable: the three weight matrices; biases never.

Training (as ap-train): cross-entropy on logits (mean over the batch), torch.optim.Adam
(fused=True; lr 1.2e-3, betas 0.9/0.999, eps 1e-8, no weight decay), constant LR. Masking (ap-spec
section 1): the gradient is multiplied by the mask before the step, the weights are
multiplied by the mask after it, and Adam's exp_avg/exp_avg_sq are zeroed at pruned
positions whenever the mask changes, so pruned weights stay exactly 0. A new optimizer
(zero state) starts every training phase.

Evaluation (as ap-eval): eval mode, no gradients, the whole test set; accuracy, mean
cross-entropy; DNR over both hidden ReLU sites (400 units, unit-weighted): dynamic = mean
over test samples of the fraction of units with activation <= 0, static = fraction of
units <= 0 on every test sample; also per site, and train-mode DNR over the last
training epoch's batches.

A. IMP (lottery tickets, Frankle & Carbin 2019): round 0 trains the dense network for
`--iterations`; then `--rounds` rounds of: prune, rewind every parameter (weights and
biases) to theta0 and re-apply the mask, fresh optimizer, train. Layer-wise pruning (the
LTH paper's LeNet recipe): layer l loses floor(p * m_l * kept_l) of its kept weights by
smallest |w| (ties by position), m = 1 for fc1/fc2 and 0.5 for fc3 (`--allocation
global` ranks all layers together instead, floor(p * kept)). AP (Liu et al. 2023; ap-spec
section 3): n_AP,l = floor(p_AP * m_l * kept_l) of each layer's budget; the host removes
its share by magnitude first, then AP removes, among that layer's kept weights with
w_T < 0, the n_AP,l with the smallest |w_T - w_0| (w_0 = the weights at the start of the
phase that just ended, i.e. theta0 for IMP rewinding to theta0); if there are fewer
candidates, AP takes them all and the host removes the shortfall by magnitude, so IMP and
IMP+AP reach the same density.

B. During-training methods, one phase of `--iterations` (default 6,000); events run after
the backward pass and before the optimizer step of the 0-based step t (the step then uses
the new mask); the gradient used for growth is the current batch's, unmasked.
 - GMP (Zhu & Gupta 2017): at t = begin, begin+every, ..., end (500, 750, ..., 4500),
   prune globally by |w| to kept = total - round(s_t * total),
   s_t = s_f + (0 - s_f)(1 - (t - begin)/(end - begin))^3, s_f = 1 - final density.
 - GraNet (Liu et al. 2021, VITA-Group/GraNet sparselearning/core.py `pruning` +
   `truncate_weights`): the GMP events, and at every event step from `begin` every `every`
   steps until the end of training (not only until `end`, as in core.py, where
   `truncate_weights` runs at every update step), after the pruning: per layer
   k_l = ceil(d_t * active_l) (core.py `magnitude_death` uses ceil),
   d_t = 0.5 * (1 + cos(pi t / T)) / 2 (cosine decay from 0.5 to 0 over the T training
   steps; core.py's CosineDecay has eta_min = 0.005, not 0); drop the k_l active weights
   with the smallest |w| (mask only), then grow k_l among the positions inactive after the
   drop (just-dropped included) with the largest |gradient| (core.py `gradient_growth`).
   A weight active before and after the event keeps its value (and Adam state); a newly
   activated one starts at 0 with zero Adam state; a weight removed by this event's GMP
   pruning is zeroed before the drop-and-grow (core.py `pruning` calls `apply_mask`), so
   if regrown it starts at 0 too. Differences from core.py, all per the brief: core.py updates the mask after optimizer.step(), with the same batch's gradient,
   and masks only SGD momentum.
 - RigL (Evci et al. 2020, google-research/rigl): sparse from the start, ERK layer
   densities (`get_sparsities_erdos_renyi` with include_kernel; for Linear layers the
   score is (n_in + n_out)/(n_in * n_out)), fc3 dense, random positions (exactly
   floor(d_l * numel_l) kept per layer); every `every` steps for 0 < t < 0.75 * T, per
   sparse layer drop floor(alpha_t * active_l) smallest |w| and grow as many by largest
   |gradient| among the inactive-after-drop positions, alpha_t = 0.3 (1 + cos(pi t /
   (0.75 T)))/2 (rigl's cosine `drop_fraction_anneal`); value rules as GraNet (rigl
   `grow_init='zeros'` zeroes only connections that were inactive before the update).
   Dense-layer budget: by default (`--dense-budget count`) fc3's 1,000 weights count
   toward the overall density (as ap-criteria's `erk_densities`, and as the eps > 1 loop
   of rigl treats layers it makes dense), so the overall density is 3.125%; rigl's
   `sparse_utils` ignores layers given in `custom_sparsity_map` (its MNIST script passes
   layer3: 0) when solving for eps, which is `--dense-budget ignore` (fc1+fc2 at 3.125%
   of their own weights, overall density about 3.49%). rigl updates the mask after the
   optimizer step (`cond_mask_update_op` under `control_dependencies([optimizer_update])`)
   with the gradient of that step; here it is before the step, per the brief.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
LAYERS = ("fc1.weight", "fc2.weight", "fc3.weight")


# ---------------------------------------------------------------------------- data
def data_root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    for key in ("AP_DATA_DIR",):
        if os.environ.get(key):
            return Path(os.environ[key])
    if os.environ.get("AP_CACHE_DIR"):
        return Path(os.environ["AP_CACHE_DIR"]) / "data"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ap-prune" / "data"


def read_idx(path: Path) -> torch.Tensor:
    if not path.exists() and Path(str(path) + ".gz").exists():
        path = Path(str(path) + ".gz")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.reshape(dims)


def load_mnist(root: Path):
    d = root / "mnist"
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = read_idx(d / f"{prefix}-images-idx3-ubyte")
        lbl = read_idx(d / f"{prefix}-labels-idx1-ubyte")
        x = img.to(torch.float32).div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)
        out[split] = (x.reshape(x.shape[0], -1).contiguous(), lbl.to(torch.int64))
    return out


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 0x5EED) % (2**63))
    return torch.randperm(n, generator=g)


# ---------------------------------------------------------------------------- model
class LeNet300100(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x, acts: list | None = None):
        h1 = F.relu(self.fc1(x))
        h2 = F.relu(self.fc2(h1))
        if acts is not None:
            acts.append((h1, h2))
        return self.fc3(h2)


class DnrCounter:
    """Dead units per sample (summed) and 'ever fired' per unit, per site."""

    SITES = (("fc1.relu", 300), ("fc2.relu", 100))

    def __init__(self):
        self.dead_t = [torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)]
        self.fired = [torch.zeros(300, dtype=torch.bool), torch.zeros(100, dtype=torch.bool)]
        self.samples = 0

    @torch.no_grad()
    def add(self, h1, h2):
        self.samples += h1.shape[0]
        for i, h in enumerate((h1.detach(), h2.detach())):
            self.dead_t[i] += (h <= 0).sum()
            self.fired[i] |= h.amax(0) > 0

    def report(self):
        n = max(self.samples, 1)
        self.dead = [int(d) for d in self.dead_t]
        sites = []
        for (name, units), dead, fired in zip(self.SITES, self.dead, self.fired):
            sites.append({"site": name, "units": units, "dynamic": dead / (n * units),
                          "static": int((~fired).sum()) / units})
        units = sum(u for _, u in self.SITES)
        return {
            "dynamic": sum(self.dead) / (n * units),
            "static": sum(int((~f).sum()) for f in self.fired) / units,
            "sites": sites,
            "samples": self.samples,
        }


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    cnt = DnrCounter()
    correct, loss_sum = 0, 0.0
    for s in range(0, x.shape[0], batch):
        acts = []
        logits = model(x[s : s + batch], acts)
        cnt.add(*acts[0])
        correct += int((logits.argmax(-1) == y[s : s + batch]).sum())
        loss_sum += float(F.cross_entropy(logits, y[s : s + batch], reduction="sum"))
    model.train()
    dnr = cnt.report()
    n = x.shape[0]
    return {"accuracy": correct / n, "loss": loss_sum / n, "dnr": dnr}


# ---------------------------------------------------------------------------- masks
def prunable(model):
    return [model.fc1.weight, model.fc2.weight, model.fc3.weight]


def smallest(score: torch.Tensor, eligible: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean tensor: the n eligible positions with the smallest score, ties by position."""
    sel = torch.zeros(score.numel(), dtype=torch.bool)
    if n <= 0:
        return sel.view_as(score)
    s = torch.where(eligible.flatten(), score.flatten().double(), torch.tensor(math.inf, dtype=torch.float64))
    idx = torch.sort(s, stable=True).indices[:n]
    assert bool(eligible.flatten()[idx].all()), "asked for more than the eligible count"
    sel[idx] = True
    return sel.view_as(score)


def smallest_global(scores, eligibles, n):
    flat = torch.cat([torch.where(e.flatten(), s.flatten().double(),
                                  torch.tensor(math.inf, dtype=torch.float64))
                      for s, e in zip(scores, eligibles)])
    sel = torch.zeros(flat.numel(), dtype=torch.bool)
    if n > 0:
        idx = torch.sort(flat, stable=True).indices[:n]
        assert bool(torch.isfinite(flat[idx]).all())
        sel[idx] = True
    out, off = [], 0
    for s in scores:
        out.append(sel[off : off + s.numel()].view_as(s))
        off += s.numel()
    return out


class Masked:
    """Masks of the prunable weights plus the masked training step."""

    def __init__(self, model):
        self.model = model
        self.params = prunable(model)
        self.masks = [torch.ones_like(p, dtype=torch.float32) for p in self.params]
        self._sparse = None

    def kept(self):
        return [int(m.sum()) for m in self.masks]

    def is_sparse(self):
        """True unless every weight is kept (cached; call `changed()` after a mask edit)."""
        if self._sparse is None:
            self._sparse = sum(self.kept()) < self.total()
        return self._sparse

    def changed(self):
        self._sparse = None

    def total(self):
        return sum(m.numel() for m in self.masks)

    def density(self):
        return sum(self.kept()) / self.total()

    @torch.no_grad()
    def apply(self, opt=None):
        self.changed()
        for p, m in zip(self.params, self.masks):
            p.mul_(m)
            if opt is not None and p in opt.state:
                st = opt.state[p]
                for k in ("exp_avg", "exp_avg_sq"):
                    if k in st:
                        st[k].mul_(m)

    @torch.no_grad()
    def mask_grads(self):
        for p, m in zip(self.params, self.masks):
            if p.grad is not None:
                p.grad.mul_(m)


def make_adam(model, lr):
    # fused=True: the same algorithm as the default implementation (PyTorch's Adam, L2-free),
    # in one kernel per parameter; about 1.5x faster per LeNet step on one CPU thread.
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0, fused=True)


def train_phase(model, masked, data, args, seed, hook=None, lr=None):
    """`args.iterations` steps of batch `args.batch_size` with a fresh Adam; returns train DNR."""
    x, y = data["train"]
    n = x.shape[0]
    opt = make_adam(model, args.lr if lr is None else lr)
    steps_per_epoch = -(-n // args.batch_size)
    last_epoch = (args.iterations - 1) // steps_per_epoch
    cnt = DnrCounter()
    model.train()
    t = 0
    epoch = 0
    while t < args.iterations:
        perm = epoch_permutation(n, seed, epoch)
        for s in range(0, n, args.batch_size):
            if t >= args.iterations:
                break
            idx = perm[s : s + args.batch_size]
            acts = [] if epoch == last_epoch else None
            logits = model(x[idx], acts)
            if acts:
                cnt.add(*acts[0])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=False)
            loss.backward()
            if hook is not None:
                hook(t, opt)
            # With every weight kept (IMP round 0, GMP before its first event) masking is
            # the identity and is skipped.
            sparse = masked.is_sparse()
            if sparse:
                masked.mask_grads()
            opt.step()
            if sparse:
                with torch.no_grad():
                    for p, m in zip(masked.params, masked.masks):
                        p.mul_(m)
            t += 1
        epoch += 1
    return cnt.report()


# ---------------------------------------------------------------------------- IMP
def imp_event(masked, w0, rate, ap_rate, multipliers, allocation):
    """One layer-wise (or global) IMP event with optional AP; returns event counts."""
    params, masks = masked.params, masked.masks
    kept = masked.kept()
    with torch.no_grad():
        cur = [p.detach().clone() for p in params]
    if allocation == "layerwise":
        n = [math.floor(min(1.0, rate * mu) * k) for mu, k in zip(multipliers, kept)]
        n_ap = [math.floor(min(1.0, ap_rate * mu) * k) for mu, k in zip(multipliers, kept)]
        n_ap = [min(a, b) for a, b in zip(n_ap, n)]
    else:
        tot = sum(kept)
        n, n_ap = math.floor(rate * tot), min(math.floor(ap_rate * tot), math.floor(rate * tot))
    host_removed, ap_removed, shortfall = 0, 0, 0
    if allocation == "layerwise":
        for l in range(len(params)):
            eligible = masks[l] > 0.5
            sel = smallest(cur[l].abs(), eligible, n[l] - n_ap[l])
            masks[l][sel] = 0.0
            host_removed += int(sel.sum())
            if n_ap[l] > 0:
                cand = (masks[l] > 0.5) & (cur[l] < 0)
                take = min(n_ap[l], int(cand.sum()))
                sel = smallest((cur[l] - w0[l]).abs(), cand, take)
                masks[l][sel] = 0.0
                ap_removed += take
                short = n_ap[l] - take
                if short > 0:
                    sel = smallest(cur[l].abs(), masks[l] > 0.5, short)
                    masks[l][sel] = 0.0
                    host_removed += short
                    shortfall += short
    else:
        sels = smallest_global([c.abs() for c in cur], [m > 0.5 for m in masks], n - n_ap)
        for m, s in zip(masks, sels):
            m[s] = 0.0
        host_removed = n - n_ap
        if n_ap > 0:
            cands = [(m > 0.5) & (c < 0) for m, c in zip(masks, cur)]
            take = min(n_ap, sum(int(c.sum()) for c in cands))
            sels = smallest_global([(c - w).abs() for c, w in zip(cur, w0)], cands, take)
            for m, s in zip(masks, sels):
                m[s] = 0.0
            ap_removed = take
            short = n_ap - take
            if short > 0:
                sels = smallest_global([c.abs() for c in cur], [m > 0.5 for m in masks], short)
                for m, s in zip(masks, sels):
                    m[s] = 0.0
                host_removed += short
                shortfall = short
    return {"surviving": sum(kept), "host_removed": host_removed, "ap_removed": ap_removed,
            "ap_shortfall": shortfall}


def run_imp(args, data, seed, ap: bool):
    torch.manual_seed(seed)
    model = LeNet300100()
    theta0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    masked = Masked(model)
    multipliers = [1.0, 1.0, args.output_multiplier]
    records = []
    w0 = [p.detach().clone() for p in masked.params]
    for rnd in range(args.rounds + 1):
        t0 = time.time()
        event = None
        if rnd > 0:
            event = imp_event(masked, w0, args.rate, args.ap_rate if ap else 0.0, multipliers,
                              args.allocation)
            model.load_state_dict(theta0)
            masked.apply()
        w0 = [p.detach().clone() for p in masked.params]
        train_dnr = train_phase(model, masked, data, args, seed)
        ev = evaluate(model, *data["test"])
        rec = record(args, "imp", ap, seed, rnd, masked, ev, train_dnr, event, time.time() - t0)
        records.append(rec)
        log(f"imp{'+ap' if ap else ''} s{seed} round {rnd:2d} density {100*rec['density']:6.2f}% "
            f"acc {100*rec['test_accuracy']:.2f}% dynDNR {rec['dynamic_dnr']:.3f} "
            f"statDNR {rec['static_dnr']:.3f} ({rec['seconds']:.1f}s)")
    return records


# ---------------------------------------------------------------------------- GMP / GraNet / RigL
def gmp_target_kept(t, begin, end, s_f, total):
    if t <= begin:
        s = 0.0
    elif t >= end:
        s = s_f
    else:
        s = s_f + (0.0 - s_f) * (1.0 - (t - begin) / (end - begin)) ** 3
    return total - int(math.floor(s * total + 0.5))  # round half away from zero (s >= 0)


def cosine_decay(initial, t, t_end):
    if t >= t_end:
        return 0.0
    return initial / 2.0 * (1.0 + math.cos(math.pi * t / t_end))


@torch.no_grad()
def gmp_prune(masked, target):
    n = sum(masked.kept()) - target
    if n <= 0:
        return 0
    sels = smallest_global([p.abs() for p in masked.params], [m > 0.5 for m in masked.masks], n)
    for m, s in zip(masked.masks, sels):
        m[s] = 0.0
    return n


@torch.no_grad()
def drop_and_grow(masked, counts, opt):
    """Per layer: drop counts[l] smallest |w| among active (mask only), grow as many by
    largest |grad| among inactive-after-drop; kept/regrown values stay, new ones are 0."""
    grown_total = 0
    for l, (p, m) in enumerate(zip(masked.params, masked.masks)):
        k = counts[l]
        if k <= 0:
            continue
        before = m > 0.5
        drop = smallest(p.abs(), before, k)
        after_drop = before & ~drop
        g = p.grad
        grow = smallest(-g.abs(), ~after_drop, k)
        new = after_drop | grow
        m.copy_(new.float())
        grown_total += k
        # newly active positions (inactive before) must start at 0 with zero Adam state:
        # they were masked, so value and state are already 0; assert it.
        fresh = new & ~before
        assert float(p[fresh].abs().sum()) == 0.0
    masked.apply(opt)  # zeroes dropped-and-not-regrown weights and their Adam state
    return grown_total


def erk_densities(shapes, density, dense, budget="count"):
    numel = [s[0] * s[1] for s in shapes]
    raw = [(s[0] + s[1]) / (s[0] * s[1]) for s in shapes]
    is_dense = [i in dense for i in range(len(shapes))]
    custom = set(dense) if budget == "ignore" else set()
    while True:
        rhs, div = 0.0, 0.0
        for l in range(len(shapes)):
            if l in custom:
                continue
            if is_dense[l]:
                rhs -= (1.0 - density) * numel[l]
            else:
                rhs += density * numel[l]
                div += raw[l] * numel[l]
        eps = rhs / div
        mx = max(raw[l] for l in range(len(shapes)) if not is_dense[l])
        if eps * mx > 1.0:
            for l in range(len(shapes)):
                if not is_dense[l] and raw[l] == mx:
                    is_dense[l] = True
        else:
            break
    return [1.0 if is_dense[l] else min(1.0, eps * raw[l]) for l in range(len(shapes))]


def run_dynamic(args, data, seed, method: str):
    torch.manual_seed(seed)
    model = LeNet300100()
    masked = Masked(model)
    total = masked.total()
    T = args.iterations
    s_f = 1.0 - args.final_density
    events = []
    dense_layers = [2] if method == "rigl" else []
    if method == "rigl":
        shapes = [tuple(p.shape) for p in masked.params]
        dens = erk_densities(shapes, args.final_density, dense_layers, args.dense_budget)
        g = torch.Generator().manual_seed(seed * 7_777 + 12_345)
        for l, (p, m) in enumerate(zip(masked.params, masked.masks)):
            keep = int(math.floor(dens[l] * p.numel()))
            r = torch.rand(p.numel(), generator=g)
            idx = torch.sort(r, stable=True).indices[:keep]
            flat = torch.zeros(p.numel())
            flat[idx] = 1.0
            m.copy_(flat.view_as(m))
        masked.apply()
        stop = int(args.end_fraction * T)
    t_start = time.time()

    def hook(t, opt):
        pruned = 0
        is_event = False
        counts = None
        if method in ("gmp", "granet"):
            on_grid = t >= args.begin and (t - args.begin) % args.every == 0
            if on_grid and t <= args.end:
                pruned = gmp_prune(masked, gmp_target_kept(t, args.begin, args.end, s_f, total))
                is_event = True
            if method == "granet" and on_grid:
                d = cosine_decay(args.drop_fraction, t, T)
                counts = [math.ceil(d * k) for k in masked.kept()]
                is_event = True
        elif method == "rigl":
            if t > 0 and t < stop and t % args.every == 0:
                a = cosine_decay(args.drop_fraction, t, stop)
                counts = [0 if l in dense_layers else math.floor(a * k)
                          for l, k in enumerate(masked.kept())]
                is_event = True
        if not is_event:
            return
        if pruned:
            masked.apply(opt)
        grown = drop_and_grow(masked, counts, opt) if counts else 0
        events.append({"iteration": t, "pruned": pruned, "regrown": grown,
                       "kept": sum(masked.kept())})

    train_dnr = train_phase(model, masked, data, args, seed, hook=hook)
    ev = evaluate(model, *data["test"])
    rec = record(args, method, False, seed, 0, masked, ev, train_dnr, None, time.time() - t_start)
    rec["events"] = events
    log(f"{method} s{seed} density {100*rec['density']:6.3f}% acc {100*rec['test_accuracy']:.2f}% "
        f"dynDNR {rec['dynamic_dnr']:.3f} statDNR {rec['static_dnr']:.3f} ({rec['seconds']:.1f}s)")
    return [rec]


# ---------------------------------------------------------------------------- output
def record(args, method, ap, seed, rnd, masked, ev, train_dnr, event, seconds):
    kept = masked.kept()
    return {
        "method": method, "ap": ap,
        "ap_rate": (args.ap_rate if ap else 0.0) if method == "imp" else 0.0,
        "prune_rate": args.rate if method == "imp" else None,
        "dataset": "mnist", "model": "lenet300-100", "seed": seed, "round": rnd,
        "density": sum(kept) / masked.total(),
        "kept": dict(zip(LAYERS, kept)),
        "test_accuracy": ev["accuracy"], "test_loss": ev["loss"],
        "dynamic_dnr": ev["dnr"]["dynamic"], "static_dnr": ev["dnr"]["static"],
        "dnr_sites": ev["dnr"]["sites"],
        "train_dynamic_dnr": train_dnr["dynamic"], "train_static_dnr": train_dnr["static"],
        "event": event, "seconds": seconds,
    }


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("method", choices=["imp", "gmp", "granet", "rigl", "bench"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--data-dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true",
                    help="keep the runs already in --out (same settings) and add the missing ones")
    ap.add_argument("--lr", type=float, default=1.2e-3)
    ap.add_argument("--batch-size", type=int, default=60)
    ap.add_argument("--iterations", type=int, help="steps per phase (imp 5000, others 6000)")
    # IMP
    ap.add_argument("--variants", nargs="+", choices=["plain", "ap"], default=["plain", "ap"])
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--rate", type=float, default=0.2)
    ap.add_argument("--ap-rate", type=float, default=0.02)
    ap.add_argument("--allocation", choices=["layerwise", "global"], default="layerwise")
    ap.add_argument("--output-multiplier", type=float, default=0.5)
    # GMP / GraNet / RigL
    ap.add_argument("--final-density", type=float, default=0.03125)
    ap.add_argument("--begin", type=int, default=500)
    ap.add_argument("--end", type=int, default=4500)
    ap.add_argument("--every", type=int, help="GMP/GraNet 250, RigL 100")
    ap.add_argument("--drop-fraction", type=float, help="GraNet 0.5, RigL 0.3")
    ap.add_argument("--end-fraction", type=float, default=0.75)
    ap.add_argument("--dense-budget", choices=["count", "ignore"], default="count")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    if args.iterations is None:
        args.iterations = 5000 if args.method == "imp" else 6000
    if args.every is None:
        args.every = 100 if args.method == "rigl" else 250
    if args.drop_fraction is None:
        args.drop_fraction = 0.3 if args.method == "rigl" else 0.5
    data = load_mnist(data_root(args.data_dir))
    if args.method == "bench":
        torch.manual_seed(0)
        m = LeNet300100()
        masked = Masked(m)
        args.iterations = 1000
        t0 = time.time()
        train_phase(m, masked, data, args, 0)
        dt = time.time() - t0
        t1 = time.time()
        evaluate(m, *data["test"])
        print(json.dumps({"ms_per_iteration": 1000 * dt / 1000, "eval_s": time.time() - t1,
                          "threads": torch.get_num_threads()}))
        return
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["torch"] = torch.__version__
    config["python"] = sys.version.split()[0]
    out = {"implementation": "pytorch-reference (tests/reference/e2e/run.py)",
           "config": config, "records": [], "runs": []}
    volatile = ("seeds", "out", "threads", "resume", "variants", "torch", "python", "data_dir")
    same = lambda a, b: all(a.get(k) == b.get(k) for k in set(a) | set(b) if k not in volatile)
    if args.resume and args.out and args.out.exists():
        old = json.loads(args.out.read_text())
        if same(old["config"], config):
            out["records"], out["runs"] = old["records"], old["runs"]
            log(f"resuming: {len(out['runs'])} runs kept from {args.out}")
        else:
            log(f"--resume: {args.out} has other settings; starting over")
    done = {(r["seed"], r["ap"]) for r in out["runs"]}
    t_all = time.time()
    for seed in args.seeds:
        variants = args.variants if args.method == "imp" else ["plain"]
        for v in variants:
            if (seed, v == "ap") in done:
                continue
            t0 = time.time()
            if args.method == "imp":
                recs = run_imp(args, data, seed, v == "ap")
            else:
                recs = run_dynamic(args, data, seed, args.method)
            out["records"].extend(recs)
            out["runs"].append({"seed": seed, "ap": v == "ap", "seconds": time.time() - t0})
            out["config"]["seeds"] = sorted({r["seed"] for r in out["runs"]})
            out["total_seconds"] = sum(r["seconds"] for r in out["runs"])
            if args.out:
                write_json(args.out, out)
    log(f"done in {time.time() - t_all:.0f}s")


if __name__ == "__main__":
    main()
