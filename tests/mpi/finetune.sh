#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# finetune.sh ZO_FINETUNE MPIEXEC MPIEXEC_FLAGS...
# The transformer demo under mpirun: a tiny model is pretrained, then fine-tuned with MeZO,
# LOZO-M, LoHO and Adam in one process and over 2 ranks. Each data-parallel run must end where
# the single-process run does (held-out loss within 1e-5 relative: the only difference is that
# the batch loss is summed as a weighted sum of the two shards' means), MeZO and LOZO-M must
# send 24 bytes per rank per step, LoHO less than Adam, and Adam its full gradient.
set -euo pipefail
zo=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$zo" pretrain --out "$work/pre" --steps 30 --d-model 16 --heads 2 --layers 2 --ffn 32 \
  --batch 8 --threads 1 > /dev/null
value() { sed -n "s/^ *\"$2\": \([^,]*\),\?$/\1/p" "$1"; }
# awk, not python3: a minimal Debian has awk and no Python. A value that is not a number (null,
# nan) fails every comparison.
number='^-?[0-9]+([.][0-9]*)?([eE][-+]?[0-9]+)?$'
compare() { awk -v a="$1" -v b="$3" -v n="$number" "BEGIN { if (a !~ n || b !~ n) exit 1; d = a - b; exit !($2) }"; }
for method in mezo lozo-m loho adam; do
  args=(finetune --checkpoint "$work/pre" --method "$method" --lr 1e-3 --steps 40 --batch 8
        --train-examples 64 --test-examples 64 --eval-interval 20 --threads 1)
  "$zo" "${args[@]}" --out "$work/single-$method" > /dev/null 2>&1
  "$@" -np 2 "$zo" "${args[@]}" --mpi-timeout 30 --out "$work/ranks-$method" > /dev/null 2>&1
  single=$(value "$work/single-$method.json" test_loss)
  ranks=$(value "$work/ranks-$method.json" test_loss)
  bytes=$(value "$work/ranks-$method.json" bytes_sent_per_step_per_rank)
  echo "$method: held-out loss $single (1 process), $ranks (2 ranks); $bytes bytes per rank per step"
  compare "$single" 'd * d <= 1e-10 * a * a' "$ranks" ||
    { echo "FAILED: $method over 2 ranks ended elsewhere than in one process" >&2; exit 1; }
  case $method in
    mezo|lozo-m) [ "$bytes" = 24.0 ] || { echo "FAILED: $method sent $bytes bytes per step" >&2; exit 1; } ;;
    loho) loho_bytes=$bytes ;;
    adam) compare "$loho_bytes" 'a + 0 < b + 0' "$bytes" ||
            { echo "FAILED: LoHO sent $loho_bytes bytes per step, Adam $bytes" >&2; exit 1; } ;;
  esac
done
echo "finetune.sh: passed"
