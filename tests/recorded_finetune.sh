#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The demo's first 50 steps, recorded: a briefly pretrained example model fine-tuned for 50 steps
# with the demo's methods and settings in both restore modes and with both direction generators,
# the held-out loss and accuracy after every fifth step fingerprinted (the curves without their
# wall-clock column; any change to the parameters shows in every evaluation after it) and compared
# with tests/recorded/finetune.txt. The curves of philox4x32-10,
# with which they were first recorded, keep their first names. Usage: recorded_finetune.sh
# ZO_FINETUNE [--record]
set -euo pipefail
zo=$1
record=${2:-}
expected="$(cd "$(dirname "$0")" && pwd)/recorded/finetune.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$zo" pretrain --out "$work/pretrained" --steps 20 --threads 2 > /dev/null
common=(--checkpoint "$work/pretrained" --steps 50 --eval-interval 5 --train-examples 200
        --test-examples 64 --threads 2)
now="$work/now.txt"
for generator in philox4x32-10 philox4x32-8; do
  suffix=""
  [ "$generator" = philox4x32-10 ] || suffix=".$generator"
  for restore in arithmetic exact; do
    for method in mezo lozo lozo-m loho; do
      extra=()
      [ "$method" = loho ] && extra=(--fo-lr 1e-3)
      "$zo" finetune "${common[@]}" --method "$method" --lr 1e-4 --restore "$restore" \
        --generator "$generator" "${extra[@]}" --out "$work/$method" > /dev/null
      # Every column but the last (seconds).
      sum=$(sed 's/,[^,]*$//' "$work/$method.csv" | sha256sum | cut -c1-16)
      echo "$method.$restore$suffix $sum" >> "$now"
    done
  done
done

if [ "$record" = --record ]; then
  cp "$now" "$expected"
  echo "recorded $(wc -l < "$now") fine-tuning curves to $expected"
  exit 0
fi
if ! diff -u "$expected" "$now"; then
  echo "recorded_finetune: the curves differ from $expected" >&2
  exit 1
fi
echo "recorded_finetune: $(wc -l < "$now") curves as recorded"
