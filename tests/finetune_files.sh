#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# finetune_files.sh ZO_FINETUNE ZO_REPLAY
# What zo-finetune and zo-replay do with their files when things go wrong (issue 21): a failed
# write is an error naming the file (outputs linked to /dev/full, a file-size limit standing in
# for a full disk), summaries, curves and checkpoints are replaced as a whole so the previous
# ones survive a failed write, a second run on a locked prefix is refused, an output that would
# overwrite an input is refused, options and the output directory are checked before any work,
# and `report` names the summary and the field it lacks. Tiny runs only; bash, coreutils and
# util-linux (flock), and grep and sed as the other tests use.
set -uo pipefail
zo=$(realpath "$1")
replay=$(realpath "$2")
source "$(dirname "${BASH_SOURCE[0]}")/shell_support.sh"

# expect_failure NAME PATTERN COMMAND...: the command exits non-zero, not killed by a signal, and
# its output (stdout and stderr, through a pipe so that a file-size limit does not swallow it)
# matches the extended regular expression PATTERN. The output is left in $output.
output=
expect_failure() {
  local name=$1 pattern=$2
  shift 2
  local status=0
  output=$("$@" 2>&1) || status=$?
  if [ "$status" = 0 ]; then
    fail "$name: exited 0"
  elif [ "$status" -gt 128 ]; then
    fail "$name: killed by signal $((status - 128))"
  elif ! grep -qE -- "$pattern" <<< "$output"; then
    fail "$name: the error does not match '$pattern': $output"
  else
    echo "ok: $name"
    return 0
  fi
  return 1
}

# expect_success NAME COMMAND...
expect_success() {
  local name=$1
  shift
  if output=$("$@" 2>&1); then
    echo "ok: $name"
  else
    fail "$name: exited non-zero: $output"
  fi
}

# Nothing before the refusal: no progress line (pretrain) and no zero-shot evaluation (finetune).
expect_no_work() {
  if grep -qE 'zero-shot|pretrain step' <<< "$output"; then fail "$1: work was done first"; fi
}

# same FILE COPY NAME: FILE is unchanged from COPY (same SHA-256; coreutils has no cmp).
same() {
  if [ -f "$1" ] && [ "$(sha256sum < "$1")" = "$(sha256sum < "$2")" ]; then
    echo "ok: $3"
  else
    fail "$3: $1 changed"
  fi
}

# no_temporaries NAME DIR...: no temporary or set-aside file or directory is left in the DIRs.
no_temporaries() {
  local name=$1 left=() dir
  shift
  shopt -s nullglob dotglob
  for dir in "$@"; do left+=("$dir"/*.tmp* "$dir"/*.old.* "$dir"/*.lock); done
  shopt -u nullglob dotglob
  if [ "${#left[@]}" = 0 ]; then echo "ok: $name"; else fail "$name: left behind: ${left[*]}"; fi
}

# Runs a command with a file-size limit of 0: every write to a regular file fails (EFBIG), as
# on a full disk.
no_space() { (ulimit -f 0 && exec "$@"); }

# An option may be given once: a command that changes one of these options starts from the
# *_base arrays, which leave it out.
tiny=(--d-model 16 --layers 2 --heads 2 --ffn 32)
small=(--d-model 8 --layers 1 --heads 2 --ffn 16)
pretrain_base=("$zo" pretrain --threads 1)
pretrain=("${pretrain_base[@]}" --steps 20 "${tiny[@]}" --batch 4)
pretrain_small=("${pretrain_base[@]}" --steps 20 "${small[@]}" --batch 4)
finetune_base=("$zo" finetune --steps 10 --batch 4 --threads 1)
finetune=("${finetune_base[@]}" --method mezo --lr 1e-3 --train-examples 16 --test-examples 16)

expect_success "pretrain" "${pretrain[@]}" --out CK || exit 1
expect_success "finetune" "${finetune[@]}" --checkpoint CK --out r || exit 1
no_temporaries "a finished run leaves no temporary or lock file" . CK
cp CK/config.json config.before
cp CK/model.safetensors model.before

echo "-- 1: a failed write is an error naming the file"
ln -s /dev/full full.csv
ln -s /dev/full full.json
expect_failure "finetune: curves to /dev/full" 'full\.csv' "${finetune[@]}" --checkpoint CK --out full
rm full.csv
expect_failure "finetune: summary to /dev/full" 'full\.json' "${finetune[@]}" --checkpoint CK --out full
ln -s /dev/null null.csv
ln -s /dev/null null.json
expect_success "finetune: outputs linked to /dev/null are written into it" \
  "${finetune[@]}" --checkpoint CK --out null
[ -L null.csv ] && [ -L null.json ] && [ -c /dev/null ] || fail "the links to /dev/null were replaced"
expect_failure "finetune: standard output to /dev/full" 'standard output' \
  bash -c '"$@" > /dev/full' finetune "${finetune[@]}" --checkpoint CK --out r
mkdir report-full
ln -s /dev/full report-full/results.md
expect_failure "report: table to /dev/full" 'results\.md' "$zo" report --out report-full r.json
if command -v gnuplot > /dev/null; then
  rm report-full/results.md
  ln -sf /dev/full report-full/comparison.png
  expect_failure "report: plot to /dev/full" 'comparison\.png' "$zo" report --out report-full r.json
fi
ln -s /dev/full replayed.safetensors
echo "not a log" > run.zotraj
expect_failure "zo-replay: output linked to /dev/full" 'replayed\.safetensors' \
  "$replay" CK/model.safetensors run.zotraj replayed.safetensors

echo "-- 2: summaries and curves are replaced as a whole; a prefix is locked for a run"
cp r.json r.json.before
cp r.csv r.csv.before
expect_failure "finetune on a full disk" 'r\.csv' no_space "${finetune[@]}" --checkpoint CK --out r
same r.json r.json.before "the previous summary survives a failed write"
same r.csv r.csv.before "the previous curves survive a failed write"
no_temporaries "a failed write leaves no temporary" .
exec 9> r.lock
flock -n 9 || fail "cannot take the lock for the test"
expect_failure "a second run on a locked prefix is refused" 'output prefix r is locked' \
  "${finetune[@]}" --checkpoint CK --out r
expect_no_work "the locked run"
exec 9>&-
expect_success "the prefix is free again once the other run ends" \
  "${finetune[@]}" --checkpoint CK --out r
no_temporaries "the lock file is removed at the end" .
cp r.json r.json.before
cp r.csv r.csv.before

echo "-- 4: an output that would overwrite an input is refused"
# On a copy of the checkpoint, so that an overwrite does not spoil the later checks.
cp -r CK CK4
expect_failure "finetune --out CK4/config" 'would overwrite .*config\.json' \
  "${finetune[@]}" --checkpoint CK4 --out CK4/config
expect_no_work "finetune --out CK4/config"
ln -s CK4/model.safetensors alias.json
expect_failure "finetune --out through a link to the weights" 'would overwrite' \
  "${finetune[@]}" --checkpoint CK4 --out alias
same CK4/config.json config.before "the checkpoint's config.json is intact"
same CK4/model.safetensors model.before "the checkpoint's weights are intact"
expect_failure "zo-replay BASE LOG BASE" 'would overwrite the base checkpoint' \
  "$replay" CK4/model.safetensors run.zotraj CK4/model.safetensors
cp run.zotraj run.zotraj.before
expect_failure "zo-replay BASE LOG LOG" 'would overwrite the trajectory log' \
  "$replay" CK4/model.safetensors run.zotraj ./run.zotraj
same CK4/model.safetensors model.before "zo-replay leaves the base intact"
same run.zotraj run.zotraj.before "zo-replay leaves the log intact"
mkdir runs
expect_success "finetune into runs/" "${finetune[@]}" --checkpoint CK4 --out runs/curves
expect_failure "report over a run's curves" 'would overwrite' "$zo" report --out runs runs/curves.json

echo "-- 5: options and the output directory are checked before any work"
expect_failure "finetune --out in no directory" '--out /dev/full/r' \
  "${finetune[@]}" --checkpoint CK --out /dev/full/r
expect_no_work "finetune --out /dev/full/r"
expect_failure "finetune --out in an unwritable directory" '--out /proc/r' \
  "${finetune[@]}" --checkpoint CK --out /proc/r
expect_no_work "finetune --out /proc/r"
expect_failure "pretrain --out in no directory" '--out /dev/full/ck' \
  "${pretrain[@]}" --out /dev/full/ck
expect_no_work "pretrain --out /dev/full/ck"
expect_failure "finetune --lr -1" '--lr must be at least 0' \
  "${finetune_base[@]}" --method mezo --train-examples 16 --test-examples 16 --checkpoint CK \
  --out r --lr -1
expect_no_work "finetune --lr -1"
expect_failure "finetune --eps 0" '--eps must be positive' \
  "${finetune[@]}" --checkpoint CK --out r --eps 0
expect_no_work "finetune --eps 0"
expect_failure "finetune --method loho --clip -1" '--clip must be at least 0' \
  "${finetune_base[@]}" --lr 1e-3 --train-examples 16 --test-examples 16 --checkpoint CK --out r \
  --method loho --clip -1 --loho-layers 1
expect_no_work "finetune --clip -1"
expect_failure "pretrain --lr -1" '--lr must be at least 0' "${pretrain[@]}" --out CK --lr -1
expect_no_work "pretrain --lr -1"
# Under a 2 GiB address-space limit, so that a regression fails fast rather than exhausting the
# machine.
limited() { (ulimit -v 2097152 && exec timeout 60 "$@"); }
expect_failure "finetune --train-examples 1000000000" '--train-examples 1000000000 would build' \
  limited "${finetune_base[@]}" --method mezo --lr 1e-3 --test-examples 16 --checkpoint CK \
  --out r --train-examples 1000000000
expect_failure "finetune --test-examples 1000000000" '--test-examples 1000000000 would build' \
  limited "${finetune_base[@]}" --method mezo --lr 1e-3 --train-examples 16 --checkpoint CK \
  --out r --test-examples 1000000000
expect_failure "pretrain --steps 100000000" '--steps 100000000 .* would build' \
  limited "${pretrain_base[@]}" "${tiny[@]}" --out CK --steps 100000000 --batch 32
same r.json r.json.before "refused runs leave the summary"
same CK/config.json config.before "refused runs leave the checkpoint"

echo "-- 6: a checkpoint directory is replaced as a whole"
expect_failure "pretrain over a checkpoint on a full disk" 'cannot write the checkpoint CK' \
  no_space "${pretrain_small[@]}" --out CK
same CK/config.json config.before "the old config.json survives a failed save"
same CK/model.safetensors model.before "the old weights survive a failed save"
no_temporaries "a failed save leaves no temporary" . CK
expect_success "pretrain over a checkpoint of another shape" "${pretrain_small[@]}" --out CK
expect_success "the new checkpoint loads" "${finetune[@]}" --checkpoint CK --out small
no_temporaries "a save leaves no temporary" . CK
mkdir hf
echo '{}' > hf/tokenizer.json
expect_failure "a directory with other files is not replaced" "hf holds 'tokenizer.json'" \
  "${pretrain[@]}" --out hf
expect_no_work "pretrain --out hf"
[ -f hf/tokenizer.json ] || fail "hf/tokenizer.json was removed"
"${pretrain[@]}" --out CK2 > /dev/null 2>&1 &
first=$!
"${pretrain_small[@]}" --out CK2 > /dev/null 2>&1 &
second=$!
wait "$first" || fail "the first of two concurrent pretrains failed"
wait "$second" || fail "the second of two concurrent pretrains failed"
expect_success "after two concurrent pretrains the checkpoint loads" \
  "${finetune[@]}" --checkpoint CK2 --out concurrent
no_temporaries "concurrent pretrains leave no temporary" . CK2

echo "-- 11: report names the summary and the field"
grep -v '"csv"' r.json > no-csv.json
expect_failure "report on a summary without csv" 'no-csv\.json.*"csv"' \
  "$zo" report --out report r.json no-csv.json
sed 's/"steps": 10/"steps": "ten"/' r.json > bad-steps.json
expect_failure "report on a summary with a mistyped field" 'bad-steps\.json.*"steps"' \
  "$zo" report --out report bad-steps.json
echo '{"method": ' > broken.json
expect_failure "report on invalid JSON" 'broken\.json' "$zo" report --out report broken.json

echo "-- 7: non-finite values are neither saved nor loaded, and skipped steps are counted"
# Adam at lr 1e30 diverges: the checkpoint is refused, naming the count and the first tensor,
# and nothing is written (the old CK3 is kept).
"${pretrain[@]}" --out CK3 > /dev/null 2>&1 || fail "pretrain CK3"
cp CK3/model.safetensors ck3.before
expect_failure "pretrain --lr 1e30 refuses to save NaN weights" \
  'refusing to write the checkpoint CK3: [0-9]+ weights are NaN or infinite \(the first in' \
  "${pretrain_base[@]}" --steps 20 "${tiny[@]}" --batch 4 --lr 1e30 --out CK3
same CK3/model.safetensors ck3.before "the refused save leaves the old weights"
no_temporaries "the refused save leaves no temporary" . CK3
# One NaN written into the last float of a checkpoint (little-endian 0x7fc00000).
cp -r CK3 CKNAN
size=$(stat -c %s CKNAN/model.safetensors)
printf '\x00\x00\xc0\x7f' | dd of=CKNAN/model.safetensors bs=1 seek=$((size - 4)) conv=notrunc \
  status=none
expect_failure "finetune refuses a checkpoint holding a NaN" \
  "tensor '[^']+' in .*model\.safetensors holds 1 NaN or infinite values" \
  "${finetune[@]}" --checkpoint CKNAN --out nan
expect_no_work "finetune on CKNAN"
# At lr 1e300 every MeZO update overflows float: each is refused, the weights stay as they were
# (a finite held-out loss), and the progress line and the summary count the skipped steps.
expect_success "finetune --lr 1e300 runs with every update refused" \
  "${finetune_base[@]}" --method mezo --lr 1e300 --train-examples 16 --test-examples 16 \
  --checkpoint CK --out huge
grep -q 'skipped 10 (no update)' <<< "$output" || fail "the progress line counts no skipped step"
grep -q '"skipped_steps": 10,' huge.json || fail "huge.json has no skipped_steps 10"
grep -q '"refused_updates": 10,' huge.json || fail "huge.json has no refused_updates 10"
grep -q '"test_loss": null' huge.json && fail "huge.json has a null test_loss"
grep -q '"skipped_steps": 0,' r.json || fail "r.json has no skipped_steps 0"
# The table is written before the plot, so it is there even where gnuplot is not.
if ! "$zo" report --out report-huge huge.json > /dev/null 2>&1 && command -v gnuplot > /dev/null; then
  fail "report on huge.json failed"
fi
grep -q '| 10 (10 skipped) |' report-huge/results.md || fail "results.md does not show the skipped steps"

if [ "$failures" != 0 ]; then
  echo "finetune_files.sh: $failures FAILED" >&2
  exit 1
fi
echo "finetune_files.sh: passed"
