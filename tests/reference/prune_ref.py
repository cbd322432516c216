#!/usr/bin/env python3
"""Independent PyTorch references for ap-prune's pruning events (differential tests).

    prune_ref.py <case> <in.safetensors> <config.json> <out.safetensors>

Each case is written from the papers' definitions and the reference code's behaviour, not
from the Rust code, and only uses torch (no numpy, no safetensors package: the format is
read and written by hand below). `tests/tests/differential.rs` builds the inputs, runs a
case and compares. Exit status 0 on success; on an error the traceback goes to stderr.

Conventions shared by every case:
- config["layers"] lists the prunable parameters in the model's order; safetensors keeps
  no order, so every ranking "across layers" uses this list.
- Tie rule: exact counts by rank, never a `<=` threshold. Ranking is a stable sort of the
  eligible positions concatenated layer by layer (row-major within a layer), so ties go
  to the lower flat index, earlier layer first.
- Masks come back as U8 0/1 tensors named `mask.<layer>`.
- Cases that rank model-computed float scores also return `margin`: the smallest relative
  gap between the last selected and the first unselected score of any selection made. A
  tiny margin means the inputs sit on a numerical tie and a mismatch there says nothing.
"""

import json
import math
import struct
import sys
import warnings
from fractions import Fraction

warnings.filterwarnings("ignore")  # torch warns at import that numpy is absent

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ---------------------------------------------------------------------------------------
# safetensors by hand: u64 little-endian header length, JSON header
# {name: {dtype, shape, data_offsets: [start, end]}}, then the raw little-endian bytes.

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    assert sys.byteorder == "little", "the safetensors payload is little-endian"
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        raw = bytearray(data[base + start : base + end])
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        out[name] = flat.reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = bytes(t.reshape(-1).clone().untyped_storage()) if t.numel() else b""
        header[name] = {
            "dtype": NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for c in chunks:
            f.write(c)


# ---------------------------------------------------------------------------------------
# Exact-count selection by rank.


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _split(flat, like):
    out, at = [], 0
    for t in like:
        out.append(flat[at : at + t.numel()].reshape(t.shape))
        at += t.numel()
    return out


def select_smallest(scores, eligible, n, largest=False):
    """Exactly n eligible positions with the smallest (or largest) scores, ranked over the
    concatenation of `scores` by a stable sort. Returns (bool tensors, margin)."""
    s = _flat(scores).double()
    e = _flat([x.bool() for x in eligible])
    idx = torch.nonzero(e).reshape(-1)
    if n < 0 or n > idx.numel():
        raise ValueError(f"asked for {n} of {idx.numel()} eligible positions")
    key = -s[idx] if largest else s[idx]
    order = torch.sort(key, stable=True).indices
    sel = torch.zeros_like(e)
    sel[idx[order[:n]]] = True
    margin = math.inf
    if 0 < n < idx.numel():
        a, b = key[order[n - 1]].item(), key[order[n]].item()
        margin = abs(b - a) / max(abs(a), abs(b), 1e-300)
    return _split(sel, scores), margin


def half_away(x):
    """Rounds half away from zero (Rust's f64::round), not Python's round-half-even."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def u8(masks):
    return {f"mask.{k}": v.to(torch.uint8) for k, v in masks.items()}


def scalar(x, dtype=torch.int64):
    return torch.tensor(x, dtype=dtype)


# ---------------------------------------------------------------------------------------
# Case 1: global magnitude pruning.
#
# OpenLTH `pruning/sparse_global.py`: one ranking of |w| over every kept weight of every
# prunable layer, the mask shrinks. Differences of OpenLTH from our spec, not reproduced:
# it removes ceil(fraction · kept) (we remove the n we are given, floor(p · S) upstream),
# and it keeps `|w| > sort(|w_kept|)[n]`, which removes n + 1 weights when values are
# distinct and more on ties; we remove exactly n by rank.


def case_magnitude_global(cfg, t):
    layers = cfg["layers"]
    w = [t[f"w.{l}"] for l in layers]
    m = [t[f"m.{l}"] > 0.5 for l in layers]
    sel, margin = select_smallest([x.abs() for x in w], m, cfg["n"])
    return {**u8({l: mi & ~si for l, mi, si in zip(layers, m, sel)}), "margin": scalar(margin, torch.float64)}


# ---------------------------------------------------------------------------------------
# Case 2: layer-wise magnitude (uniform, or per-layer multipliers such as the LTH paper's
# output layer at half rate). rate = n / Σ kept; layer l loses floor(min(1, rate·mult_l) ·
# kept_l), computed exactly (rationals), smallest |w| among its kept weights.


def layer_counts(kept, n, mults):
    total = sum(kept)
    rate = Fraction(n, total) if total else Fraction(0)
    return [math.floor(min(Fraction(1), rate * Fraction(mu)) * k) for k, mu in zip(kept, mults)]


def case_magnitude_layerwise(cfg, t):
    layers = cfg["layers"]
    mult = cfg.get("multipliers", {})
    w = [t[f"w.{l}"] for l in layers]
    m = [t[f"m.{l}"] > 0.5 for l in layers]
    counts = layer_counts([int(x.sum()) for x in m], cfg["n"], [mult.get(l, 1.0) for l in layers])
    out, margin = {}, math.inf
    for l, wi, mi, c in zip(layers, w, m, counts):
        (sel,), mg = select_smallest([wi.abs()], [mi], c)
        out[l] = mi & ~sel
        margin = min(margin, mg)
    return {**u8(out), "counts": torch.tensor(counts, dtype=torch.int64), "margin": scalar(margin, torch.float64)}


# ---------------------------------------------------------------------------------------
# Case 3: LAMP (Lee et al. 2021; jaeho-lee/layer-adaptive-sparsity `_normalize_scores`):
# within a layer sort the kept weights ascending by w², score(u) = w_u² / Σ_{v ≥ u} w_v²
# (the sum over the kept weights at or after u in that order); pruned positions score 0
# and are not counted in any sum. Then one global ranking of the scores over kept weights.
# The reference code computes the denominator as total − exclusive prefix sum; here the
# suffix sum is accumulated from the end, so the largest weight scores exactly 1.


def lamp_layer(w, m):
    flat_w = w.double().reshape(-1)
    flat_m = m.reshape(-1)
    kept = torch.nonzero(flat_m).reshape(-1)
    v2 = flat_w[kept] ** 2
    order = torch.sort(v2, stable=True).indices
    sorted_v = v2[order].tolist()
    suffix, acc = [0.0] * len(sorted_v), 0.0
    for i in range(len(sorted_v) - 1, -1, -1):
        acc += sorted_v[i]
        suffix[i] = acc
    ratio = torch.tensor([a / s if s > 0 else 0.0 for a, s in zip(sorted_v, suffix)], dtype=torch.float64)
    score = torch.zeros_like(flat_w)
    score[kept[order]] = ratio
    return score.reshape(w.shape)


def case_lamp(cfg, t):
    layers = cfg["layers"]
    w = [t[f"w.{l}"] for l in layers]
    m = [t[f"m.{l}"] > 0.5 for l in layers]
    scores = [lamp_layer(wi, mi) for wi, mi in zip(w, m)]
    sel, margin = select_smallest(scores, m, cfg["n"])
    out = u8({l: mi & ~si for l, mi, si in zip(layers, m, sel)})
    out.update({f"score.{l}": s for l, s in zip(layers, scores)})
    out["margin"] = scalar(margin, torch.float64)
    return out


# ---------------------------------------------------------------------------------------
# The LeNet-300-100 of ap-models (crates/ap-models/src/lib.rs `LeNet`): x.flatten(1), then
# fc1 → relu → fc2 → relu → fc3 (nn.Linear, i.e. x·Wᵀ + b), no ReLU after the last layer;
# the ReLU sites are `fc1.relu`, `fc2.relu`. Parameters `fc{i}.weight`, `fc{i}.bias`.


def lenet_forward(p, x, n_layers, sites=None):
    h = x.flatten(1)
    for i in range(1, n_layers + 1):
        h = F.linear(h, p[f"fc{i}.weight"], p[f"fc{i}.bias"])
        if i < n_layers:
            h = torch.relu(h)
            if sites is not None:
                sites.append((f"fc{i}.relu", h))
    return h


def _params(t):
    return {k[2:]: v for k, v in t.items() if k.startswith("p.")}


# ---------------------------------------------------------------------------------------
# Case 4: SNIP (Lee et al. 2019; ganguli-lab/Synaptic-Flow `SNIP.score`): score = |∂L/∂m|
# = |g ⊙ w|, g the gradient of the cross-entropy (batch mean) summed over the batches, at
# the masked weights w ⊙ m (pruned positions held at 0, so they score 0). Synaptic-Flow
# multiplies g by the unmasked w, which only differs at pruned positions, never eligible.
# The log-softmax is taken in float32, as `cross_entropy_for_logits` does.


def case_snip(cfg, t):
    layers = cfg["layers"]
    n_layers = cfg["n_layers"]
    p = _params(t)
    m = [t[f"m.{l}"] > 0.5 for l in layers]
    masked = {l: (p[l] * mi.to(p[l].dtype)).detach().requires_grad_(True) for l, mi in zip(layers, m)}
    q = {**p, **masked}
    grads = [torch.zeros_like(masked[l]) for l in layers]
    for b in range(cfg["batches"]):
        logits = lenet_forward(q, t[f"x.{b}"], n_layers)
        loss = F.nll_loss(F.log_softmax(logits, dim=-1, dtype=torch.float32), t[f"y.{b}"])
        for acc, g in zip(grads, torch.autograd.grad(loss, [masked[l] for l in layers])):
            acc += g
    scores = [(g * masked[l].detach()).abs() for g, l in zip(grads, layers)]
    sel, margin = select_smallest(scores, m, cfg["n"])
    out = u8({l: mi & ~si for l, mi, si in zip(layers, m, sel)})
    out.update({f"score.{l}": s for l, s in zip(layers, scores)})
    out["margin"] = scalar(margin, torch.float64)
    return out


# ---------------------------------------------------------------------------------------
# Case 5: iterative SynFlow (Tanaka et al. 2020; Synaptic-Flow `SynFlow.score` and
# `prune_loop`): every parameter replaced by |θ| (here in float64), weights masked, an
# all-ones input of shape [1, ...input_shape], R = Σ output, score = |∂R/∂w ⊙ w| with w =
# |w| ⊙ m (eval mode; LeNet has no dropout or batch norm). Exponential schedule over
# `iterations` steps from S kept now to target = S − n_remove:
#   kept_k = round(S · (target / S)^(k / iterations)), clamped to [target, kept_{k−1}],
#   the last step landing on target; each step re-scores and removes the smallest.
# Differences of Synaptic-Flow, not reproduced: its step k keeps total − int((1 −
# d^(k/E)) · total) of *all* positions (pruned ones count, scoring 0) and prunes with a
# `<=` threshold; we round the kept count, relative to the weights kept at the start.


def synflow_scores(p, masks, layers, n_layers, input_shape):
    q = {k: v.double().abs() for k, v in p.items()}
    leaves = {l: (q[l] * masks[l].double()).requires_grad_(True) for l in layers}
    q.update(leaves)
    x = torch.ones([1] + list(input_shape), dtype=torch.float64)
    r = lenet_forward(q, x, n_layers).sum()
    grads = torch.autograd.grad(r, [leaves[l] for l in layers])
    return [(g * leaves[l].detach()).abs() for g, l in zip(grads, layers)]


def case_synflow(cfg, t):
    layers = cfg["layers"]
    p = _params(t)
    masks = {l: t[f"m.{l}"] > 0.5 for l in layers}
    start = sum(int(m.sum()) for m in masks.values())
    target = start - cfg["n_remove"]
    steps = max(1, cfg["iterations"])
    prev, margin, kept_seq = start, math.inf, []
    for k in range(1, steps + 1):
        if k == steps or cfg["n_remove"] == 0:
            kept = target
        else:
            kept = half_away(start * (target / start) ** (k / steps))
            kept = min(max(kept, target), prev)
        kept_seq.append(kept)
        remove = prev - kept
        if remove == 0:
            continue
        scores = synflow_scores(p, masks, layers, cfg["n_layers"], cfg["input_shape"])
        sel, mg = select_smallest(scores, [masks[l] for l in layers], remove)
        margin = min(margin, mg)
        for l, s in zip(layers, sel):
            masks[l] = masks[l] & ~s
        prev = kept
    return {**u8(masks), "kept": torch.tensor(kept_seq, dtype=torch.int64), "margin": scalar(margin, torch.float64)}


# ---------------------------------------------------------------------------------------
# Case 6: GMP's schedule (Zhu & Gupta 2017): events at t0, t0 + every, … ≤ t_end;
# s_t = s_f + (s_i − s_f)(1 − (t − t0)/(t_end − t0))³ (s_i before t0, s_f from t_end on);
# kept target = total − round(s_t · total), rounding half away from zero (our rule).


def gmp_sparsity(t, t0, t_end, s_i, s_f):
    if t <= t0:
        return s_i
    if t >= t_end:
        return s_f
    x = 1.0 - (t - t0) / (t_end - t0)
    return s_f + (s_i - s_f) * (x * x * x)


def case_gmp(cfg, t):
    steps, targets, sparsity = [], [], []
    t0, t_end, every = cfg["t0"], cfg["t_end"], max(1, cfg["every"])
    for step in range(cfg["t_max"] + 1):
        if t0 <= step <= t_end and (step - t0) % every == 0:
            s = gmp_sparsity(step, t0, t_end, cfg["s_i"], cfg["s_f"])
            steps.append(step)
            sparsity.append(s)
            targets.append(cfg["total"] - half_away(s * cfg["total"]))
    return {
        "steps": torch.tensor(steps, dtype=torch.int64),
        "targets": torch.tensor(targets, dtype=torch.int64),
        "sparsity": torch.tensor(sparsity, dtype=torch.float64),
    }


# ---------------------------------------------------------------------------------------
# Case 7: ERK densities (Evci et al. 2020; google-research/rigl `sparse_utils.
# get_sparsities_erdos_renyi`, erdos_renyi_kernel: raw_l = Σ dims / Π dims):
# - layers in `dense` (RigL's custom_sparsity_map, e.g. the first layer) get density 1
#   and are left out of the ERK computation entirely ("We ignore custom_sparsities in
#   erdos-renyi calculations"): the others share density · Σ_{others} numel;
# - ε = rhs / Σ raw_l · numel_l over the ERK layers, rhs = Σ density · numel_l minus,
#   for each layer already made dense by saturation, its (1 − density) · numel_l;
# - while ε · max raw > 1, every layer with the largest raw ratio is made dense (and from
#   then on counts against the budget as above) and ε is solved again.
# RigL counts zeros as int(floor(sparsity · numel)); we use the exact real budget (the
# difference is below one weight per layer).


def erk(shapes, density, dense):
    numel = {n: math.prod(s) for n, s in shapes}
    raw = {n: sum(s) / math.prod(s) for n, s in shapes}
    custom = set(dense)
    saturated = set()
    while True:
        rhs, divisor = 0.0, 0.0
        for n, _ in shapes:
            if n in saturated:
                rhs -= (1.0 - density) * numel[n]
            elif n in custom:
                pass
            else:
                rhs += density * numel[n]
                divisor += raw[n] * numel[n]
        free = [n for n, _ in shapes if n not in saturated and n not in custom]
        if not free:
            eps = 0.0
            break
        eps = rhs / divisor
        top = max(raw[n] for n in free)
        if eps * top > 1.0:
            saturated.update(n for n in free if raw[n] == top)
        else:
            break
    return [1.0 if (n in custom or n in saturated) else eps * raw[n] for n, _ in shapes]


def case_erk(cfg, t):
    out = {}
    for i, prob in enumerate(cfg["problems"]):
        shapes = [(n, list(s)) for n, s in prob["shapes"]]
        out[f"d.{i}"] = torch.tensor(erk(shapes, prob["density"], prob.get("dense", [])), dtype=torch.float64)
    return out


# ---------------------------------------------------------------------------------------
# Case 8: AP (ap-spec §3) after a host event. The host removes n_host kept weights by
# global magnitude; AP's candidates are the weights still kept with w_T < 0 (ablation
# sign = any: every kept weight); score |w_T − w_0| (ablation: |w_T|); the n_ap smallest,
# ranked globally, are removed; with fewer candidates all go and shortfall = n_ap − count.
#
# The released AP code (`prune_by_percentile_ap` in its main script) differs from this
# spec, deliberately not reproduced (docs/decisions.md):
# - it thresholds instead of ranking: it removes every negative weight with movement
#   `<= sort(movement)[num_ap]`, i.e. num_ap + 1 weights when movements are distinct,
#   more on ties; and it fails with an IndexError when there are ≤ num_ap candidates
#   (no shortfall);
# - "kept" means nonzero (`np.nonzero(tensor)`), not the mask, and it runs over every
#   parameter whose name contains "weight" (BN scales included, positive so rarely
#   candidates); its weight list repeats the previous weight tensor once per bias, which
#   skews the threshold and num_ap = int(len(list) · p_AP) (p_AP of the survivors before
#   the host event, duplicates included);
# - w_0 is the state at the first iteration of the phase (`model_prev`), as in our spec.


def ap_one(layers, w, w0, m, n_host, n_ap, sign, score):
    sel, _ = select_smallest([x.abs() for x in w], m, n_host)
    m = [mi & ~si for mi, si in zip(m, sel)]
    cand = [mi & (wi < 0) if sign == "negative" else mi.clone() for mi, wi in zip(m, w)]
    if score == "movement":
        s = [(wi - w0i).abs() for wi, w0i in zip(w, w0)]
    elif score == "magnitude":
        s = [wi.abs() for wi in w]
    else:
        raise ValueError(f"unknown AP score {score}")
    count = sum(int(c.sum()) for c in cand)
    take = min(n_ap, count)
    sel, _ = select_smallest(s, cand, take)
    return [mi & ~si for mi, si in zip(m, sel)], take, n_ap - take


def case_ap(cfg, t):
    layers = cfg["layers"]
    w = [t[f"w.{l}"] for l in layers]
    w0 = [t[f"w0.{l}"] for l in layers]
    m = [t[f"m.{l}"] > 0.5 for l in layers]
    out = {}
    for i, r in enumerate(cfg["runs"]):
        masks, removed, short = ap_one(layers, w, w0, m, r["n_host"], r["n_ap"], r["sign"], r["score"])
        for l, mk in zip(layers, masks):
            out[f"r{i}.mask.{l}"] = mk.to(torch.uint8)
        out[f"r{i}.removed"] = scalar(removed)
        out[f"r{i}.shortfall"] = scalar(short)
    return out


# ---------------------------------------------------------------------------------------
# Case 9: dead neuron rate (ap-spec §2) of the LeNet above in eval mode: a unit is one
# element of a ReLU site's output; dynamic DNR = mean over samples of the fraction of
# units with a ≤ 0; static DNR = fraction of units with a ≤ 0 on every sample; the whole
# network's rates weight every unit equally.


def case_dnr(cfg, t):
    p = _params(t)
    sites = []
    with torch.no_grad():
        lenet_forward(p, t["x"], cfg["n_layers"], sites)
    dyn, sta, dead_all, never_all, units_all, n = [], [], 0, 0, 0, t["x"].shape[0]
    for _, a in sites:
        dead = (a.reshape(a.shape[0], -1) <= 0)
        units = dead.shape[1]
        per_sample = dead.sum(1).double() / units
        dyn.append(per_sample.mean().item())
        never = int(dead.all(0).sum())
        sta.append(never / units)
        dead_all += int(dead.sum())
        never_all += never
        units_all += units
    return {
        "dynamic": torch.tensor(dyn, dtype=torch.float64),
        "static": torch.tensor(sta, dtype=torch.float64),
        "dynamic_all": scalar(dead_all / (n * units_all), torch.float64),
        "static_all": scalar(never_all / units_all, torch.float64),
        "samples": scalar(n),
    }


# ---------------------------------------------------------------------------------------
# Case 10: initialisation. PyTorch's own draws (nn.Linear(300, 100), nn.Conv2d(64, 64, 3)
# defaults, nn.init.xavier_normal_, nn.init.kaiming_normal_(fan_in, relu)) and the bounds
# and standard deviations of the formulas, computed from torch's fan and gain helpers:
# default weight bound = √3 · gain(leaky_relu, √5) / √fan_in = 1/√fan_in, bias bound
# 1/√fan_in; Xavier std = √(2/(fan_in + fan_out)); Kaiming std = √2/√fan_in.


def _stats(prefix, x):
    x = x.detach().double().reshape(-1)
    return {f"{prefix}.max": scalar(x.abs().max().item(), torch.float64), f"{prefix}.std": scalar(x.std().item(), torch.float64)}


def case_init(cfg, t):
    torch.manual_seed(cfg["seed"])
    layers = {"linear": torch.nn.Linear(300, 100), "conv": torch.nn.Conv2d(64, 64, 3)}
    out = {}
    for name, layer in layers.items():
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
        gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
        out[f"{name}.bound"] = scalar(math.sqrt(3.0) * gain / math.sqrt(fan_in), torch.float64)
        out[f"{name}.bias_bound"] = scalar(1.0 / math.sqrt(fan_in), torch.float64)
        out[f"{name}.xavier_std"] = scalar(math.sqrt(2.0 / (fan_in + fan_out)), torch.float64)
        out[f"{name}.kaiming_std"] = scalar(torch.nn.init.calculate_gain("relu") / math.sqrt(fan_in), torch.float64)
        out.update(_stats(f"{name}.pytorch.weight", layer.weight))
        out.update(_stats(f"{name}.pytorch.bias", layer.bias))
        w = torch.empty_like(layer.weight)
        out.update(_stats(f"{name}.xavier.weight", torch.nn.init.xavier_normal_(w)))
        out.update(_stats(f"{name}.kaiming.weight", torch.nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")))
    return out


# ---------------------------------------------------------------------------------------
# Drop-and-grow (GraNet `truncate_weights` with magnitude death and gradient growth;
# RigL's drop/grow), one event:
# - per layer not in dense_layers: k = ceil(fraction · active) (rounding "ceil", GraNet)
#   or floor(fraction · active) ("floor", RigL), in floating point as both codes do;
# - drop the k active weights with the smallest |w| (ties by position); the drop only
#   changes the mask;
# - grow k positions among those inactive after the drop (the just-dropped included) with
#   the largest |grad| (ties by position, lower index first);
# - weights: active before and after keep their value; inactive before and active after
#   start at 0; inactive weights are 0. Layers in dense_layers are left as they are.


def drop_and_grow(weights, grads, masks, fraction, rounding, dense_layers):
    """weights, grads, masks: dicts name → tensor (masks 0/1 or bool). Returns
    (new_masks, new_weights, counts) as dicts name → bool tensor / tensor / int."""
    if rounding not in ("ceil", "floor"):
        raise ValueError(f"rounding must be ceil or floor, not {rounding}")
    new_masks, new_weights, counts = {}, {}, {}
    for name, w in weights.items():
        active = masks[name].bool() if masks[name].dtype == torch.bool else masks[name] > 0.5
        if name in dense_layers:
            new_masks[name] = active.clone()
            new_weights[name] = torch.where(active, w, torch.zeros_like(w))
            counts[name] = 0
            continue
        n_active = int(active.sum())
        x = fraction * n_active
        k = math.ceil(x) if rounding == "ceil" else math.floor(x)
        k = max(0, min(k, n_active))
        (drop,), _ = select_smallest([w.abs()], [active], k)
        after_drop = active & ~drop
        (grow,), _ = select_smallest([grads[name].abs()], [~after_drop], k, largest=True)
        new = after_drop | grow
        new_masks[name] = new
        new_weights[name] = torch.where(new & active, w, torch.zeros_like(w))
        counts[name] = k
    return new_masks, new_weights, counts


def case_drop_and_grow(cfg, t):
    layers = cfg["layers"]
    weights = {l: t[f"w.{l}"] for l in layers}
    grads = {l: t[f"g.{l}"] for l in layers}
    masks = {l: t[f"m.{l}"] for l in layers}
    nm, nw, counts = drop_and_grow(weights, grads, masks, cfg["fraction"], cfg["rounding"], set(cfg.get("dense_layers", [])))
    out = u8(nm)
    out.update({f"w.{l}": nw[l] for l in layers})
    out["counts"] = torch.tensor([counts[l] for l in layers], dtype=torch.int64)
    return out


# ---------------------------------------------------------------------------------------
# Case: BiP (Zhang et al. 2022, "Advancing Model Pruning via Bi-level Optimization";
# OPTML-Group/BiP trainer/bilevel.py, non-accelerated branch). Written from the paper's
# update rules with autograd: every prunable weight θ has a score s; the mask is the
# global top-k of |s| over all prunable layers (exactly k kept; the S − k smallest removed
# by a stable sort, so ties go to the lower flat index, earlier layer first), passed
# straight through in backward; the network computes with w = m ⊙ θ. One iteration:
#   lower: θ, b ← θ, b − α ∇ℓ_A (plain SGD: the gradient w.r.t. θ is m ⊙ ∇_w ℓ by
#          autograd, so pruned θ stay as they are);
#   upper: with the new θ, g_s = ∂ℓ_B/∂s by autograd through |s| and the straight-
#          through top-k; d = g_s − λ g_s ⊙ g_s + wd · s; momentum buffer b ← μ b + d
#          (b = d at the first step, as torch.optim.SGD); s ← s − β b; new mask from s.
# config: layers, n_layers, keep, iterations, lower_lr, upper_lr, implicit_lr, momentum,
# weight_decay. Inputs: p.* (every variable; the prunable ones are θ), s.<layer>,
# xa.i, ya.i, xb.i, yb.i. Outputs: theta.<layer>, s.<layer>, p.<bias>, mask.<layer>, margin
# (the smallest relative gap at any top-k boundary, the first included).


class TopKStraightThrough(torch.autograd.Function):
    """Global top-k mask of the concatenated |s| (k kept), gradient passed through."""

    @staticmethod
    def forward(ctx, flat_abs, keep):
        (removed,), _ = select_smallest([flat_abs], [torch.ones_like(flat_abs, dtype=torch.bool)], flat_abs.numel() - keep)
        return (~removed).to(flat_abs.dtype)

    @staticmethod
    def backward(ctx, g):
        return g, None


def bip_mask(scores, layers, keep):
    flat = torch.cat([scores[l].abs().reshape(-1) for l in layers])
    m = TopKStraightThrough.apply(flat, keep)
    return dict(zip(layers, _split(m, [scores[l] for l in layers])))


def bip_loss(p, x, y, n_layers):
    logits = lenet_forward(p, x, n_layers)
    return F.nll_loss(F.log_softmax(logits, dim=-1, dtype=torch.float32), y)


def case_bip_step(cfg, t):
    layers = cfg["layers"]
    n_layers = cfg["n_layers"]
    keep = cfg["keep"]
    lam, mu, wd = cfg["implicit_lr"], cfg["momentum"], cfg["weight_decay"]
    p = {k: v.clone() for k, v in _params(t).items()}
    s = {l: t[f"s.{l}"].clone() for l in layers}
    buf = {l: None for l in layers}
    margins = []
    for i in range(cfg["iterations"]):
        # lower level: weights and biases, mask fixed
        with torch.no_grad():
            m = {l: v.detach() for l, v in bip_mask(s, layers, keep).items()}
        leaves = {k: v.detach().requires_grad_(True) for k, v in p.items()}
        q = dict(leaves)
        for l in layers:
            q[l] = m[l] * leaves[l]
        loss = bip_loss(q, t[f"xa.{i}"], t[f"ya.{i}"], n_layers)
        names = sorted(leaves)
        grads = torch.autograd.grad(loss, [leaves[k] for k in names])
        with torch.no_grad():
            for k, g in zip(names, grads):
                p[k] = p[k] - cfg["lower_lr"] * g
        # upper level: the scores, with the new θ
        s_leaf = {l: s[l].detach().requires_grad_(True) for l in layers}
        m = bip_mask(s_leaf, layers, keep)
        margins.append(topk_margin(s, layers, keep))
        q = {k: v.detach() for k, v in p.items()}
        for l in layers:
            q[l] = m[l] * q[l]
        loss = bip_loss(q, t[f"xb.{i}"], t[f"yb.{i}"], n_layers)
        gs = dict(zip(layers, torch.autograd.grad(loss, [s_leaf[l] for l in layers])))
        with torch.no_grad():
            for l in layers:
                d = gs[l] - lam * gs[l] * gs[l] + wd * s[l]
                buf[l] = d.clone() if buf[l] is None else mu * buf[l] + d
                s[l] = s[l] - cfg["upper_lr"] * buf[l]
    final = {l: v.detach() for l, v in bip_mask(s, layers, keep).items()}
    margins.append(topk_margin(s, layers, keep))
    out = u8({l: final[l] > 0.5 for l in layers})
    out.update({f"theta.{l}": p[l] for l in layers})
    out.update({f"s.{l}": s[l] for l in layers})
    out.update({f"p.{k}": v for k, v in p.items() if k not in layers})
    out["margin"] = scalar(min(margins), torch.float64)
    return out


def topk_margin(s, layers, keep):
    flat = torch.cat([s[l].detach().abs().reshape(-1) for l in layers])
    _, margin = select_smallest([flat], [torch.ones_like(flat, dtype=torch.bool)], flat.numel() - keep)
    return margin


# ---------------------------------------------------------------------------------------

CASES = {
    "magnitude_global": case_magnitude_global,
    "magnitude_layerwise": case_magnitude_layerwise,
    "lamp": case_lamp,
    "snip": case_snip,
    "synflow": case_synflow,
    "gmp": case_gmp,
    "erk": case_erk,
    "ap": case_ap,
    "dnr": case_dnr,
    "init": case_init,
    "drop_and_grow": case_drop_and_grow,
    "bip_step": case_bip_step,
}


def main(argv):
    if len(argv) != 5 or argv[1] not in CASES:
        sys.stderr.write(f"usage: {argv[0]} <{'|'.join(CASES)}> <in.safetensors> <config.json> <out.safetensors>\n")
        return 2
    torch.set_num_threads(1)
    _, case, inp, config, outp = argv
    with open(config) as f:
        cfg = json.load(f)
    tensors = read_safetensors(inp)
    write_safetensors(outp, CASES[case](cfg, tensors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
