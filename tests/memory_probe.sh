#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# memory_probe.sh ZO_FINETUNE
# The demo's memory probe (zo-finetune memory) must measure, not end the demo, where a process
# cannot write /proc/self/clear_refs (containers, chroots, some sandboxes). It runs three times
# on a tiny checkpoint: as it is, with /proc mounted read-only, and with no /proc at all (each in
# a mount namespace of its own, so nothing outside changes; needs root, as CI and the quick
# start run). Every run must print its three phases' peaks and the ratio, and exit 0, or 3
# where the MeZO step's peak is over 10% above inference's (likely on a model this small, whose
# resident size is mostly the program's).
set -euo pipefail
zo=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$zo" pretrain --out "$work/pre" --steps 2 --d-model 16 --heads 2 --layers 2 --ffn 32 \
  --batch 4 --threads 1 > /dev/null
probe=("$zo" memory --checkpoint "$work/pre" --batch 4 --steps 1 --threads 1)

# Runs the probe through its arguments (a command prefix), output to $work/$1.txt.
measure() {
  local name=$1
  shift
  local status=0
  "$@" "${probe[@]}" > "$work/$name.txt" || status=$?
  if [ "$status" != 0 ] && [ "$status" != 3 ]; then
    echo "FAILED: the probe ($name) exited with status $status:" >&2
    cat "$work/$name.txt" >&2
    exit 1
  fi
  check "$name" "$work/$name.txt"
}

check() {
  local name=$1 output=$2
  local peaks
  peaks=$(grep -cE '^  .* peak RSS +[0-9]+\.[0-9] MiB' "$output" || true)
  if [ "$peaks" != 3 ] || ! grep -qE '^MeZO step / inference peak: [0-9.]+ ' "$output"; then
    echo "FAILED: the probe $name printed no measurement:" >&2
    cat "$output" >&2
    exit 1
  fi
  echo "probe $name: $(grep 'inference peak' "$output")"
}

measure plain env

# Propagation stays as it is (util-linux would make / private, which fails in a chroot, whose /
# is no mount point); /proc alone is made private, so that nothing done to it here reaches the
# /proc outside.
in_namespace=(unshare --mount --propagation unchanged bash -c)
"${in_namespace[@]}" 'mount --make-private /proc' 2> /dev/null ||
  { echo "FAILED: cannot make a mount namespace with a private /proc (run as root)" >&2; exit 1; }
# shellcheck disable=SC2016 # $@ expands in the namespace's shell
read_only='mount --make-private /proc && mount -o remount,bind,ro /proc &&
           ! (echo 5 > /proc/self/clear_refs) 2> /dev/null && exec "$@"'
measure read-only-proc "${in_namespace[@]}" "$read_only" probe
# shellcheck disable=SC2016
no_proc='mount --make-private /proc && umount -l /proc && [ ! -e /proc/self/status ] && exec "$@"'
measure no-proc "${in_namespace[@]}" "$no_proc" probe
# The /proc outside is untouched.
[ -e /proc/self/status ] || { echo "FAILED: /proc outside the namespace was changed" >&2; exit 1; }
echo "memory_probe.sh: passed"
