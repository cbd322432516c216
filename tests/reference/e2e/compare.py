#!/usr/bin/env python3
"""Compare the Rust tool's results with the plain-PyTorch reference (run.py).

    python tests/reference/e2e/compare.py                       # all it finds
    python tests/reference/e2e/compare.py --rust results/default/summary.json \
        --pytorch docs/data/pytorch-reference --out docs/data/pytorch-reference/compare.md

Reads
 - the PyTorch reference: every run.py output in `<dir>` (imp.json, imp-quick.json,
   gmp.json, granet.json, rigl.json: {"config": ..., "records": [...]}, one record per
   run x round); for each Rust group the file of that method whose settings differ least
   from the Rust spec's is used (e.g. imp-quick.json, 2,000 iterations x 15 rounds, for
   results/quick/, imp.json, 5,000 x 16, for results/default/);
 - the Rust run store's summaries, `results/<profile>/summary.json` (a JSON array of
   SummaryRecord, crates/ap-runs/src/report.rs: method, ap, ap_rate, ap_share,
   prune_rate (null for schedule-driven methods), dataset, model, seed, run_key, round,
   density, test_accuracy, test_loss, dynamic_dnr, static_dnr, ...), default
   results/default/ and results/quick/;
 - optionally each Rust run's resolved spec, `runs/<label>-<run_key>/spec.toml`, to show
   the settings next to the PyTorch ones and flag the ones that differ (a summary record
   does not carry iterations, allocation, RigL's update interval or the init).

Prints, per matching (method, AP) group, a markdown table with a row per round (density):
Rust mean +- sample std over seeds vs PyTorch mean +- std for test accuracy (%) and
dynamic DNR, the difference Rust - PyTorch, and whether it lies within 2 standard errors
(Welch: sqrt(s_R^2/n_R + s_P^2/n_P)); then the mean absolute difference over the rows.
Rust groups whose recipe (prune rate, AP rate) does not match the PyTorch file are listed,
not compared. Settings that differ are flagged with "MISMATCH" above the table: such rows
are not a like-for-like comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

METHODS = ("imp", "gmp", "granet", "rigl")


def mean_std(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan"), 0
    m = sum(xs) / n
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, s, n


def fmt_ms(m, s, scale=1.0, digits=2):
    if not math.isfinite(m):
        return "—"
    return f"{scale*m:.{digits}f} ± {scale*s:.{digits}f}"


def load_pytorch(d: Path):
    """Every run.py output in `d`, by method: {method: [(config, records, path), ...]}."""
    out = defaultdict(list)
    for p in sorted(d.glob("*.json")):
        try:
            obj = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or "records" not in obj or not obj["records"]:
            continue
        method = obj.get("config", {}).get("method") or obj["records"][0].get("method")
        if method in METHODS:
            out[method].append((obj.get("config", {}), obj["records"], p))
    return dict(out)


def find_spec(runs_dir: Path, key: str):
    if tomllib is None or not runs_dir.is_dir():
        return None
    hits = list(runs_dir.glob(f"*-{key}/spec.toml"))
    if not hits:
        return None
    try:
        return tomllib.loads(hits[0].read_text())
    except Exception:  # noqa: BLE001 - a damaged spec only loses the settings line
        return None


def rust_settings(spec):
    """The settings that matter for the comparison, from a Rust resolved spec."""
    if spec is None:
        return None
    tr, pr, ap = spec.get("train", {}), spec.get("prune", {}), spec.get("ap", {})
    opt = tr.get("optimizer", {})
    s = {
        "iterations": tr.get("iterations"),
        "batch_size": tr.get("batch_size"),
        "optimizer": opt.get("kind"),
        "lr": opt.get("lr"),
        "eps": opt.get("eps"),
        "schedule": (tr.get("schedule") or {}).get("kind", "constant"),
        "init": spec.get("init", "pytorch"),
    }
    method = pr.get("method")
    if method in ("imp", "lrr"):
        s.update(rounds=pr.get("rounds"), rate=pr.get("rate"),
                 allocation=json.dumps(pr.get("allocation", "global"), sort_keys=True),
                 rewind_iteration=pr.get("rewind_iteration", 0))
    elif method in ("gmp", "granet"):
        s.update(final_density=pr.get("final_density"), begin=pr.get("begin"),
                 end=pr.get("end"), every=pr.get("every"),
                 allocation=json.dumps(pr.get("allocation", "global"), sort_keys=True))
        if method == "granet":
            s["drop_fraction"] = pr.get("drop_fraction", 0.5)
    elif method == "rigl":
        s.update(final_density=pr.get("density"), every=pr.get("every"),
                 drop_fraction=pr.get("drop_fraction"), end_fraction=pr.get("end_fraction"),
                 dense_layers=json.dumps(pr.get("dense_layers", [])))
    if ap.get("enabled"):
        s["ap_rate"] = ap.get("rate")
        s["ap_share"] = ap.get("share")
    return s


def pytorch_settings(method, cfg, ap):
    s = {
        "iterations": cfg.get("iterations"),
        "batch_size": cfg.get("batch_size"),
        "optimizer": "adam",
        "lr": cfg.get("lr"),
        "eps": 1e-8,
        "schedule": "constant",
        "init": "pytorch",  # nn.Linear's own defaults
    }
    if method == "imp":
        if cfg.get("allocation") == "layerwise":
            alloc = {"per_layer": {"overrides": {"fc3.weight": cfg.get("output_multiplier", 0.5)}}}
        else:
            alloc = "global"
        s.update(rounds=cfg.get("rounds"), rate=cfg.get("rate"),
                 allocation=json.dumps(alloc, sort_keys=True), rewind_iteration=0)
    elif method in ("gmp", "granet"):
        s.update(final_density=cfg.get("final_density"), begin=cfg.get("begin"),
                 end=cfg.get("end"), every=cfg.get("every"),
                 allocation=json.dumps("global"))
        if method == "granet":
            s["drop_fraction"] = cfg.get("drop_fraction")
    elif method == "rigl":
        s.update(final_density=cfg.get("final_density"), every=cfg.get("every"),
                 drop_fraction=cfg.get("drop_fraction"), end_fraction=cfg.get("end_fraction"),
                 dense_layers=json.dumps(["fc3.weight"]))
    if ap:
        s["ap_rate"] = cfg.get("ap_rate")
    return s


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return a == b


def table(method, ap, rust, torch_recs, source, settings_line):
    lines = []
    label = method + ("+AP" if ap else "")
    seeds_r = sorted({r["seed"] for r in rust})
    seeds_p = sorted({r["seed"] for r in torch_recs})
    lines.append(f"### {label}: Rust ({source}, seeds {seeds_r}) vs PyTorch (seeds {seeds_p})")
    lines.append("")
    lines.extend(settings_line)
    lines.append("| round | density Rust | density PyTorch | test acc Rust | test acc PyTorch | Δ acc (pt) | ≤2SE | dyn DNR Rust | dyn DNR PyTorch | Δ DNR | ≤2SE |")
    lines.append("|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|:-:|")
    by_r, by_p = defaultdict(list), defaultdict(list)
    for r in rust:
        by_r[r["round"]].append(r)
    for r in torch_recs:
        by_p[r["round"]].append(r)
    d_acc, d_dnr, within_acc, within_dnr, rows = [], [], 0, 0, 0
    for rnd in sorted(set(by_r) | set(by_p)):
        R, P = by_r.get(rnd, []), by_p.get(rnd, [])
        dr = mean_std([r["density"] for r in R])[0]
        dp = mean_std([r["density"] for r in P])[0]
        ar = mean_std([r["test_accuracy"] for r in R])
        a_p = mean_std([r["test_accuracy"] for r in P])
        nr = mean_std([r["dynamic_dnr"] for r in R])
        n_p = mean_std([r["dynamic_dnr"] for r in P])
        cells = [str(rnd), f"{100*dr:.2f}%" if R else "—", f"{100*dp:.2f}%" if P else "—",
                 fmt_ms(ar[0], ar[1], 100), fmt_ms(a_p[0], a_p[1], 100)]
        both = bool(R and P)
        dens_ok = both and abs(dr - dp) <= 0.005 * max(dr, dp)
        for (x, y, scale, digits, acc) in ((ar, a_p, 100, 2, d_acc), (nr, n_p, 1, 3, d_dnr)):
            if both:
                diff = x[0] - y[0]
                se = math.sqrt(x[1] ** 2 / x[2] + y[1] ** 2 / y[2])
                ok = abs(diff) <= 2 * se if se > 0 else diff == 0
                acc.append(abs(diff))
                cells.append(f"{scale*diff:+.{digits}f}")
                cells.append("yes" if ok else "no")
                if acc is d_acc:
                    within_acc += ok
                else:
                    within_dnr += ok
            else:
                cells += ["—", "—"]
            if acc is d_acc:
                cells += [fmt_ms(nr[0], nr[1], 1, 3), fmt_ms(n_p[0], n_p[1], 1, 3)]
        if both:
            rows += 1
            if not dens_ok:
                cells[0] += " (density differs)"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if rows:
        lines.append(
            f"Mean |Δ| over {rows} densities: test accuracy {100*sum(d_acc)/rows:.2f} pt, "
            f"dynamic DNR {sum(d_dnr)/rows:.3f}; within 2 SE: accuracy {within_acc}/{rows}, "
            f"DNR {within_dnr}/{rows}. Std = sample std over seeds; Δ = Rust − PyTorch.")
    else:
        lines.append("No round present in both.")
    lines.append("")
    return lines, (sum(d_acc) / rows if rows else None, sum(d_dnr) / rows if rows else None)


def pytorch_tables(torch_data):
    """The reference alone: mean +- sample std over seeds per round, without and with AP."""
    lines = ["## PyTorch reference alone", ""]
    for method, cfg, recs, path in ((m, *f) for m, fs in torch_data.items() for f in fs):
        seeds = sorted({r["seed"] for r in recs})
        lines.append(f"### {method} ({path}, seeds {seeds})")
        lines.append("")
        variants = sorted({r["ap"] for r in recs})
        head = ["round", "density"]
        for v in variants:
            tag = " +AP" if v else ""
            head += [f"test acc{tag}", f"dyn DNR{tag}", f"static DNR{tag}"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---:|" * len(head))
        for rnd in sorted({r["round"] for r in recs}):
            rr = [r for r in recs if r["round"] == rnd]
            cells = [str(rnd), f"{100*mean_std([r['density'] for r in rr])[0]:.3f}%"]
            for v in variants:
                sel = [r for r in rr if r["ap"] == v]
                a, d, st = (mean_std([r[k] for r in sel]) for k in ("test_accuracy", "dynamic_dnr", "static_dnr"))
                cells += [fmt_ms(a[0], a[1], 100), fmt_ms(d[0], d[1], 1, 3), fmt_ms(st[0], st[1], 1, 3)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pytorch", type=Path, default=Path("docs/data/pytorch-reference"))
    ap.add_argument("--rust", type=Path, nargs="+",
                    default=[Path("results/default/summary.json"), Path("results/quick/summary.json")])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--model", default="lenet300-100")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    args = ap.parse_args(argv)

    torch_data = load_pytorch(args.pytorch)
    if not torch_data:
        sys.exit(f"no PyTorch reference files (run.py output) in {args.pytorch}")
    out = ["# Rust vs PyTorch reference (LeNet-300-100 / MNIST)", ""]
    summary_rows = []
    found_any = False
    for rpath in args.rust:
        if not rpath.exists():
            out.append(f"_{rpath}: not found, skipped._")
            out.append("")
            continue
        found_any = True
        rrecs = [r for r in json.loads(rpath.read_text())
                 if r.get("model") == args.model and r.get("dataset") == args.dataset]
        source = str(rpath.parent)
        out.append(f"## {rpath}")
        out.append("")
        # group Rust records by run recipe: method, ap, rates, and the spec's settings
        spec_cache = {}
        groups = defaultdict(list)
        for r in rrecs:
            key = r["run_key"]
            if key not in spec_cache:
                spec_cache[key] = rust_settings(find_spec(args.runs_dir, key))
            st = spec_cache[key]
            gk = (r["method"], r["ap"], r.get("prune_rate"), r.get("ap_rate"), r.get("ap_share"),
                  json.dumps(st, sort_keys=True) if st else None)
            groups[gk].append(r)
        compared = 0
        for gk in sorted(groups, key=lambda g: (METHODS.index(g[0]) if g[0] in METHODS else 99, g[1], str(g[2:]))):
            method, ap_on, prate, aprate, _, st_json = gk
            recs = groups[gk]
            if method not in torch_data:
                continue
            st = json.loads(st_json) if st_json else None
            # the reference file whose settings differ least from this Rust group's
            def n_diff(c):
                pt_ = pytorch_settings(method, c[0], ap_on)
                if st is None:
                    return 0
                return sum(1 for k in pt_ if k in st and not same(st[k], pt_[k]))
            cands = [c for c in torch_data[method] if any(t["ap"] == ap_on for t in c[1])]
            if not cands:
                out.append(f"- {method}{'+AP' if ap_on else ''}: no PyTorch runs with AP={ap_on}")
                continue
            cfg, trecs, tpath = min(cands, key=n_diff)
            tsel = [t for t in trecs if t["ap"] == ap_on]
            if method == "imp":
                if prate is None or not same(prate, cfg.get("rate")) or (ap_on and not same(aprate, cfg.get("ap_rate"))):
                    out.append(f"- {method}{'+AP' if ap_on else ''} (p = {prate}, p_AP = {aprate}): "
                               f"recipe differs from the PyTorch file (p = {cfg.get('rate')}, "
                               f"p_AP = {cfg.get('ap_rate')}); not compared")
                    continue
            settings = [f"PyTorch file: {tpath}", ""]
            pt = pytorch_settings(method, cfg, ap_on)
            if st is None:
                settings.append(f"Settings: Rust spec.toml not found under {args.runs_dir}/ (cannot check iterations, allocation, init).")
                settings.append("")
            else:
                diffs = [k for k in pt if k in st and not same(st[k], pt[k])]
                settings.append("Settings (Rust / PyTorch): " + "; ".join(
                    f"{k} {st.get(k)}" + (f" / {pt[k]} **MISMATCH**" if k in diffs else "")
                    for k in pt if k in st))
                settings.append("")
            lines, (ma, md) = table(method, ap_on, recs, tsel, source, settings)
            out.extend(lines)
            summary_rows.append((source, method + ("+AP" if ap_on else ""), ma, md,
                                 bool(st) and any(not same(st[k], pt[k]) for k in pt if k in st)))
            compared += 1
        if not compared:
            out.append("No group of this summary matches a PyTorch reference file.")
            out.append("")
    if not found_any:
        out.append("No Rust summary found: run `cargo xtask reproduce --grid grids/default.toml` "
                   "(results/default/) or `cargo xtask reproduce` (results/quick/) first.")
    if summary_rows:
        out += ["## Overview", "",
                "| store | method | mean abs Δ acc (pt) | mean abs Δ dyn DNR | settings differ |",
                "|---|---|---:|---:|:-:|"]
        for src, m, a, d, mm in summary_rows:
            out.append(f"| {src} | {m} | {100*a:.2f} | {d:.3f} | {'yes' if mm else 'no'} |"
                       if a is not None else f"| {src} | {m} | — | — | {'yes' if mm else 'no'} |")
        out.append("")
    out += pytorch_tables(torch_data)
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
