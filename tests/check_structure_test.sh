#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# scripts/check-structure.sh on copies of include/: the real tree passes, and each kind of fault
# planted in a copy fails it, naming the file: an include back up a layer (an adapter included from
# below among them), an include cycle inside a folder, a header naming another folder's detail::,
# and a function over 60 lines.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fresh() {
  rm -rf "$work/tree"
  mkdir -p "$work/tree/scripts"
  cp -r "$root/include" "$work/tree/include"
  cp "$root/scripts/check-structure.sh" "$work/tree/scripts/"
}
expect() {  # expect pass|fail NEEDLE DESCRIPTION
  local out status=0
  out=$(bash "$work/tree/scripts/check-structure.sh" "$work/tree" 2>&1) || status=$?
  if [ "$1" = pass ] && [ "$status" != 0 ]; then
    echo "FAIL: $3 should pass: $out"; failures=$((failures + 1))
  elif [ "$1" = fail ] && { [ "$status" = 0 ] || ! grep -q -- "$2" <<< "$out"; }; then
    echo "FAIL: $3 should fail naming '$2': $out"; failures=$((failures + 1))
  else
    echo "ok: $3"
  fi
}

fresh
expect pass "" "the repository's headers"

fresh
sed -i 's|#include "zo/core/roles.hpp"|#include "zo/core/roles.hpp"\n#include "zo/optimizers/mezo.hpp"|' \
  "$work/tree/include/zo/core/reports.hpp"
expect fail "zo/core/reports.hpp includes zo/optimizers/mezo.hpp" "an include back up"

# adapters is the top layer: the library below never depends on a framework's adapter.
fresh
mkdir -p "$work/tree/include/zo/adapters"
printf '#pragma once\n#include "zo/io/trajectory.hpp"\n' > "$work/tree/include/zo/adapters/plain.hpp"
sed -i 's|#include "zo/core/binary.hpp"|#include "zo/core/binary.hpp"\n#include "zo/adapters/plain.hpp"|' \
  "$work/tree/include/zo/io/trajectory.hpp"
expect fail "zo/io/trajectory.hpp includes zo/adapters/plain.hpp" "an include of an adapter from below"

fresh
printf '#pragma once\n#include "zo/core/cycle_b.hpp"\n' > "$work/tree/include/zo/core/cycle_a.hpp"
printf '#pragma once\n#include "zo/core/cycle_a.hpp"\n' > "$work/tree/include/zo/core/cycle_b.hpp"
expect fail "include cycle" "an include cycle inside a folder"

fresh
sed -i 's|^namespace zo {|namespace zo {\ninline bool peek() { return detail::masked(pass<float>{}); }|' \
  "$work/tree/include/zo/selectors/all_blocks.hpp"
expect fail "names detail::masked, private to zo/perturbations" "another folder's detail"

fresh
body=$(printf '    engine_.move();\\n%.0s' $(seq 70))
sed -i "s|^  double measure() {\$|  double measure() {\\n$body|" "$work/tree/include/zo/core/probes.hpp"
expect fail "zo/core/probes.hpp:43: a function of" "a function over 60 lines"

[ "$failures" = 0 ] || exit 1
