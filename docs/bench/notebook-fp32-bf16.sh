#!/usr/bin/env bash
# The notebook run in fp32 and in bf16 at one commit, then the 10-epoch probe of each.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=target/release/relnet
for p in fp32 bf16; do
  rm -rf /tmp/nb-$p
  /usr/bin/time -f "$p pretrain wall %e s" $R pretrain --method relational --dataset cifar10 --data-root /tmp/croot --backbone conv4 \
    --k 4 --batch-size 64 --loss bce --epochs 10 --seed 1 --precision $p --out /tmp/nb-$p 2> /tmp/nb-$p.err
  tail -2 /tmp/nb-$p.err
  $R eval linear --backbone /tmp/nb-$p/backbone.bpk --dataset cifar10 --data-root /tmp/croot --epochs 10 | tee /tmp/nb-$p.probe
done
