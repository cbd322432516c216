#!/usr/bin/env bash
# GPU check: run on a CUDA machine that has Python torch 2.11.0 but no Rust toolchain.
# Build here first:   cargo xtask env >/dev/null && eval "$(cargo xtask env)" &&
#                     cargo build --release -p ap-runs --example gpu_check
# then copy target/release/examples/gpu_check to the GPU machine next to this script (or
# run from the repository root there) and run:  bash xtask/gpu-check.sh [cuda|cuda:N]
# It runs the device-agnostic invariants on the GPU (exact selection equal to the CPU's,
# masked SGD never reviving weights, DNR equal to the CPU's, an exact pruning event with
# AP) and times a ResNet-20 CIFAR-10-shaped epoch and an instrumented evaluation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=target/release/examples/gpu_check
[ -x "$bin" ] || { echo "error: $bin not found: build it with 'cargo build --release -p ap-runs --example gpu_check'" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda)'
exec "$bin" "${1:-cuda}"
