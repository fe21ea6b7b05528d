# SPDX-License-Identifier: Apache-2.0
# Sourced by the shell tests after they have read their arguments: a scratch directory, removed
# at exit, becomes the current directory, and fail counts what failed (each test exits with
# failures > 0 at its end).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

failures=0
fail() {
  echo "FAILED: $*" >&2
  failures=$((failures + 1))
}
