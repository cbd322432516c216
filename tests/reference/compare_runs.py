#!/usr/bin/env python3
"""Compares two run stores of the same grid: every run's metrics.csv and rounds.jsonl must
be equal except for wall-clock seconds. Used to show that a refactor changes no result
(docs/testing.md, "Refactor equivalence").

usage: python3 tests/reference/compare_runs.py RUNS_BEFORE RUNS_AFTER
"""
import json
import os
import sys


def rounds(path):
    out = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            r.pop("seconds", None)
            out.append(r)
    return out


def metrics(path):
    with open(path) as f:
        lines = f.read().splitlines()
    col = lines[0].split(",").index("seconds")
    return [[v for i, v in enumerate(l.split(",")) if i != col] for l in lines]


def main(before, after):
    runs = sorted(d for d in os.listdir(before) if os.path.isdir(os.path.join(before, d)))
    differ = []
    for d in runs:
        a, b = os.path.join(before, d), os.path.join(after, d)
        if not os.path.isdir(b):
            differ.append(f"{d}: missing in {after}")
            continue
        if metrics(os.path.join(a, "metrics.csv")) != metrics(os.path.join(b, "metrics.csv")):
            differ.append(f"{d}: metrics.csv")
        if rounds(os.path.join(a, "rounds.jsonl")) != rounds(os.path.join(b, "rounds.jsonl")):
            differ.append(f"{d}: rounds.jsonl")
    print(f"{len(runs)} runs compared; {len(differ)} differ beyond wall-clock seconds")
    for line in differ:
        print("  " + line)
    return 1 if differ or not runs else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
