#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# faults.sh ZO_FINETUNE [ROUNDS]
# Repeats zo-finetune's fault runs (issue 21) on a tiny model:
#   - kill -9 at random moments during `finetune --save-every` (every method), then the outputs
#     are absent or whole (the summary ends with "}" and holds "test_loss"; the saved weights
#     load), and `--resume yes` after the kills ends exactly where an uninterrupted run ends
#     (the same test_loss in the summary, the same curve rows but their seconds);
#   - kill -9 at random moments during `pretrain`: the checkpoint is absent or loads;
#   - a full disk (a file-size limit, outputs linked to /dev/full): a non-zero exit and the
#     previous outputs untouched;
#   - two runs on one prefix: while one holds the prefix the other is refused;
#   - random command lines (the tool's option names with random values: empty, huge, negative,
#     non-numeric, ...): each exits 0 or 1 (with an error message; memory also 3, its verdict),
#     never by a signal, never hangs.
# ROUNDS (default 2) scales every part: ROUNDS kill chains per method, ROUNDS pretrain kills,
# 20 * ROUNDS random command lines. CTest (finetune_faults) runs the short version; the long one:
#
#   bash tests/faults.sh build/examples/zo-finetune 50
#
# Needs bash, coreutils (timeout, sleep, shuf, cmp) and util-linux (flock); grep and sed as the
# other tests use.
set -uo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 ZO_FINETUNE [ROUNDS]" >&2
  exit 2
fi
zo=$(realpath "$1")
rounds=${2:-2}
source "$(dirname "${BASH_SOURCE[0]}")/shell_support.sh"

tiny=(--steps 20 --d-model 16 --layers 2 --heads 2 --ffn 32 --batch 4 --threads 1)
# A finetune long enough to be killed in the middle, evaluating and saving often.
fine=(--steps 120 --batch 4 --train-examples 48 --test-examples 24 --eval-interval 7 --threads 1)
methods=(mezo lozo lozo-m loho adam)
method_options() {
  case $1 in
    lozo | lozo-m) echo "--rank 2 --interval 5" ;;
    loho) echo "--loho-layers 1" ;;
    *) echo "" ;;
  esac
}

# A random integer in [0, $1).
random_below() { echo $((RANDOM % $1)); }
# Sleeps a random part of $1 nanoseconds.
random_sleep() {
  local ns=$(($1 * (RANDOM % 1000) / 1000))
  sleep "$((ns / 1000000000)).$(printf '%09d' $((ns % 1000000000)))"
}
now_ns() { date +%s%N; }

# whole_summary FILE: absent, or a whole summary.
whole_summary() {
  [ -e "$1" ] || return 0
  [ "$(tail -c 2 "$1")" = "}" ] && grep -q '"test_loss"' "$1"
}
test_loss() { grep '"test_loss"' "$1"; }
# loads DIR: the checkpoint DIR loads (one finetune step on it).
loads() {
  timeout 60 "$zo" finetune --checkpoint "$1" --steps 1 --batch 2 --train-examples 4 \
    --test-examples 2 --threads 1 --out "$work/load-check" > /dev/null 2> load-check.err
}

echo "== pretrain the base model"
if ! timeout 120 "$zo" pretrain --out base "${tiny[@]}" > /dev/null 2> pretrain.err; then
  cat pretrain.err >&2
  echo "FAILED: cannot pretrain the tiny model" >&2
  exit 1
fi

# --- finetune: kill -9 at random moments, then resume -----------------------------------------
kills=0
resumed_from_state=0
matched=0
chains=0
for method in "${methods[@]}"; do
  read -ra extra <<< "$(method_options "$method")"
  start=$(now_ns)
  if ! timeout 120 "$zo" finetune --checkpoint base --method "$method" --out "ref-$method" \
    "${fine[@]}" "${extra[@]}" > /dev/null 2> ref.err; then
    cat ref.err >&2
    fail "$method: the uninterrupted run failed"
    continue
  fi
  duration=$(($(now_ns) - start))
  for ((round = 1; round <= rounds; round++)); do
    prefix="run-$method-$round"
    chains=$((chains + 1))
    # One to three kills, each at a random moment of a run that resumes the previous one.
    chain_kills=$((1 + $(random_below 3)))
    for ((k = 0; k < chain_kills; k++)); do
      "$zo" finetune --checkpoint base --method "$method" --out "$prefix" "${fine[@]}" \
        "${extra[@]}" --save-every 5 --resume yes > /dev/null 2> "$prefix.kill.err" &
      pid=$!
      random_sleep "$duration"
      kill -9 "$pid" 2> /dev/null
      wait "$pid" 2> /dev/null
      [ $? = 137 ] && kills=$((kills + 1))
      whole_summary "$prefix.json" || fail "$method: a kill left a damaged summary $prefix.json"
      if [ -f "$prefix.resume/state" ]; then
        weights=$(grep -ao '"weights":"[^"]*"' "$prefix.resume/state" | sed 's/.*:"//; s/"$//')
        if [ -z "$weights" ] || ! loads "$prefix.resume/$weights"; then
          fail "$method: the resume state's weights $prefix.resume/$weights do not load:" \
            "$(cat load-check.err)"
        fi
      fi
    done
    if ! timeout 120 "$zo" finetune --checkpoint base --method "$method" --out "$prefix" \
      "${fine[@]}" "${extra[@]}" --save-every 5 --resume yes > /dev/null 2> "$prefix.err"; then
      fail "$method: the resumed run failed: $(cat "$prefix.err")"
      continue
    fi
    grep -q "resuming at step" "$prefix.err" && resumed_from_state=$((resumed_from_state + 1))
    if [ "$(test_loss "$prefix.json")" = "$(test_loss "ref-$method.json")" ] &&
      cmp -s <(cut -d, -f1-6 "$prefix.csv") <(cut -d, -f1-6 "ref-$method.csv"); then
      matched=$((matched + 1))
    else
      fail "$method: the resumed run $prefix ends at $(test_loss "$prefix.json"), the" \
        "uninterrupted one at $(test_loss "ref-$method.json") (or their curves differ)"
    fi
    [ -e "$prefix.resume" ] && fail "$method: a finished run left $prefix.resume"
  done
done
echo "finetune: $kills kills in $chains chains, $resumed_from_state resumed from a saved" \
  "state, $matched of $chains ended exactly where the uninterrupted run did"

# A resume with other options is refused, naming the option.
long=(--steps 400 --batch 4 --train-examples 48 --test-examples 24 --eval-interval 7 --threads 1)
"$zo" finetune --checkpoint base --method mezo --out changed "${long[@]}" --save-every 5 \
  > /dev/null 2>&1 &
pid=$!
for ((i = 0; i < 200; i++)); do
  [ -f changed.resume/state ] && break
  sleep 0.05
done
kill -9 "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
if [ -f changed.resume/state ]; then
  status=0
  out=$(timeout 60 "$zo" finetune --checkpoint base --method mezo --out changed "${long[@]}" \
    --lr 1e-5 --resume yes 2>&1) || status=$?
  if [ "$status" != 1 ] || ! grep -q -- "--lr" <<< "$out"; then
    fail "a resume with another --lr: status $status, $out"
  fi
else
  echo "note: the run with --steps 400 saved no state before it was killed; skipped"
fi

# --- pretrain: kill -9 at random moments ------------------------------------------------------
start=$(now_ns)
timeout 120 "$zo" pretrain --out pre "${tiny[@]}" > /dev/null 2>&1 || fail "pretrain failed"
duration=$(($(now_ns) - start))
pretrain_kills=0
for ((round = 1; round <= rounds * 2; round++)); do
  rm -rf pk
  [ $((round % 2)) = 0 ] && cp -r pre pk  # every other kill over an older checkpoint
  "$zo" pretrain --out pk "${tiny[@]}" --seed "$round" > /dev/null 2>&1 &
  pid=$!
  random_sleep "$duration"
  kill -9 "$pid" 2> /dev/null
  wait "$pid" 2> /dev/null
  [ $? = 137 ] && pretrain_kills=$((pretrain_kills + 1))
  if [ -e pk ] && ! loads pk; then
    fail "pretrain: a kill left a checkpoint pk that does not load: $(cat load-check.err)"
  fi
done
echo "pretrain: $pretrain_kills kills, each checkpoint left absent or loading"

# --- a full disk --------------------------------------------------------------------------------
cp ref-mezo.json full.json
cp ref-mezo.csv full.csv
no_space() { (ulimit -f 0 && exec timeout 120 "$@"); }
for case in "finetune --checkpoint base --method mezo --out full ${fine[*]}" \
  "finetune --checkpoint base --method adam --out full ${fine[*]} --save-every 5" \
  "pretrain --out pre ${tiny[*]}"; do
  read -ra command <<< "$case"
  before=$(cat full.json pre/config.json pre/model.safetensors | cksum)
  status=0
  no_space "$zo" "${command[@]}" > /dev/null 2>&1 || status=$?
  if [ "$status" = 0 ] || [ "$status" -ge 124 ]; then
    fail "full disk: '$case' exited $status"
  fi
  [ "$before" = "$(cat full.json pre/config.json pre/model.safetensors | cksum)" ] ||
    fail "full disk: '$case' changed the previous outputs"
done
ln -s /dev/full devfull.json
ln -s /dev/full devfull.csv
status=0
timeout 120 "$zo" finetune --checkpoint base --out devfull "${fine[@]}" > /dev/null 2>&1 ||
  status=$?
[ "$status" = 1 ] || fail "outputs linked to /dev/full: exited $status"
echo "full disk: checked"

# --- two runs on one prefix ---------------------------------------------------------------------
exec 9> two.lock
flock -n 9 || fail "cannot take the lock for the test"
status=0
out=$(timeout 60 "$zo" finetune --checkpoint base --out two "${fine[@]}" 2>&1) || status=$?
[ "$status" = 1 ] && grep -q "locked" <<< "$out" || fail "a run on a locked prefix: $status $out"
exec 9>&-
# Two at once: each finishes or is refused, and the summary left is whole.
timeout 120 "$zo" finetune --checkpoint base --out two "${fine[@]}" > /dev/null 2> two1.err &
first=$!
timeout 120 "$zo" finetune --checkpoint base --out two "${fine[@]}" > /dev/null 2> two2.err
second=$?
wait "$first"
first=$?
for s in "$first" "$second"; do
  [ "$s" = 0 ] || [ "$s" = 1 ] || fail "two runs on one prefix: one exited $s"
done
{ [ "$first" = 0 ] || [ "$second" = 0 ]; } || fail "two runs on one prefix: both refused"
whole_summary two.json && [ -e two.json ] || fail "two runs on one prefix: two.json is damaged"
echo "two runs on one prefix: checked (exits $first and $second)"

# --- random command lines -----------------------------------------------------------------------
mapfile -t names < <("$zo" help | grep -oE '^  --[a-z0-9-]+' | sed 's/^  //' | sort -u)
values=("" "0" "1" "2" "3" "-1" "-5" "7" "0.5" "1e-3" "1e30" "-1e30" "1e308" "nan" "inf" "-inf"
  "abc" "0x10" " 1" "+1" "1.5" "4294967297" "18446744073709551616" "99999999999999999999999"
  "yes" "no" "mezo" "lozo" "lozo-m" "loho" "adam" "exact" "arithmetic" "base" "/dev/full"
  "/nonexistent/x" "--steps" "=" "é" "$(printf 'a%.0s' {1..300})")
commands=(pretrain finetune memory report)
lines=$((20 * rounds))
crashes=0
for ((i = 0; i < lines; i++)); do
  command=${commands[$(random_below ${#commands[@]})]}
  args=("$command")
  [ "$command" = finetune ] && args+=(--checkpoint base)
  [ "$command" = memory ] && args+=(--checkpoint base)
  for ((k = 0; k < $(random_below 5); k++)); do
    args+=("${names[$(random_below ${#names[@]})]}" "${values[$(random_below ${#values[@]})]}")
  done
  # Small sizes where the random options do not set them, so that a valid line ends soon; a
  # random value of the same option makes the line an error (given twice), which is fine.
  case $command in
    pretrain) args+=(--out "rand$i" --steps 2 --d-model 16 --layers 1 --heads 2 --ffn 16) ;;
    finetune) args+=(--out "rand$i" --steps 2 --train-examples 8 --test-examples 4 --batch 2) ;;
    memory) args+=(--batch 2) ;;
    report) args+=(--out "report$i" ref-mezo.json) ;;
  esac
  status=0
  timeout 60 "$zo" "${args[@]}" > rand.out 2> rand.err || status=$?
  if [ "$status" = 124 ]; then
    fail "random line hung (60 s): zo-finetune ${args[*]}"
    crashes=$((crashes + 1))
  elif [ "$command" = memory ] && [ "$status" = 3 ]; then
    # memory's verdict that the step's peak is over 10% above inference's: on the tiny model
    # its tenth of a MiB is noise either way.
    :
  elif [ "$status" -gt 1 ]; then
    fail "random line exited $status: zo-finetune ${args[*]}: $(tail -3 rand.err)"
    crashes=$((crashes + 1))
  elif [ "$status" = 1 ] && ! grep -q "error" rand.err; then
    fail "random line exited 1 without an error message: zo-finetune ${args[*]}"
  fi
done
echo "random command lines: $lines run, $crashes crashed or hung"

if [ "$failures" -gt 0 ]; then
  echo "$failures failures" >&2
  exit 1
fi
echo "all fault checks passed"
