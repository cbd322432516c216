#!/usr/bin/env bash
# GPU check, in two steps.
#
# 1. Here (Rust and libtorch, `cargo xtask setup` done):
#        bash xtask/gpu-check.sh build
#    builds, in release mode, the device-parametrized test binaries (`tests/devices.rs` of
#    ap-tensor, ap-train, ap-eval and ap-prune: exact selection equal to the CPU's, masked
#    SGD/Adam never reviving a pruned weight, DNR equal to the CPU's, an exact pruning
#    event with AP, deterministic mode's bit-identity) and the timing example
#    (`crates/ap-runs/examples/gpu_check.rs`), and copies them to target/gpu-check/.
#    It finds the test binaries in cargo's JSON messages
#    (`cargo test --release --no-run ... --message-format=json`, field `executable`).
# 2. On a CUDA machine that has Python torch 2.11.0 but no Rust toolchain: copy the
#    repository with target/gpu-check/ (or just this script and that folder, in the same
#    layout) and run
#        bash xtask/gpu-check.sh [cuda|cuda:N]
#    It runs every test binary with AP_TEST_DEVICES=<device> (CUDA required: a missing
#    GPU fails instead of falling back to the CPU), then times a ResNet-20
#    CIFAR-10-shaped epoch and an instrumented evaluation. Exit status 1 when a test failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=target/gpu-check
crates=(ap-tensor ap-train ap-eval ap-prune)

if [ "${1:-}" = build ]; then
    eval "$(cargo xtask env)"
    mkdir -p "$out"
    rm -f "$out"/devices-*
    args=()
    for c in "${crates[@]}"; do args+=(-p "$c"); done
    cargo test --release --no-run "${args[@]}" --test devices --message-format=json |
        python3 -c '
import json, os, shutil, sys
out = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and t.get("name") == "devices":
        crate = os.path.basename(os.path.dirname(m["manifest_path"]))
        dest = "%s/devices-%s" % (out, crate)
        shutil.copy(m["executable"], dest)
        print("built", dest)
' "$out"
    n=$(ls "$out"/devices-* 2>/dev/null | wc -l)
    [ "$n" -eq "${#crates[@]}" ] || { echo "error: expected ${#crates[@]} test binaries in $out, found $n" >&2; exit 1; }
    cargo build --release -p ap-runs --example gpu_check
    cp target/release/examples/gpu_check "$out/gpu_check"
    echo "built $out/gpu_check; now copy $out and this script to the GPU machine"
    exit 0
fi

device=${1:-cuda}
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -f "$torch_lib/libtorch_cuda.so" ] || { echo "error: $torch_lib has no libtorch_cuda.so: this torch has no CUDA" >&2; exit 2; }
[ -x "$out/gpu_check" ] || { echo "error: $out/gpu_check not found: run 'bash xtask/gpu-check.sh build' on the build machine first" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda)'
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
failed=()
for c in "${crates[@]}"; do
    bin="$out/devices-$c"
    [ -x "$bin" ] || { echo "error: $bin not found: run 'bash xtask/gpu-check.sh build' first" >&2; exit 2; }
    echo "== $c: device invariants on $device"
    # The test binaries refer to no symbol of libtorch_cuda, so the linker left it out
    # (crates/ap-runs/build.rs links it into the `ap` program and gpu_check): preload it,
    # or libtorch sees no CUDA device.
    if LD_PRELOAD="$torch_lib/libtorch_cuda.so${LD_PRELOAD:+:$LD_PRELOAD}" \
        AP_TEST_DEVICES="$device" "$bin" --test-threads 1; then
        echo "PASS $c"
    else
        echo "FAIL $c"
        failed+=("$c")
    fi
done
"$out/gpu_check" "$device"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "device invariants failed in: ${failed[*]}" >&2
    exit 1
fi
echo "all device invariants passed on $device"
