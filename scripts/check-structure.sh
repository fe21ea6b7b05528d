#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks the library's structure (docs/architecture.md, "Layers"):
#  1. every include in include/zo/ points down or sideways in the layer order below, never up;
#  2. the file-level include graph has no cycle;
#  3. a header names only its own folder's detail:: (another folder's helpers are private to it);
#  4. no function is longer than 60 lines (a definition whose signature starts at indentation 0,
#     2 or 4, as clang-format lays out free functions and class members, through its closing brace).
# Usage: scripts/check-structure.sh [REPOSITORY]   (exit status 1 and one line per finding)
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root/include"

# The layers, lowest first: a header may include its own layer and those before it.
layers=(config.hpp random core backends stores perturbations estimators step_rules selectors
        optimizers io distributed adapters zo.hpp)
rank_of() {
  local part=${1#zo/}
  part=${part%%/*}
  for i in "${!layers[@]}"; do
    [ "${layers[$i]}" = "$part" ] && { echo "$i"; return; }
  done
  echo unknown
}

status=0
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT

while IFS= read -r file; do
  from=$(rank_of "$file")
  if [ "$from" = unknown ]; then
    echo "$file: not in any layer of scripts/check-structure.sh"
    status=1
    continue
  fi
  while IFS= read -r target; do
    echo "$file $target" >> "$edges"
    to=$(rank_of "$target")
    if [ "$to" = unknown ] || [ "$to" -gt "$from" ]; then
      echo "$file includes $target: an arrow back up (layer ${layers[$from]} below ${layers[$to]:-?})"
      status=1
    fi
  done < <(sed -n 's/^#include [<"]\(zo\/[^>"]*\)[>"].*/\1/p' "$file")
done < <(find zo -name '*.hpp' | sort)

if ! tsort "$edges" > /dev/null 2> "$edges.err"; then
  echo "include cycle: $(tr '\n' ' ' < "$edges.err")"
  status=1
fi
rm -f "$edges.err"

# Names declared inside a detail namespace, per folder: the first identifier of a declaration at
# column 0 between "namespace ...detail {" and its "}  // namespace ...detail".
declared=$(mktemp)
trap 'rm -f "$edges" "$declared"' EXIT
while IFS= read -r file; do
  folder=$(dirname "$file")
  awk -v folder="$folder" '
    /^namespace [a-z:]*detail \{/ { inside = 1; next }
    /^}  \/\/ namespace [a-z:]*detail/ { inside = 0; next }
    !inside || /^(\/\/|#|template|}|$| )/ { next }
    {
      line = $0
      sub(/ : .*/, "", line)
      sub(/[({=;[].*/, "", line)
      sub(/[ \t]+$/, "", line)
      n = split(line, words, /[ *&]+/)
      if (n > 0 && words[n] ~ /^[A-Za-z_][A-Za-z0-9_]*$/) print folder, words[n]
    }' "$file"
done < <(find zo -name '*.hpp' | sort) | sort -u > "$declared"

while IFS= read -r file; do
  folder=$(dirname "$file")
  while IFS= read -r name; do
    if ! grep -qx "$folder $name" "$declared"; then
      owner=$(awk -v n="$name" '$2 == n { print $1 }' "$declared" | head -1)
      echo "$file names detail::$name, private to ${owner:-no folder}"
      status=1
    fi
  done < <(sed 's|//.*||; /^namespace /d' "$file" | grep -o 'detail::[A-Za-z_][A-Za-z0-9_]*' | sed 's/detail:://' | sort -u)
done < <(find zo -name '*.hpp' | sort)

long=$(find zo -name '*.hpp' | sort | xargs awk -v limit=60 '
  function indent(s) { match(s, /^ */); return RLENGTH }
  FNR == 1 { open = ""; pending = 0 }
  {
    if (open != "" && $0 ~ "^" open "}") {
      if (FNR - start + 1 > limit) printf "%s:%d: a function of %d lines\n", FILENAME, start, FNR - start + 1
      open = ""; pending = 0
      next
    }
    if (open != "") next
    if (!pending && indent($0) <= 4 && $0 ~ /\(/ && $0 !~ /;$/ && $0 !~ /= *\[/ &&
        $0 !~ /^ *((if|for|while|switch|do|try|catch|return|static_assert)[ ({]|else|}|\/\/|#)/) {
      pending = 1; pstart = FNR; pind = indent($0)
    }
    if (pending && $0 ~ /\)( const)?( noexcept)?( override)?( -> [^{]*)?( requires .*)? \{$/) {
      open = substr($0, 1, pind); start = pstart; pending = 0
    } else if (pending && ($0 ~ /;$/ || $0 ~ /\{$/ || $0 ~ /^ *$/)) {
      pending = 0
    }
  }')
if [ -n "$long" ]; then
  echo "$long"
  status=1
fi

if [ "$status" = 0 ]; then
  echo "check-structure: $(find zo -name '*.hpp' | wc -l) headers, $(wc -l < "$edges") includes," \
       "no arrow back up, no cycle, no folder's detail named outside it, no function over 60 lines"
fi
exit "$status"
