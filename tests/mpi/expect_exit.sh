#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# expect_exit.sh success|failure BOUND_SECONDS COMMAND...
# Runs COMMAND under `timeout BOUND_SECONDS` and checks how it ended: "failure" passes when it
# exits non-zero before the bound (being stopped by the timeout does not count), "success" when
# it exits 0 before the bound.
set -u
expect=$1 bound=$2
shift 2
start=$(date +%s%N)
timeout --kill-after=5 "$bound" "$@"
rc=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "expect_exit: exit status $rc after ${elapsed_ms} ms (bound ${bound} s, expected ${expect})"
# 124: timeout stopped it; a kill after the grace period shows as 137, which is also how mpiexec
# reports a rank killed by SIGKILL, so the elapsed time tells the two apart.
if [ "$rc" -eq 124 ] || [ "$elapsed_ms" -ge $((bound * 1000)) ]; then
  echo "expect_exit: FAILED: the job was still running after ${bound} s" >&2
  exit 1
fi
if [ "$expect" = failure ] && [ "$rc" -eq 0 ]; then
  echo "expect_exit: FAILED: the job succeeded although a rank died" >&2
  exit 1
fi
if [ "$expect" = success ] && [ "$rc" -ne 0 ]; then
  echo "expect_exit: FAILED: the job failed although no rank did" >&2
  exit 1
fi
echo "expect_exit: passed"
