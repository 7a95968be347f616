#!/usr/bin/env bash
# The GPU check with a relnet binary built beforehand (a GPU machine may have no network):
#
#   scripts/gpu-check.sh [BINARY] [DEVICE] [OUT_DIR]
#
# BINARY  a relnet built with `--features cuda` or `--features wgpu` (default: ./relnet, then
#         target/release/relnet); DEVICE cuda, cuda:N, wgpu or wgpu:N (default: cuda if the
#         binary lists a CUDA device, else wgpu); OUT_DIR where gpu-check.log and
#         gpu-check.json go (default: ./gpu-check).
#
# A wgpu build needs only the NVIDIA Vulkan driver at run time (no CUDA toolkit, no NVRTC):
#   cargo build --profile dist -p relnet-cli --features wgpu    (46.7 MiB, stripped)
# and copy target/dist/relnet over. docs/backends.md has the details.
set -euo pipefail
bin=${1:-}
if [[ -z "$bin" ]]; then
  for c in ./relnet target/dist/relnet target/release/relnet; do [[ -x "$c" ]] && { bin=$c; break; }; done
fi
[[ -n "$bin" && -x "$bin" ]] || { echo "gpu-check: no relnet binary (give its path as the first argument)" >&2; exit 2; }
out=${3:-gpu-check}
mkdir -p "$out"
"$bin" device | tee "$out/backends.txt"
device=${2:-}
if [[ -z "$device" ]]; then
  if grep -q "cuda:0" "$out/backends.txt"; then device=cuda; else device=wgpu; fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/nvidia-smi.txt" || true
start=$(date +%s)
"$bin" bench device --device "$device" --out "$out" 2> "$out/gpu-check.stderr" | tee "$out/gpu-check.log"
echo "gpu-check: done in $(( $(date +%s) - start )) s; results in $out/" | tee -a "$out/gpu-check.log"
