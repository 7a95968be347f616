#!/usr/bin/env bash
# relnet vs the PyTorch reference pipeline, back to back. Run on a quiet machine (a concurrent
# build skews figures 3-5x), after `cargo build --release -p relnet-cli`.
# Usage: docs/bench/relnet-vs-torch.sh DATA_ROOT PYTHON OUT_LOG
#   DATA_ROOT: folder holding cifar10/ (train/<class>/*.jpg); PYTHON: a Python with torch.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:?data root}; py=${2:?python with torch}; out=${3:?output log}
echo "# relnet and PyTorch, back to back, quiet machine, $(date -u +%F)" > "$out"
for spec in "conv4 4 30 5" "conv4 16 10 2" "resnet32 4 10 2" "resnet32 16 3 1"; do
  set -- $spec
  echo "### $1 K=$2 M=64 steps=$3 warmup=$4" >> "$out"
  /usr/bin/time -f "relnet wall %e s peak_rss_kb %M" target/release/relnet bench pretrain --dataset cifar10 \
    --data-root "$root" --backbone "$1" --k "$2" --batch-size 64 --steps "$3" --warmup "$4" >> "$out" 2>/tmp/relnet-bench.err
  tail -1 /tmp/relnet-bench.err >> "$out"
  /usr/bin/time -f "torch wall %e s peak_rss_kb %M" "$py" ../shared/bench/torch_reference.py speed --root "$root/cifar10" \
    --backbone "$1" --K "$2" --M 64 --steps "$3" --warmup "$4" >> "$out" 2>/tmp/torch-bench.err
  tail -1 /tmp/torch-bench.err >> "$out"
done
