#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# finetune_options.sh ZO_FINETUNE
# zo-finetune's option parser (issue 21, item 3): empty values, numbers not written completely
# or not finite, integers with an exponent or a fraction or outside what stores them (no value
# wraps), an option given twice, a value that is itself an option, and options the chosen
# --method never reads are errors naming the option, for pretrain, finetune, memory and report,
# and are refused before any work. A few good command lines must still run. A tiny model only;
# bash and coreutils (timeout), and grep as the other tests use.
set -uo pipefail
zo=$(realpath "$1")
source "$(dirname "${BASH_SOURCE[0]}")/shell_support.sh"

# with BASE ARGS...: sets cmd to the array named BASE (a program, a command and --name value
# pairs) without the options that ARGS name, followed by ARGS; so ARGS replace options of BASE
# rather than repeating them (an option given twice is refused).
cmd=()
with() {
  local -n base=$1
  shift
  local named=" " a i=0
  for a in "$@"; do
    case $a in --*) named+="${a%%=*} " ;; esac
  done
  cmd=()
  while [ "$i" -lt "${#base[@]}" ]; do
    a=${base[i]}
    if [[ $a == --* && $named == *" $a "* ]]; then
      i=$((i + 2))
    else
      cmd+=("$a")
      i=$((i + 1))
    fi
  done
  cmd+=("$@")
}

# bad NAME PATTERN BASE ARGS...: BASE with ARGS exits non-zero (not by a signal, within 60 s)
# with a message matching the extended regular expression PATTERN, before any work: no progress
# line, zero-shot evaluation or measurement.
bad() {
  local name=$1 pattern=$2 base=$3 status=0 output
  shift 3
  with "$base" "$@"
  output=$(timeout 60 "${cmd[@]}" 2>&1) || status=$?
  if [ "$status" = 0 ]; then
    fail "$name: exited 0"
  elif [ "$status" = 124 ]; then
    fail "$name: still running after 60 s"
  elif [ "$status" -gt 128 ]; then
    fail "$name: killed by signal $((status - 128))"
  elif ! grep -qE -- "$pattern" <<< "$output"; then
    fail "$name: the error does not match '$pattern': $output"
  elif grep -qE 'zero-shot|pretrain step|memory of one step' <<< "$output"; then
    fail "$name: work was done before the refusal: $output"
  else
    echo "ok: $name"
  fi
}

# good NAME BASE ARGS...: BASE with ARGS exits 0.
good() {
  local name=$1 base=$2 output
  shift 2
  with "$base" "$@"
  if output=$(timeout 120 "${cmd[@]}" 2>&1); then
    echo "ok: $name"
  else
    fail "$name: exited non-zero: $output"
  fi
}

pretrain=("$zo" pretrain --out CK --steps 2 --d-model 16 --layers 2 --heads 2 --ffn 32 --batch 4
  --threads 1)
finetune=("$zo" finetune --checkpoint CK --method mezo --out r --lr 1e-3 --steps 2 --batch 4
  --train-examples 8 --test-examples 8 --threads 1)
memory=("$zo" memory --checkpoint CK --batch 4 --steps 1 --threads 1)
report=("$zo" report --out rep)

echo "-- good command lines"
good "pretrain" pretrain
[ -f CK/model.safetensors ] || {
  echo "finetune_options.sh: pretrain wrote no checkpoint" >&2
  exit 1
}
good "finetune --method mezo, --lr=VALUE, --restore, --eps" finetune --lr=1e-3 \
  --restore exact --eps 1e-3
good "finetune --generator philox4x32-10" finetune --generator philox4x32-10 --out first-generator
good "finetune --method lozo --rank --interval" finetune --method lozo --rank 2 --interval 5 \
  --out lozo
good "finetune --method lozo-m --beta" finetune --method lozo-m --beta 0.5 --rank 1 --out lozo-m
good "finetune --method loho --loho-layers --fo-lr --clip" finetune --method loho \
  --loho-layers 1 --fo-lr 1e-3 --clip 0 --out loho
good "finetune --method loho --loho-budget-mib" finetune --method loho --loho-budget-mib 1 \
  --out loho-budget
good "finetune --method adam --weight-decay" finetune --method adam --weight-decay 0 --out adam
good "finetune --method zo-momentum --beta" finetune --method zo-momentum --beta 0.5 \
  --out zo-momentum
good "finetune --method zo-adam --restore exact" finetune --method zo-adam --restore exact \
  --out zo-adam
good "finetune --method lezo --lezo-layers" finetune --method lezo --lezo-layers 2 --out lezo
good "finetune --method sign-sgd" finetune --method sign-sgd --out sign-sgd
good "finetune --method subzero --rank --interval" finetune --method subzero --rank 2 \
  --interval 5 --out subzero
good "finetune --method sparse-mezo --sparse-fraction --restore exact" finetune \
  --method sparse-mezo --sparse-fraction 0.25 --restore exact --out sparse-mezo
good "finetune --method hizoo --hessian-smoothing --restore exact" finetune --method hizoo \
  --hessian-smoothing 1e-3 --restore exact --out hizoo
good "finetune --method fzoo --directions, --forward-budget" finetune --method fzoo \
  --directions 3 --steps 0 --forward-budget 32 --out fzoo
good "finetune --steps 0 --forward-budget, --threads 0, the largest seed, --mpi-timeout" \
  finetune --steps 0 --forward-budget 16 --threads 0 --seed 18446744073709551615 \
  --data-seed 0 --eval-interval 1 --mpi-timeout 30
# At --scale 1 the probe's model has no parameters to speak of, and its verdict (exit 3 when the
# MeZO step's peak is over 10% above inference's) compares two processes' own overheads: it read
# 1.09 to 1.12. At 16 the parameters (8.2 MiB) decide it (1.03), as on the demo's model.
good "memory" memory --scale 16
good "finetune --dtype bf16 (exact restore by default)" finetune --dtype bf16 --out mezo-bf16
good "finetune --dtype f16 --restore exact --method lozo" finetune --dtype f16 --restore exact \
  --method lozo --rank 2 --out lozo-f16
good "finetune --dtype f32 --restore arithmetic" finetune --dtype f32 --restore arithmetic \
  --out mezo-f32
good "memory --dtype bf16" memory --dtype bf16 --scale 4
if command -v gnuplot > /dev/null; then good "report" report r.json lozo.json adam.json; fi

echo "-- empty values, options given twice, values that are options, unknown options"
bad "pretrain --lr ''" 'option --lr has an empty value' pretrain --lr ""
bad "pretrain --lr=" 'option --lr has an empty value' pretrain --lr=
bad "finetune --lr ''" 'option --lr has an empty value' finetune --lr ""
bad "finetune --lr=" 'option --lr has an empty value' finetune --lr=
bad "finetune --method ''" 'option --method has an empty value' finetune --method ""
bad "finetune --checkpoint ''" 'option --checkpoint has an empty value' finetune --checkpoint ""
bad "finetune --restore=" 'option --restore has an empty value' finetune --restore=
bad "memory --checkpoint=" 'option --checkpoint has an empty value' memory --checkpoint=
bad "memory --batch ''" 'option --batch has an empty value' memory --batch ""
bad "report --out ''" 'option --out has an empty value' report --out "" r.json
bad "report --out=" 'option --out has an empty value' report --out= r.json
bad "pretrain --lr twice" 'option --lr is given more than once' pretrain --lr 1e-3 --lr 2e-3
bad "finetune --eps twice" 'option --eps is given more than once' finetune --eps 1e-3 --eps=1e-3
bad "memory --batch twice" 'option --batch is given more than once' memory --batch 4 --batch 4
bad "report --out twice" 'option --out is given more than once' report --out rep --out rep r.json
bad "pretrain --out --steps 2" 'option --out needs a value, got the option --steps' \
  pretrain --out --steps 2
bad "finetune --steps at the end" 'option --steps needs a value' finetune --steps
bad "finetune --bogus" 'unknown option --bogus' finetune --bogus 1
bad "pretrain with a stray word" "unexpected argument 'stray'" pretrain stray

echo "-- numbers"
for value in nan inf -inf 1e999 0x10 ' 1e-3' 1e-3x +1e-3 1,5; do
  bad "finetune --lr '$value'" '--lr must be a finite number' finetune --lr "$value"
done
bad "pretrain --lr nan" '--lr must be a finite number' pretrain --lr nan
bad "finetune --lr -1" '--lr must be at least 0' finetune --lr -1
bad "finetune --method lozo-m --beta nan" '--beta must be a finite number' \
  finetune --method lozo-m --beta nan
bad "finetune --method loho --loho-budget-mib 1e300" '--loho-budget-mib must be from 0 to' \
  finetune --method loho --loho-budget-mib 1e300
bad "finetune --mpi-timeout 0" '--mpi-timeout must be positive' finetune --mpi-timeout 0
bad "finetune --mpi-timeout 1e300" '--mpi-timeout must be from' finetune --mpi-timeout 1e300

echo "-- integers: no exponent or fraction, and within what stores them"
bad "pretrain --d-model 4294967312 (16 + 2^32)" '--d-model must be an integer from 1 to 65536' \
  pretrain --d-model 4294967312
bad "pretrain --threads 4294967297 (1 + 2^32)" '--threads must be an integer from 0 to 4096' \
  pretrain --threads 4294967297
bad "finetune --threads 4294967297" '--threads must be an integer from 0 to 4096' \
  finetune --threads 4294967297
bad "memory --threads 4294967297" '--threads must be an integer from 0 to 4096' \
  memory --threads 4294967297
bad "finetune --threads -1" '--threads must be an integer' finetune --threads -1
bad "pretrain --heads 4294967298" '--heads must be an integer from 1 to' pretrain --heads 4294967298
bad "pretrain --layers 4294967298" '--layers must be an integer from 1 to 1024' \
  pretrain --layers 4294967298
bad "pretrain --ffn 4294967328" '--ffn must be an integer from 1 to' pretrain --ffn 4294967328
bad "pretrain --max-positions 4294967360" '--max-positions must be an integer from 1 to' \
  pretrain --max-positions 4294967360
bad "pretrain --window 4294967328" '--window must be an integer from 1 to' \
  pretrain --window 4294967328
bad "pretrain --layers 1.5" '--layers must be an integer' pretrain --layers 1.5
bad "pretrain --steps 1e3" '--steps must be an integer' pretrain --steps 1e3
bad "pretrain --batch 0" '--batch must be an integer from 1' pretrain --batch 0
bad "pretrain --seed -1" '--seed must be an integer from 0 to 18446744073709551615' \
  pretrain --seed -1
bad "pretrain --seed 18446744073709551616 (2^64)" '--seed must be an integer from 0 to' \
  pretrain --seed 18446744073709551616
bad "pretrain --heads 3 (16 not divisible)" '--d-model 16 is not divisible by --heads 3' \
  pretrain --heads 3
bad "finetune --batch 1e3" '--batch must be an integer' finetune --batch 1e3
bad "finetune --batch 1.5" '--batch must be an integer' finetune --batch 1.5
bad "finetune --batch 4294967300" '--batch must be an integer from 1 to 4294967296' \
  finetune --batch 4294967300
bad "finetune --steps 4294967297" '--steps must be an integer from 0 to 4294967296' \
  finetune --steps 4294967297
bad "finetune --steps -1" '--steps must be an integer' finetune --steps -1
bad "finetune --train-examples +8" '--train-examples must be an integer' \
  finetune --train-examples +8
bad "finetune --eval-interval -1" '--eval-interval must be an integer' finetune --eval-interval -1
bad "finetune --seed 1.5" '--seed must be an integer' finetune --seed 1.5
bad "finetune --data-seed -1" '--data-seed must be an integer' finetune --data-seed -1
bad "finetune --steps 0 --forward-budget 18446744073709551616" \
  '--forward-budget must be an integer' finetune --steps 0 --forward-budget 18446744073709551616
bad "finetune --method lozo --rank 4294967298" '--rank must be an integer from 1 to 65536' \
  finetune --method lozo --rank 4294967298
bad "finetune --method lozo --rank 100 (over the model's 16)" '--rank 100 exceeds 16' \
  finetune --method lozo --rank 100
bad "finetune --method lozo --interval 0" '--interval must be an integer from 1' \
  finetune --method lozo --interval 0
bad "finetune --method loho --loho-layers 0" '--loho-layers must be an integer from 1' \
  finetune --method loho --loho-layers 0
bad "finetune --method loho --loho-layers 5 (over the model's 4)" '--loho-layers 5 exceeds' \
  finetune --method loho --loho-layers 5
bad "finetune --method lezo --lezo-layers 0" '--lezo-layers must be an integer from 1' \
  finetune --method lezo --lezo-layers 0
bad "finetune --method lezo --lezo-layers 5 (over the model's 4)" '--lezo-layers 5 exceeds' \
  finetune --method lezo --lezo-layers 5
bad "finetune --method sparse-mezo (arithmetic restore)" \
  '--method sparse-mezo needs --restore exact' finetune --method sparse-mezo
bad "finetune --method sparse-mezo --sparse-fraction 0" '--sparse-fraction must be above 0' \
  finetune --method sparse-mezo --sparse-fraction 0 --restore exact
bad "finetune --method sparse-mezo --sparse-fraction 1.5" '--sparse-fraction must be above 0' \
  finetune --method sparse-mezo --sparse-fraction 1.5 --restore exact
bad "finetune --method mezo --sparse-fraction 0.5" \
  '--sparse-fraction is read only by --method sparse-mezo' \
  finetune --method mezo --sparse-fraction 0.5
bad "finetune --method hizoo (arithmetic restore)" '--method hizoo needs --restore exact' \
  finetune --method hizoo
bad "finetune --method hizoo --hessian-smoothing 0" '--hessian-smoothing must be above 0' \
  finetune --method hizoo --hessian-smoothing 0 --restore exact
bad "finetune --method mezo --hessian-smoothing 1e-3" \
  '--hessian-smoothing is read only by --method hizoo' \
  finetune --method mezo --hessian-smoothing 1e-3
bad "finetune --method fzoo --directions 1" '--directions must be an integer from 2 to 256' \
  finetune --method fzoo --directions 1
bad "finetune --method fzoo --directions 257" '--directions must be an integer from 2 to 256' \
  finetune --method fzoo --directions 257
bad "finetune --dtype bf16 --restore arithmetic" \
  '--restore arithmetic cannot restore --dtype bf16 weights' \
  finetune --dtype bf16 --restore arithmetic
bad "finetune --dtype f16 --restore arithmetic" \
  '--restore arithmetic cannot restore --dtype f16 weights' \
  finetune --dtype f16 --restore arithmetic
bad "finetune --dtype bf16 --method loho" '--dtype bf16 is not supported by --method loho' \
  finetune --dtype bf16 --method loho
bad "finetune --dtype bf16 --method adam" '--dtype bf16 is not supported by --method adam' \
  finetune --dtype bf16 --method adam
bad "finetune --dtype f64" '--dtype must be f32, bf16 or f16' finetune --dtype f64
bad "finetune --dtype BF16" '--dtype must be f32, bf16 or f16' finetune --dtype BF16
bad "memory --dtype f64" '--dtype must be f32, bf16 or f16' memory --dtype f64
bad "memory --scale 0" '--scale must be an integer from 1 to 1024' memory --scale 0
bad "memory --scale 4294967297" '--scale must be an integer from 1 to 1024' \
  memory --scale 4294967297
bad "memory --scale 2.5" '--scale must be an integer' memory --scale 2.5
# Sizes within their ranges whose model would not fit are refused by name, not by bad_alloc.
bad "pretrain --d-model 65536 --layers 1024" '--d-model, --ffn, --layers.* over the 4.0 GiB' \
  pretrain --d-model 65536 --heads 1 --ffn 65536 --layers 1024
bad "memory --scale 1024" '--scale 1024 of the checkpoint.* over the 4.0 GiB' memory --scale 1024
bad "memory --steps 1e3" '--steps must be an integer' memory --steps 1e3

echo "-- options the chosen method never reads"
for method in mezo adam loho; do
  bad "finetune --method $method --rank -5" '--rank is read only by --method lozo, lozo-m or subzero' \
    finetune --method "$method" --rank -5
done
bad "finetune --method mezo --rank 4" \
  '--rank is read only by --method lozo, lozo-m or subzero, not by mezo' \
  finetune --method mezo --rank 4
bad "finetune --method mezo --interval 10" \
  '--interval is read only by --method lozo, lozo-m or subzero' \
  finetune --method mezo --interval 10
bad "finetune --method subzero --rank 100 (over the model's 16)" '--rank 100 exceeds 16' \
  finetune --method subzero --rank 100
for method in mezo lozo loho adam zo-adam lezo fzoo; do
  bad "finetune --method $method --beta 0.5" '--beta is read only by --method lozo-m or zo-momentum' \
    finetune --method "$method" --beta 0.5
done
# ZO-SignSGD's and FZOO's step rules have no weight decay.
for method in sign-sgd fzoo; do
  bad "finetune --method $method --weight-decay 0.1" \
    "--weight-decay is read only by --method .*, not by $method" \
    finetune --method "$method" --weight-decay 0.1
done
for method in mezo lozo-m zo-momentum fzoo; do
  bad "finetune --method $method --lezo-layers 1" '--lezo-layers is read only by --method lezo' \
    finetune --method "$method" --lezo-layers 1
done
for method in mezo lozo-m zo-adam lezo; do
  bad "finetune --method $method --directions 4" '--directions is read only by --method fzoo' \
    finetune --method "$method" --directions 4
done
for option in fo-lr clip loho-layers loho-budget-mib; do
  for method in mezo lozo lozo-m adam; do
    bad "finetune --method $method --$option 1" "--$option is read only by --method loho" \
      finetune --method "$method" --"$option" 1
  done
done
bad "finetune --method adam --eps 1e-3" \
  '--eps is read only by --method mezo, lozo, lozo-m, loho, zo-momentum, zo-adam, lezo, sign-sgd, fzoo, subzero, sparse-mezo or hizoo, not by adam' \
  finetune --method adam --eps 1e-3
bad "finetune --method adam --restore exact" '--restore is read only by --method mezo' \
  finetune --method adam --restore exact
bad "finetune --generator mt19937" "--generator must be philox4x32-8 or philox4x32-10, got 'mt19937'" \
  finetune --generator mt19937
bad "finetune --method adam --generator philox4x32-8" '--generator is read only by --method mezo' \
  finetune --method adam --generator philox4x32-8
bad "finetune --method loho --loho-budget-mib 10 --loho-layers 1" \
  '--loho-layers is read only when --loho-budget-mib is 0' \
  finetune --method loho --loho-budget-mib 10 --loho-layers 1
bad "finetune --steps 2 --forward-budget 100" '--forward-budget is read only when --steps is 0' \
  finetune --steps 2 --forward-budget 100

if [ "$failures" != 0 ]; then
  echo "finetune_options.sh: $failures FAILED" >&2
  exit 1
fi
echo "finetune_options.sh: passed"
