#!/usr/bin/env bash
# The GPU experiment of issue 11 (grids/gpu-cnn.toml, docs/gpu-cnn.md), in two steps.
#
# 1. Here (Rust and libtorch, `cargo xtask setup` done):
#        bash xtask/gpu-cnn.sh build
#    builds the release `ap` binary and puts it, the Fashion-MNIST files of the data cache
#    ($AP_DATA_DIR) and the grids in target/gpu-cnn/ (one folder to carry).
# 2. On the CUDA machine (Python torch 2.11.0, no Rust), from the repository root:
#        bash xtask/gpu-cnn.sh run [--device cuda] [--jobs N|auto] [--out DIR]
#                                  [--time-limit S] [--tiny]
#    points LD_LIBRARY_PATH at that torch's lib, prints the GPU and torch versions, picks
#    the number of concurrent runs (`--jobs auto`, the default: a short ResNet-20 probe with
#    1, 2, 4 and 8 runs at once, the best total iterations/s wins; the table goes to
#    DIR/concurrency.tsv), then runs `ap reproduce` on the grid under `timeout`. The run
#    store is target/gpu-cnn-store/runs (outside the carried folder, so a second call on
#    the same machine resumes; finished runs are kept, a killed one continues from its last
#    checkpoint); the report goes to DIR/results and the runs' small files (no
#    checkpoints) to DIR/runs. DIR defaults to $OUT (the device tool's folder that comes
#    back), else target/gpu-cnn/out.
#    --tiny: the CPU dry run of the same path (grids/gpu-cnn-tiny.toml, a tiny probe with
#    1 and 2 runs), e.g. `bash xtask/gpu-cnn.sh run --device cpu --tiny`; used by the test
#    crates/ap-runs/tests/gpu_cnn.rs, which also passes --ap, --data-dir and --store.
#    Exit status: ap reproduce's; 124 when the time limit stopped it (call again).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle=target/gpu-cnn

if [ "${1:-}" = build ]; then
    eval "$(cargo xtask env)"
    data="${AP_DATA_DIR:?AP_DATA_DIR not set: run cargo xtask setup}/fashion-mnist"
    cargo build --release -p ap-runs --bin ap
    mkdir -p "$bundle/data/fashion-mnist"
    cp target/release/ap "$bundle/ap"
    n=0
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        for g in "$data/$f" "$data/$f.gz"; do
            if [ -f "$g" ]; then cp "$g" "$bundle/data/fashion-mnist/"; n=$((n + 1)); fi
        done
    done
    [ "$n" -ge 4 ] || { echo "error: found $n of the 4 Fashion-MNIST files in $data" >&2; exit 1; }
    cp grids/gpu-cnn.toml grids/gpu-cnn-tiny.toml "$bundle/"
    du -sh "$bundle"
    echo "built $bundle; on the GPU machine run 'bash xtask/gpu-cnn.sh run' with $bundle carried"
    exit 0
fi
[ "${1:-}" = run ] || { echo "usage: bash xtask/gpu-cnn.sh build | run [--device D] [--jobs N|auto] [--out DIR] [--time-limit S] [--tiny] [--ap BIN] [--data-dir DIR] [--store DIR] [--grid FILE]" >&2; exit 2; }
shift

t0=$(date +%s)
device=cuda jobs=auto out="${OUT:-$bundle/out}" limit=570 tiny=0
ap="$bundle/ap" data="" store=target/gpu-cnn-store grid=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --time-limit) limit=$2; shift 2 ;;
        --tiny) tiny=1; shift ;;
        --ap) ap=$2; shift 2 ;;
        --data-dir) data=$2; shift 2 ;;
        --store) store=$2; shift 2 ;;
        --grid) grid=$2; shift 2 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
name=gpu-cnn
[ "$tiny" = 1 ] && name=gpu-cnn-tiny
if [ -z "$grid" ]; then
    grid="$bundle/$name.toml"
    [ -f "$grid" ] || grid="grids/$name.toml"
fi
if [ -z "$data" ]; then
    data="$bundle/data"
    [ -d "$data/fashion-mnist" ] || data="${AP_DATA_DIR:-}"
fi
[ -x "$ap" ] || { echo "error: $ap not found: run 'bash xtask/gpu-cnn.sh build' on the build machine first" >&2; exit 2; }
[ -f "$grid" ] || { echo "error: grid $grid not found" >&2; exit 2; }
[ -n "$data" ] && [ -d "$data/fashion-mnist" ] || { echo "error: no fashion-mnist folder in data dir '$data'" >&2; exit 2; }
case "$jobs" in auto | [1-9] | [1-9][0-9]) ;; *) echo "error: --jobs takes a number or auto, not $jobs" >&2; exit 2 ;; esac

# libtorch from Python torch, as xtask/gpu-check.sh; on the CPU keep the caller's when
# LD_LIBRARY_PATH already has one (the build machine's `cargo xtask env` sets it).
has_libtorch() {
    local d
    IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
    for d in "${dirs[@]}"; do [ -n "$d" ] && [ -f "$d/libtorch_cpu.so" ] && return 0; done
    return 1
}
if [ "$device" = cpu ] && has_libtorch; then
    echo "libtorch from LD_LIBRARY_PATH (CPU run)"
elif torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    if [ "$device" != cpu ] && [ ! -f "$torch_lib/libtorch_cuda.so" ]; then
        echo "error: $torch_lib has no libtorch_cuda.so: this torch has no CUDA" >&2; exit 2
    fi
elif [ "$device" != cpu ]; then
    echo "error: python3 has no torch: the GPU run needs Python torch 2.11.0" >&2; exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
threads=()
[ "$device" = cpu ] && threads=(--threads 1)
mkdir -p "$out" "$store/runs"
out=$(cd "$out" && pwd) store=$(cd "$store" && pwd)
echo "grid $grid, data $data, device $device, store $store/runs, out $out"

# The probe: N concurrent `ap run`s of a short ResNet-20 GMP run, each in its own store.
# Training throughput per N = N × (iterations after the first pruning event) / (last end
# − first start), the times read from the runs' log.txt ("pruning event event=0" at
# iteration `begin`, "round 0 epoch ..." when training ends), so process start-up, data
# loading, cuDNN warm-up and the final evaluation are not counted (each run is stopped
# once its training has ended).
probe() {
    local ns its begin batch
    if [ "$tiny" = 1 ]; then ns="1 2" its=10 begin=2 batch=32; else ns="1 2 4 8" its=400 begin=100 batch=128; fi
    local dir="$store/probe"
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/spec.toml" <<SPEC
model = "resnet20"
dataset = "fashion-mnist"
seed = 0
eval_batch_size = 2000
[train]
recipe = "granet-cifar"
batch_size = $batch
iterations = $its
schedule = { kind = "cosine" }
augment = { crop_padding = 2, horizontal_flip = true }
[prune]
method = "gmp"
final_density = 0.1
begin = $begin
end = $((its - begin))
every = $begin
SPEC
    printf 'jobs\titerations\tseconds\titer_per_s\tchosen\n' >"$dir/table.tsv"
    for n in $ns; do
        local pids=()
        for i in $(seq 1 "$n"); do
            "$ap" run "$dir/spec.toml" --runs-dir "$dir/n$n-$i" --data-dir "$data" \
                --device "$device" "${threads[@]}" >/dev/null 2>"$dir/n$n-$i.err" &
            pids+=($!)
        done
        # Stop each run once its training has ended (its log has the epoch line): the
        # final evaluation is not measured, and on a CPU it takes longer than the probe.
        local live=$n
        while [ "$live" -gt 0 ]; do
            live=0
            for i in $(seq 1 "$n"); do
                local p=${pids[$((i - 1))]}
                kill -0 "$p" 2>/dev/null || continue
                if grep -qsE 'round +0 epoch' "$dir/n$n-$i"/*/log.txt; then
                    kill "$p" 2>/dev/null || true
                else
                    live=$((live + 1))
                fi
            done
            sleep 0.2
        done
        for i in $(seq 1 "$n"); do
            wait "${pids[$((i - 1))]}" 2>/dev/null || true
            grep -qsE 'round +0 epoch' "$dir/n$n-$i"/*/log.txt || { echo "error: probe run $n-$i failed:" >&2; cat "$dir/n$n-$i.err" >&2; return 1; }
        done
        python3 - "$dir" "$n" "$its" "$begin" <<'PY' >>"$dir/table.tsv"
import datetime, glob, re, sys
d, n, its, begin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def t(line):
    return datetime.datetime.fromisoformat(line.split()[0].rstrip("Z")[:26]).timestamp()
starts, ends = [], []
for i in range(1, n + 1):
    lines = open(glob.glob(f"{d}/n{n}-{i}/*/log.txt")[0]).read().splitlines()
    starts.append(t(next(l for l in lines if "pruning event event=0 " in l)))
    ends.append(t([l for l in lines if re.search(r"round +0 epoch", l)][-1]))
iters = n * (its - begin)
secs = max(ends) - min(starts)
print(f"{n}\t{iters}\t{secs:.3f}\t{iters / secs:.1f}\t")
PY
        tail -n 1 "$dir/table.tsv"
    done
    # Mark the best N (the smaller on a tie) and return it.
    python3 - "$dir/table.tsv" "$out/concurrency.tsv" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
head, body = rows[0], rows[1:]
best = max(body, key=lambda r: (float(r[3]), -int(r[0])))
with open(sys.argv[2], "w") as f:
    f.write("\t".join(head) + "\n")
    for r in body:
        r[4] = "yes" if r is best else "no"
        f.write("\t".join(r) + "\n")
print(best[0])
PY
}

if [ "$jobs" = auto ]; then
    kept="$store/concurrency-$name-${device//:/-}.tsv"
    if [ -f "$kept" ]; then
        echo "== concurrency: reusing the probe of an earlier call ($kept)"
        cp "$kept" "$out/concurrency.tsv"
    else
        echo "== concurrency probe (ResNet-20, $device)"
        probe >/dev/null
        rm -rf "$store/probe"
        cp "$out/concurrency.tsv" "$kept"
    fi
    cat "$out/concurrency.tsv"
    jobs=$(awk -F'\t' '$5 == "yes" { print $1 }' "$out/concurrency.tsv")
    echo "chosen: --jobs $jobs ($(($(date +%s) - t0)) s so far)"
fi

left=$((limit - ($(date +%s) - t0) - 20))
[ "$left" -gt 10 ] || { echo "error: no time left for the grid (--time-limit $limit)" >&2; exit 124; }
echo "== ap reproduce --grid $grid --jobs $jobs (time limit ${left} s)"
rc=0
timeout -k 15 "$left" "$ap" reproduce --grid "$grid" --device "$device" --jobs "$jobs" "${threads[@]}" \
    --runs-dir "$store/runs" --data-dir "$data" --out "$out/results" || rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "time limit reached: the store keeps what is done; call again to continue"
    "$ap" report --grid "$grid" --runs-dir "$store/runs" --out "$out/results" >/dev/null 2>&1 || true
fi
"$ap" status --grid "$grid" --runs-dir "$store/runs" >"$out/status.txt" 2>&1 || true
tail -n 3 "$out/status.txt" || true
mkdir -p "$out/runs"
tar -C "$store/runs" --exclude='*.safetensors' -cf - . | tar -C "$out/runs" -xf -
echo "done in $(($(date +%s) - t0)) s: report in $out/results, runs' files in $out/runs, exit status $rc"
exit "$rc"
