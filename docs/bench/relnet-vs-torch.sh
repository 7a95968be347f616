#!/usr/bin/env bash
# relnet vs the PyTorch reference pipeline, back to back: relnet fp32 and bf16 (`--precision
# bf16`), then PyTorch by default, with channels_last, and with channels_last + bf16 autocast,
# row by row. Run on a quiet machine
# (a concurrent build skews figures 3-5x), after `cargo build --release --workspace`; run it twice
# (two sittings, one log each): PyTorch's own figures move 10-40% between runs.
# Usage: docs/bench/relnet-vs-torch.sh DATA_ROOT PYTHON OUT_LOG
#   DATA_ROOT: folder holding cifar10/ (train/<class>/*.jpg); PYTHON: a Python with torch.
# The log starts with the host's CPU flags and ends with relnet's fp32 step and end-to-end speed
# over PyTorch's best fp32 setting, relnet's bf16 over PyTorch's best bf16 setting (channels_last
# + bf16; skipped where the CPU lacks avx512_bf16 and amx_bf16, unless TORCH_BF16=1), and
# relnet's bf16 step over its own fp32 step.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=${1:?data root}; py=${2:?python with torch}; out=${3:?output log}
flags=$( (grep -m1 '^flags' /proc/cpuinfo || true) | tr ' ' '\n' | (grep -xE 'avx2|fma|avx512f|avx512_bf16|amx_bf16' || true) | tr '\n' ' ')
{
  echo "# relnet and PyTorch, back to back, quiet machine, $(date -u +%F)"
  echo "# host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads; cpu flags: $flags"
  echo "# relnet $(git rev-parse --short HEAD)"
} > "$out"
# A figure of a run's output, 0 when the run printed none (it failed: its stderr is in the log).
value() { (grep -m1 "^$1=" "$2" || echo "$1=0") | cut -d= -f2; }
summary=()
for spec in "conv4 4 30 5" "conv4 16 10 2" "resnet32 4 20 2" "resnet32 16 6 1"; do
  set -- $spec
  echo "### $1 K=$2 M=64 steps=$3 warmup=$4" >> "$out"
  /usr/bin/time -f "relnet wall %e s peak_rss_kb %M" target/release/relnet bench pretrain --dataset cifar10 \
    --data-root "$root" --backbone "$1" --k "$2" --batch-size 64 --steps "$3" --warmup "$4" > /tmp/relnet-bench.out 2>/tmp/relnet-bench.err || true
  cat /tmp/relnet-bench.out >> "$out"; tail -1 /tmp/relnet-bench.err >> "$out"
  r_step=$(value step_only_views_per_s /tmp/relnet-bench.out); r_e2e=$(value end_to_end_views_per_s /tmp/relnet-bench.out)
  /usr/bin/time -f "relnet bf16 wall %e s peak_rss_kb %M" target/release/relnet bench pretrain --dataset cifar10 \
    --data-root "$root" --backbone "$1" --k "$2" --batch-size 64 --steps "$3" --warmup "$4" --precision bf16 \
    > /tmp/relnet-bench.out 2>/tmp/relnet-bench.err || true
  # Which bf16 path ran and why (vdpbf16ps or the fp32 kernels on rounded values).
  grep -m1 '^precision bf16:' /tmp/relnet-bench.err >> "$out" || true
  cat /tmp/relnet-bench.out >> "$out"; tail -1 /tmp/relnet-bench.err >> "$out"
  r16_step=$(value step_only_views_per_s /tmp/relnet-bench.out); r16_e2e=$(value end_to_end_views_per_s /tmp/relnet-bench.out)
  best_step=0; best_e2e=0; best=""; best_e2e_by=""; bf16_step=0; bf16_e2e=0; bf16_skipped=0
  for setting in "" "--channels-last" "--channels-last --bf16"; do
    # PyTorch's bf16 autocast on a CPU without bf16 instructions is oneDNN's emulation, 4-12x slower
    # than its fp32 (more than half of a sitting on a 2-core AVX2 host) and no one's best
    # setting there: skipped unless TORCH_BF16=1, the summary then says "skipped".
    if [[ "$setting" == *bf16* && "$flags" != *avx512_bf16* && "$flags" != *amx_bf16* && "${TORCH_BF16:-0}" != 1 ]]; then
      echo "torch channels_last + bf16: SKIP, this CPU has neither avx512_bf16 nor amx_bf16 (PyTorch would emulate bf16); TORCH_BF16=1 runs it" >> "$out"
      bf16_skipped=1
      continue
    fi
    /usr/bin/time -f "torch wall %e s peak_rss_kb %M" "$py" ../shared/bench/torch_reference.py speed --root "$root/cifar10" \
      --backbone "$1" --K "$2" --M 64 --steps "$3" --warmup "$4" $setting > /tmp/torch-bench.out 2>/tmp/torch-bench.err || true
    cat /tmp/torch-bench.out >> "$out"; tail -1 /tmp/torch-bench.err >> "$out"
    t_step=$(value step_only_views_per_s /tmp/torch-bench.out); t_e2e=$(value end_to_end_views_per_s /tmp/torch-bench.out)
    # The best fp32 step and the best fp32 end to end, each over the settings (they can differ).
    if [[ "$setting" == *bf16* ]]; then
      bf16_step=$t_step; bf16_e2e=$t_e2e
    else
      if awk -v a="$t_step" -v b="$best_step" 'BEGIN{exit !(a + 0 > b + 0)}'; then best_step=$t_step; best=${setting:-default}; fi
      if awk -v a="$t_e2e" -v b="$best_e2e" 'BEGIN{exit !(a + 0 > b + 0)}'; then best_e2e=$t_e2e; best_e2e_by=${setting:-default}; fi
    fi
  done
  summary+=("$(awk -v n="$1 K=$2" -v rs="$r_step" -v re="$r_e2e" -v bs="$best_step" -v be="$best_e2e" -v b="$best" \
    -v be_by="$best_e2e_by" -v fs="$bf16_step" -v fe="$bf16_e2e" -v hs="$r16_step" -v he="$r16_e2e" -v sk="$bf16_skipped" 'BEGIN{printf "%-14s fp32: relnet step %8.1f e2e %8.1f | torch best step %8.1f (%s) e2e %8.1f (%s) | ratio step %.2fx e2e %.2fx\n", n, rs, re, bs, b, be, be_by, (bs > 0 ? rs/bs : 0), (be > 0 ? re/be : 0); if (sk) printf "%-14s bf16: relnet step %8.1f e2e %8.1f | torch channels-last+bf16 skipped (no bf16 instructions) | relnet bf16/fp32 step %.2fx", n, hs, he, (rs > 0 ? hs/rs : 0); else printf "%-14s bf16: relnet step %8.1f e2e %8.1f | torch channels-last+bf16 step %8.1f e2e %8.1f | ratio step %.2fx e2e %.2fx | relnet bf16/fp32 step %.2fx", n, hs, he, fs, fe, (fs > 0 ? hs/fs : 0), (fe > 0 ? he/fe : 0), (rs > 0 ? hs/rs : 0)}')")
done
{
  echo "### summary (views/s; fp32 ratio = relnet fp32 / PyTorch's best fp32 setting, step and end to end each;"
  echo "### bf16 ratio = relnet bf16 / PyTorch channels_last + bf16 autocast, where it ran)"
  printf '%s\n' "${summary[@]}"
} >> "$out"
tail -10 "$out"
