#!/usr/bin/env bash
# relnet's training step at each vector width on one host, alternating twice: the AVX2 build
# (RELNET_SIMD=avx2), the default (the widest the CPU has: AVX-512 where it has AVX-512F, else
# the same AVX2 build) and bf16 (`--precision bf16`: vdpbf16ps where the CPU has AVX512-BF16),
# then the host's peaks. The log's flags line says which the default is.
# Run on a quiet machine after `cargo build --release --workspace --bins --examples`.
# Usage: docs/bench/simd-widths.sh DATA_ROOT OUT_LOG   (DATA_ROOT holds cifar10/)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:?data root}; out=${2:?output log}
flags=$( (grep -m1 '^flags' /proc/cpuinfo || true) | tr ' ' '\n' | (grep -xE 'avx2|fma|avx512f|avx512vl|avx512_bf16|amx_bf16' || true) | tr '\n' ' ')
{
  echo "# relnet step by vector width, $(date -u +%F), relnet $(git rev-parse --short HEAD)"
  echo "# host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads; cpu flags: $flags"
} > "$out"
value() { (grep -m1 "^$1=" "$2" || echo "$1=0") | cut -d= -f2; }
for round in 1 2; do
  for spec in "conv4 4 30 5" "resnet32 4 10 2"; do
    set -- $spec
    for setting in avx2 widest bf16; do
      env=(); prec=()
      [[ $setting == avx2 ]] && env=(RELNET_SIMD=avx2)
      [[ $setting == bf16 ]] && prec=(--precision bf16)
      env "${env[@]}" target/release/relnet bench pretrain --dataset cifar10 --data-root "$root" --backbone "$1" \
        --k "$2" --batch-size 64 --steps "$3" --warmup "$4" "${prec[@]}" > /tmp/simd.out 2> /tmp/simd.err || true
      echo "round $round $1 K=$2 $setting: step $(value step_only_views_per_s /tmp/simd.out) views/s, end to end $(value end_to_end_views_per_s /tmp/simd.out); $(grep -m1 -E 'forward' /tmp/simd.err || true)" >> "$out"
    done
  done
done
target/release/examples/fma_peak >> "$out"
cat "$out"
