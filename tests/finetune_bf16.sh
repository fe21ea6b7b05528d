#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# zo-finetune with 16-bit weights (--dtype bf16), on a tiny model (a few seconds):
#   - a bf16 MeZO run lowers the held-out loss, names its dtype in the summary (bf16, exact restore,
#     2 bytes a parameter) and its curves ("mezo (bf16)"), and runs again bit for bit;
#   - killed after a save and resumed, it ends where the uninterrupted run ends, and its saved
#     weights are a BF16 checkpoint (torch_dtype bfloat16) that a bf16 and an f32 run load;
#   - LOZO runs in bf16 and f16;
#   - report labels the bf16 rows beside the f32 ones.
# The refusals (--restore arithmetic, loho, adam) are in finetune_options.sh.
set -uo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 ZO_FINETUNE" >&2
  exit 2
fi
zo=$(realpath "$1")
source "$(dirname "${BASH_SOURCE[0]}")/shell_support.sh"
ok() { echo "ok: $*"; }
field() { grep -o "\"$2\": [^,}]*" "$1" | head -1 | sed 's/^[^:]*: //'; }

if ! "$zo" pretrain --out base --steps 60 --d-model 16 --layers 2 --heads 2 --ffn 32 --batch 8 \
  --lr 3e-3 --threads 1 > /dev/null 2> pretrain.err; then
  cat pretrain.err >&2
  echo "FAILED: cannot pretrain the tiny model" >&2
  exit 1
fi
fine=(--checkpoint base --batch 4 --train-examples 48 --test-examples 24 --eval-interval 7
  --lr 1e-3 --threads 1)

# --- a bf16 MeZO run --------------------------------------------------------------------------
for run in mezo-bf16 again; do
  if ! "$zo" finetune "${fine[@]}" --steps 120 --method mezo --dtype bf16 --out "$run" > /dev/null \
    2> "$run.err"; then
    fail "finetune --dtype bf16 failed: $(cat "$run.err")"
  fi
done
[ "$(field mezo-bf16.json dtype)" = '"bf16"' ] && [ "$(field mezo-bf16.json label)" = '"mezo (bf16)"' ] &&
  [ "$(field mezo-bf16.json restore)" = '"exact"' ] &&
  ok "the summary names the dtype, the label and the exact restore" ||
  fail "the summary lacks dtype bf16, label 'mezo (bf16)' or restore exact: $(cat mezo-bf16.json)"
parameters=$(field mezo-bf16.json parameter_count)
[ "$(field mezo-bf16.json parameter_bytes)" = "$((2 * parameters))" ] &&
  ok "2 bytes a parameter ($parameters parameters)" ||
  fail "parameter_bytes is $(field mezo-bf16.json parameter_bytes), not 2 × $parameters"
[ "$(grep -vc '^mezo (bf16),' mezo-bf16.csv)" = 1 ] && ok "every curve row is 'mezo (bf16)'" ||
  fail "curve rows not labelled 'mezo (bf16)': $(head -3 mezo-bf16.csv)"
first=$(sed -n 2p mezo-bf16.csv | cut -d, -f6)
last=$(field mezo-bf16.json test_loss)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1e-4) }' &&
  ok "the held-out loss falls from $first to $last" ||
  fail "the held-out loss does not fall: $first -> $last"
cmp -s <(cut -d, -f1-6 mezo-bf16.csv) <(cut -d, -f1-6 again.csv) &&
  [ "$(field mezo-bf16.json test_loss)" = "$(field again.json test_loss)" ] &&
  ok "a second run is bit for bit the same" || fail "two identical bf16 runs differ"

# --- killed after a save, resumed -------------------------------------------------------------
"$zo" finetune "${fine[@]}" --steps 120 --method mezo --dtype bf16 --out killed --save-every 5 --resume yes \
  > /dev/null 2> killed.err &
pid=$!
for _ in $(seq 600); do
  [ -f killed.resume/state ] && break
  sleep 0.01
done
kill -9 "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
if [ -f killed.resume/state ]; then
  weights=$(grep -ao '"weights":"[^"]*"' killed.resume/state | sed 's/.*:"//; s/"$//')
  grep -q '"torch_dtype": "bfloat16"' "killed.resume/$weights/config.json" &&
    grep -aq '"dtype":"BF16"' "killed.resume/$weights/model.safetensors" &&
    ! grep -aq '"dtype":"F32"' "killed.resume/$weights/model.safetensors" &&
    ok "the saved weights are a BF16 checkpoint" ||
    fail "the saved weights killed.resume/$weights are not a BF16 checkpoint"
  for dtype in bf16 f32; do
    "$zo" finetune --checkpoint "killed.resume/$weights" --steps 1 --batch 2 --train-examples 4 \
      --test-examples 2 --threads 1 --dtype "$dtype" --out "load-$dtype" > /dev/null \
      2> load.err && ok "the BF16 checkpoint loads into a $dtype run" ||
      fail "the BF16 checkpoint does not load into a $dtype run: $(cat load.err)"
  done
else
  fail "no resume state appeared within 6 s: $(cat killed.err)"
fi
if "$zo" finetune "${fine[@]}" --steps 120 --method mezo --dtype bf16 --out killed --save-every 5 \
  --resume yes > /dev/null 2> resumed.err; then
  grep -q "resuming at step" resumed.err &&
    [ "$(field killed.json test_loss)" = "$(field mezo-bf16.json test_loss)" ] &&
    cmp -s <(cut -d, -f1-6 killed.csv) <(cut -d, -f1-6 mezo-bf16.csv) &&
    ok "killed and resumed, it ends where the uninterrupted run ends" ||
    fail "the resumed bf16 run ends at $(field killed.json test_loss), the uninterrupted one at" \
      "$(field mezo-bf16.json test_loss) (or their curves differ, or it did not resume)"
else
  fail "the resumed bf16 run failed: $(cat resumed.err)"
fi

# --- LOZO in bf16 and f16 ---------------------------------------------------------------------
for dtype in bf16 f16; do
  "$zo" finetune "${fine[@]}" --steps 20 --method lozo --rank 2 --interval 5 --dtype "$dtype" \
    --out "lozo-$dtype" > /dev/null 2> lozo.err &&
    [ "$(field "lozo-$dtype.json" label)" = "\"lozo ($dtype)\"" ] && ok "lozo runs in $dtype" ||
    fail "lozo --dtype $dtype: $(cat lozo.err)"
done

# --- the report -------------------------------------------------------------------------------
"$zo" finetune "${fine[@]}" --steps 120 --method mezo --out mezo > /dev/null 2> f32.err ||
  fail "the f32 run failed: $(cat f32.err)"
# The table is written before the plot, which needs gnuplot.
"$zo" report --out . mezo.json mezo-bf16.json > /dev/null 2> report.err
grep -q '^| mezo | ' results.md && grep -q '^| mezo (bf16) | ' results.md &&
  ok "report labels the bf16 row" || fail "report's table lacks the rows: $(cat results.md)"

if [ "$failures" -gt 0 ]; then
  echo "finetune_bf16.sh: $failures FAILED" >&2
  exit 1
fi
echo "finetune_bf16.sh: all passed"
