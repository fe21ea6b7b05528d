#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Self-test of scripts/check-files.sh: builds throwaway git repositories in a temporary folder,
# each the clean fixture below with one defect, and checks that the script passes the clean ones
# and fails each defective one with a message naming the offending file or link.
set -euo pipefail

check="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/scripts/check-files.sh"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/check-files-test.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
failures=0
cases=0

# A clean repository: links of every kind the check must accept.
fixture() {
  repo="$scratch/repo$((++cases))"
  mkdir -p "$repo/docs" "$repo/examples/demo" "$repo/src" "$repo/data"
  cat >"$repo/README.md" <<'EOF'
# Demo project

See [the guide](docs/guide.md), its [second part](docs/guide.md#part-two-details), the
[source](src/lib.hpp), the [examples folder](examples/), [a demo](examples/demo/README.md#running-it),
[a spaced name](<docs/guide.md#zo-replay>) and [an escaped one](docs/guide%2Emd#notes).
An external [site](https://example.com/missing.md), [mail](mailto:someone@example.com) and an
<https://example.com/nowhere.md> autolink are not checked.
Inline code is not a link: `[x](missing.md)`, nor ``[y](missing.md#nowhere)``.
[Top](#demo-project), ![a picture](docs/picture.txt "title"),
<a href="docs/guide.md#notes-1">HTML</a>, [a reference][ref].

```md
[broken](nowhere.md) in a fenced block
```

~~~
[broken](nowhere.md#nothing)
~~~

[ref]: docs/guide.md#a--b
EOF
  cat >"$repo/docs/guide.md" <<'EOF'
# Guide

Back to the [README](../README.md#demo-project), [this page](#zo-replay),
[the setext heading](#setext-heading), [the second notes](#notes-1), [an anchor](#custom-id).

## Part two: details

### `zo-replay`

## Notes

## Notes

## A — B

<a id="custom-id"></a>

Setext heading
--------------

```cpp
# not a heading
```
EOF
  printf 'a picture\n' >"$repo/docs/picture.txt"
  cat >"$repo/examples/demo/README.md" <<'EOF'
# Demo

## Running it

Read the [guide](../../docs/guide.md#notes) and the [top README](/README.md#demo-project).
EOF
  printf '// SPDX-License-Identifier: Apache-2.0\nint f();\n' >"$repo/src/lib.hpp"
  mkdir -p "$repo/tools"
  printf '#!/usr/bin/env bash\n# SPDX-License-Identifier: Apache-2.0\necho run\n' >"$repo/tools/run"
  cat >"$repo/CMakeLists.txt" <<'EOF'
# SPDX-License-Identifier: Apache-2.0
cmake_minimum_required(VERSION 3.25)
project(demo  # not VERSION 9.9.9: a comment
        VERSION 1.2.3
        LANGUAGES CXX)
EOF
  cat >"$repo/CHANGELOG.md" <<'EOF'
# Changelog

## [Unreleased]

## [1.2.3] - 2026-01-02

## [1.2.0] - 2025-12-01
EOF
  head -c 1153434 /dev/zero >"$repo/data/weights.bin"  # 1.1 MiB, binary: allowed
  git -C "$repo" -c init.defaultBranch=main init -q
  git -C "$repo" add -A
}

# expect pass|fail NAME [TEXT...]: runs the check on $repo; a failure must exit 1 and print
# every TEXT.
expect() {
  local want=$1 name=$2 out rc=0 text
  shift 2
  out=$(bash "$check" "$repo" 2>&1) || rc=$?
  if [[ $want == pass && $rc -ne 0 ]]; then
    echo "FAIL: $name: expected a pass, the check exited with $rc:"
    echo "$out"
    failures=$((failures + 1))
    return
  fi
  if [[ $want == fail ]]; then
    if [[ $rc -ne 1 ]]; then
      echo "FAIL: $name: expected exit status 1, got $rc:"
      echo "$out"
      failures=$((failures + 1))
      return
    fi
    for text in "$@"; do
      if ! grep -qF -- "$text" <<<"$out"; then
        echo "FAIL: $name: the output does not name '$text':"
        echo "$out"
        failures=$((failures + 1))
        return
      fi
    done
  fi
  echo "ok: $name"
}

# A text file of `bytes` bytes (a multiple of 64), in lines of 64 bytes.
text_file() {
  local path=$1 bytes=$2
  awk -v n="$bytes" 'BEGIN { line = "Plain text in lines of sixty-four bytes, with the newline: ...."
                              for (k = 0; k * 64 < n; k++) print line }' >"$path"
}

# The number of the last line of a file.
last_line() { awk 'END { print NR }' "$1"; }

fixture
expect pass "(a) a clean repository"

fixture
text_file "$repo/notes.txt" 1153408
git -C "$repo" add notes.txt
expect fail "(b) a tracked text file of 1.1 MiB" "notes.txt: 1153408 bytes" "1048576"

fixture
text_file "$repo/notes.txt" 1153408
expect pass "(b') the same file untracked"

fixture
printf '\nA [lost page](missing.md).\n' >>"$repo/docs/guide.md"
git -C "$repo" add -A
expect fail "(c) a broken file link in docs/" \
  "docs/guide.md:$(last_line "$repo/docs/guide.md"): link 'missing.md'" "docs/missing.md"

fixture
printf '\nThe [guide](../docs/guide.md).\n' >>"$repo/examples/demo/README.md"
git -C "$repo" add -A
expect fail "(c') a broken file link in examples/**/README.md" \
  "examples/demo/README.md:$(last_line "$repo/examples/demo/README.md"): link '../docs/guide.md'"

fixture
printf '\nSee [part three](docs/guide.md#part-three).\n' >>"$repo/README.md"
git -C "$repo" add -A
expect fail "(d) a broken anchor" \
  "README.md:$(last_line "$repo/README.md"): link 'docs/guide.md#part-three'" \
  "no heading of docs/guide.md"

fixture
printf '\nThe [third notes](#notes-2) and [Notes](#Notes).\n' >>"$repo/docs/guide.md"
git -C "$repo" add -A
expect fail "(d') anchors to a third repeat and in capitals" "link '#notes-2'" "link '#Notes'"

fixture
text_file "$repo/docs/big.md" 71680
git -C "$repo" add -A
expect fail "(e) a docs page of 70 KiB" "docs/big.md: 71680 bytes" "65536"

fixture
printf '\nThe [notes](../../outside/notes.md).\n' >>"$repo/docs/guide.md"
git -C "$repo" add -A
expect fail "(f) a link out of the repository" \
  "docs/guide.md:$(last_line "$repo/docs/guide.md"): link '../../outside/notes.md'" \
  "outside the repository"

fixture
printf 'int g();\n' >"$repo/src/new.cpp"
git -C "$repo" add -A
expect fail "(g) a source file without an SPDX line" "src/new.cpp: no SPDX-License-Identifier"

fixture
printf '#!/bin/sh\necho run\n' >"$repo/tools/run"
git -C "$repo" add -A
expect fail "(g') a script without an extension and without an SPDX line" \
  "tools/run: no SPDX-License-Identifier"

fixture
{
  printf '// A header whose licence line comes too late.\n\n\n\n\n'
  printf '// SPDX-License-Identifier: Apache-2.0\n'
} >"$repo/src/lib.hpp"
git -C "$repo" add -A
expect fail "(g'') an SPDX line after the fifth line" "src/lib.hpp: no SPDX-License-Identifier"

fixture
sed -i 's/VERSION 1\.2\.3/VERSION 1.3.0/' "$repo/CMakeLists.txt"
git -C "$repo" add -A
expect fail "(h) a version without its change log entry" \
  "CHANGELOG.md: its first released entry is '1.2.3'" "declares version 1.3.0"

fixture
git -C "$repo" rm -q -f CHANGELOG.md
expect fail "(h') no change log" "CHANGELOG.md: missing"

if ((failures > 0)); then
  echo "check_files_test: $failures of the cases failed"
  exit 1
fi
echo "check_files_test: all cases passed"
