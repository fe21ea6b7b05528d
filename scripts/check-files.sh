#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks the repository's files, so that a corrupted or oversized file or a dead link cannot land:
#   - no git-tracked text file is over 1 MiB (1048576 bytes);
#   - no page in docs/ is over 64 KiB (65536 bytes);
#   - every relative link in README.md, docs/**/*.md and examples/**/README.md points at a file or
#     folder inside the repository, and an anchor (file.md#section, #section) at a heading of the
#     target page (GitHub's rule: lowercase; characters other than letters, digits, spaces,
#     hyphens and underscores removed; spaces to hyphens; repeated headings get -1, -2, ...) or
#     at an HTML id/name there. Links with a scheme (https:, mailto:, ...) and links in fenced
#     code blocks or inline code are not checked;
#   - every tracked source file (.hpp .cpp .cu .cuh .sh .py .cmake .cmake.in, CMakeLists.txt, and
#     any file whose first line is a #! line) has an SPDX-License-Identifier line in its first
#     five lines;
#   - when CMakeLists.txt declares project(... VERSION X.Y.Z ...), the first released entry of
#     CHANGELOG.md is "## [X.Y.Z]".
# Each problem is printed with the file (and line) it is in; the exit status is 1 if there is any.
#
#   bash scripts/check-files.sh [REPOSITORY-ROOT]     (default: the repository holding this script)
#
# Needs bash, git, awk (mawk is enough), grep and coreutils: nothing a minimal Debian lacks.
set -euo pipefail

if [[ $# -gt 1 ]]; then
  echo "usage: $0 [REPOSITORY-ROOT]" >&2
  exit 2
fi
start=${1:-$(dirname "${BASH_SOURCE[0]}")}
if ! root=$(git -C "$start" rev-parse --show-toplevel); then
  echo "check-files: no git work tree at $start (git's message above says why)" >&2
  exit 2
fi
cd "$root"

max_text_bytes=1048576
max_page_bytes=65536
problems=0
problem() {
  echo "check-files: $*"
  problems=$((problems + 1))
}

# --- Sizes ----------------------------------------------------------------------------------------
tracked=0
while IFS= read -r -d '' f; do
  [[ -f $f && ! -L $f ]] || continue  # deleted in the work tree, a link or a submodule
  tracked=$((tracked + 1))
  size=$(wc -c <"$f")
  size=${size//[[:space:]]/}
  if ((size > max_text_bytes)) && LC_ALL=C grep -q -I -e '' -- "$f"; then
    problem "$f: $size bytes, over the $max_text_bytes-byte limit for a tracked text file"
  fi
  if [[ $f == docs/*.md || $f == docs/*.markdown ]] && ((size > max_page_bytes)); then
    problem "$f: $size bytes, over the $max_page_bytes-byte limit for a docs page"
  fi
done < <(git ls-files -z)

# --- Links ----------------------------------------------------------------------------------------
# The awk program reads the pages line by line (bytes, LC_ALL=C, so mawk and gawk agree), skips
# fenced code blocks and inline code, and checks each link's target; it reads a target page's
# headings the first time an anchor in it is needed.
read -r -d '' links_awk <<'AWK' || true
function shq(s) { gsub(/'/, "'\\''", s); return "'" s "'" }
function test_path(flag, p, key) {
  key = flag SUBSEP p
  if (!(key in tested)) tested[key] = (system("test " flag " " shq("./" p)) == 0)
  return tested[key]
}
function hexval(h, v, k) {
  v = 0
  h = tolower(h)
  for (k = 1; k <= length(h); k++) v = v * 16 + index("0123456789abcdef", substr(h, k, 1)) - 1
  return v
}
function decode(s, out, i, c) {
  out = ""
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    if (c == "%" && substr(s, i + 1, 2) ~ /^[0-9A-Fa-f][0-9A-Fa-f]$/) {
      out = out sprintf("%c", hexval(substr(s, i + 1, 2)))
      i += 2
    } else {
      out = out c
    }
  }
  return out
}
# Fenced code blocks (``` or ~~~, closed by a fence of the same character at least as long; any
# indentation, so fences inside list items count). Returns 1 for a line that is part of a block.
function fenced(ctx, line, t, rest) {
  if (in_fence[ctx]) {
    if (line ~ /^[ \t]*(```+|~~~+)[ \t]*$/) {
      t = line
      gsub(/[ \t]/, "", t)
      if (substr(t, 1, 1) == fence_char[ctx] && length(t) >= fence_len[ctx]) in_fence[ctx] = 0
    }
    return 1
  }
  if (match(line, /^[ \t]*(```+|~~~+)/)) {
    t = substr(line, RSTART, RLENGTH)
    rest = substr(line, RSTART + RLENGTH)
    gsub(/[ \t]/, "", t)
    if (substr(t, 1, 1) == "`" && index(rest, "`") > 0) return 0  # inline code, not a fence
    in_fence[ctx] = 1
    fence_char[ctx] = substr(t, 1, 1)
    fence_len[ctx] = length(t)
    return 1
  }
  return 0
}
# Offset of the first run of exactly n backticks in s, 0 if none.
function backtick_run(s, n, off, i, m) {
  off = 0
  while ((i = index(s, "`")) > 0) {
    m = 0
    while (substr(s, i + m, 1) == "`") m++
    if (m == n) return off + i
    off += i + m - 1
    s = substr(s, i + m)
  }
  return 0
}
# The line with its code spans replaced by a space (an unmatched backtick run stays as text).
function strip_code(s, out, i, n, rest, close_at) {
  out = ""
  while ((i = index(s, "`")) > 0) {
    out = out substr(s, 1, i - 1)
    s = substr(s, i)
    n = 0
    while (substr(s, n + 1, 1) == "`") n++
    rest = substr(s, n + 1)
    close_at = backtick_run(rest, n)
    if (close_at == 0) {
      out = out substr(s, 1, n)
      s = rest
    } else {
      out = out " "
      s = substr(rest, close_at + n)
    }
  }
  return out s
}
# GitHub's heading slug.
function slug(text, s, m, inner) {
  s = text
  while (match(s, /!?\[[^]]*\]\([^)]*\)/)) {  # links and images keep their text
    m = substr(s, RSTART, RLENGTH)
    inner = m
    sub(/^!?\[/, "", inner)
    sub(/\]\(.*$/, "", inner)
    s = substr(s, 1, RSTART - 1) inner substr(s, RSTART + RLENGTH)
  }
  gsub(/<[^>]*>/, "", s)  # HTML tags
  s = tolower(s)
  # Punctuation and symbols outside ASCII (UTF-8): U+00A0-U+00BF but for letters and digits,
  # U+00D7, U+00F7, U+2000-U+206F, U+2190-U+21FF, U+2200-U+22FF. Other non-ASCII bytes are
  # kept as letters.
  gsub(/\302[\240-\251\253-\261\264\266-\270\273\277]|\303\227|\303\267/, "", s)
  gsub(/\342\200[\200-\277]|\342\201[\200-\257]/, "", s)
  gsub(/\342\206[\220-\277]|\342\207[\200-\277]|\342[\210-\213][\200-\277]/, "", s)
  gsub(/[^a-z0-9 _\200-\377-]/, "", s)
  gsub(/ /, "-", s)
  return s
}
function add_anchor(file, s, base, n) {
  base = s
  if ((file SUBSEP s) in anchors) {
    n = uses[file SUBSEP base]
    do {
      n++
      s = base "-" n
    } while ((file SUBSEP s) in anchors)
    uses[file SUBSEP base] = n
  }
  anchors[file SUBSEP s] = 1
  uses[file SUBSEP s] += 0
}
function load_anchors(file, line, prev, prev_para, t, level, ctx, rest) {
  if (file in loaded) return
  loaded[file] = 1
  ctx = "target"
  in_fence[ctx] = 0
  prev_para = 0
  while ((getline line < file) > 0) {
    sub(/\r$/, "", line)
    if (fenced(ctx, line)) {
      prev_para = 0
      continue
    }
    # HTML anchors: id="..." or name="..."
    rest = line
    while (match(rest, /(id|name)="[^"]*"/)) {
      t = substr(rest, RSTART, RLENGTH)
      sub(/^[a-z]*="/, "", t)
      sub(/"$/, "", t)
      anchors[file SUBSEP t] = 1
      rest = substr(rest, RSTART + RLENGTH)
    }
    if (line ~ /^ ? ? ?#+([ \t]|$)/) {  # ATX heading
      t = line
      sub(/^ */, "", t)
      level = t
      sub(/[^#].*$/, "", level)
      if (length(level) <= 6) {
        sub(/^#+[ \t]*/, "", t)
        sub(/[ \t]+#+[ \t]*$/, "", t)
        sub(/^#+[ \t]*$/, "", t)
        sub(/[ \t]+$/, "", t)
        add_anchor(file, slug(t))
        prev_para = 0
        continue
      }
    }
    if (prev_para && line ~ /^ ? ? ?(=+|-+)[ \t]*$/) {  # setext heading: the line above
      t = prev
      sub(/^[ \t]+/, "", t)
      sub(/[ \t]+$/, "", t)
      add_anchor(file, slug(t))
      prev_para = 0
      continue
    }
    prev = line
    prev_para = line !~ /^[ \t]*$/ && line !~ /^ *([-*+]|[0-9]+[.)])([ \t]|$)/ && line !~ /^ *[>|]/
  }
  close(file)
}
# The path of `path` (relative to the page `src`, or to the root when it starts with "/"),
# normalised; ".." when it leads out of the repository.
function resolve(path, src, base, parts, n, i, stack, depth, out) {
  if (substr(path, 1, 1) == "/") {
    base = ""
  } else {
    base = src
    if (!sub(/\/[^\/]*$/, "", base)) base = ""
  }
  n = split(base "/" path, parts, "/")
  depth = 0
  for (i = 1; i <= n; i++) {
    if (parts[i] == "" || parts[i] == ".") continue
    if (parts[i] == "..") {
      if (depth == 0) return ".."
      depth--
    } else {
      stack[++depth] = parts[i]
    }
  }
  out = "."
  for (i = 1; i <= depth; i++) out = (i == 1 ? "" : out "/") stack[i]
  return out
}
function problem(src, lineno, target, what) {
  printf "check-files: %s:%d: link '%s' %s\n", src, lineno, target, what
  problems++
}
function check(target, src, lineno, path, anchor, h, resolved) {
  checked++
  if (target == "") return
  if (target ~ /^[A-Za-z][A-Za-z0-9+.-]*:/ || target ~ /^\/\//) return  # a scheme: not ours
  h = index(target, "#")
  if (h > 0) {
    path = substr(target, 1, h - 1)
    anchor = substr(target, h + 1)
  } else {
    path = target
    anchor = ""
  }
  h = index(path, "?")
  if (h > 0) path = substr(path, 1, h - 1)
  path = decode(path)
  anchor = decode(anchor)
  if (path == "") {
    resolved = src
  } else {
    resolved = resolve(path, src)
    if (resolved == "..") {
      problem(src, lineno, target, "points outside the repository")
      return
    }
    if (!test_path("-e", resolved)) {
      problem(src, lineno, target, "points at no file (" resolved ")")
      return
    }
  }
  if (anchor != "" && tolower(resolved) ~ /\.(md|markdown)$/ && test_path("-f", resolved)) {
    load_anchors(resolved)
    if (!((resolved SUBSEP anchor) in anchors))
      problem(src, lineno, target, "points at #" anchor ", which no heading of " resolved " makes")
  }
}
# The target at the start of s: <...>, or up to a space or a closing parenthesis.
function first_target(s, end) {
  sub(/^[ \t]+/, "", s)
  if (substr(s, 1, 1) == "<") {
    end = index(s, ">")
    return end > 0 ? substr(s, 2, end - 2) : ""
  }
  match(s, /^[^ \t)]*/)
  return substr(s, 1, RLENGTH)
}
FNR == 1 { in_fence["source"] = 0 }
{
  line = $0
  sub(/\r$/, "", line)
  if (fenced("source", line)) next
  line = strip_code(line)
  if (line ~ /^ ? ? ?\[[^]]+\]:/) {  # reference definition
    t = line
    sub(/^ *\[[^]]+\]:/, "", t)
    check(first_target(t), FILENAME, FNR)
    next
  }
  s = line
  while ((i = index(s, "](")) > 0) {  # inline links and images
    s = substr(s, i + 2)
    check(first_target(s), FILENAME, FNR)
  }
  s = line
  while (match(s, /(href|src)="[^"]*"/)) {  # HTML links and images
    t = substr(s, RSTART, RLENGTH)
    sub(/^[a-z]*="/, "", t)
    sub(/"$/, "", t)
    check(t, FILENAME, FNR)
    s = substr(s, RSTART + RLENGTH)
  }
}
END { printf "links checked: %d\n", checked }
AWK

pages=()
while IFS= read -r -d '' f; do
  if [[ -f $f ]]; then
    pages+=("$f")
  fi
done < <(git ls-files -z -- README.md ':(glob)docs/**/*.md' ':(glob)examples/**/README.md')
links=0
if ((${#pages[@]} > 0)); then
  if ! out=$(LC_ALL=C awk "$links_awk" "${pages[@]}"); then
    problem "the link check itself failed (awk: $(awk -W version 2>&1 | head -n 1))"
  fi
  while IFS= read -r line; do
    case $line in
      "links checked: "*) links=${line#links checked: } ;;
      "") ;;
      *)
        echo "$line"
        problems=$((problems + 1))
        ;;
    esac
  done <<<"$out"
fi

# --- Licence identifiers --------------------------------------------------------------------------
sources=()
while IFS= read -r -d '' f; do
  [[ -f $f && ! -L $f ]] || continue
  case $f in
    *.hpp | *.cpp | *.cu | *.cuh | *.sh | *.py | *.cmake | *.cmake.in | CMakeLists.txt | */CMakeLists.txt)
      sources+=("./$f")
      ;;
    *)
      first=""
      IFS= read -r first <"$f" || true
      if [[ $first == '#!'* ]]; then
        sources+=("./$f")
      fi
      ;;
  esac
done < <(git ls-files -z)
if ((${#sources[@]} > 0)); then
  while IFS= read -r f; do
    if [[ -n $f ]]; then
      problem "${f#./}: no SPDX-License-Identifier line in its first five lines"
    fi
  done < <(LC_ALL=C awk '
    FNR <= 5 && /SPDX-License-Identifier: [^ ]/ { found[FILENAME] = 1 }
    FNR > 5 { nextfile }
    END { for (k = 1; k < ARGC; k++) if (!(ARGV[k] in found)) print ARGV[k] }' "${sources[@]}")
fi

# --- Change log -----------------------------------------------------------------------------------
# project(... VERSION X.Y.Z ...) in CMakeLists.txt, comments removed, over as many lines as it takes.
version=""
if [[ -f CMakeLists.txt ]]; then
  version=$(LC_ALL=C awk '
    { sub(/#.*/, ""); text = text " " $0 }
    END {
      if (!match(text, /[^A-Za-z0-9_]project[ \t]*\([^)]*\)/)) exit
      call = substr(text, RSTART, RLENGTH)
      if (match(call, /[ \t(]VERSION[ \t]+[0-9]+(\.[0-9]+)*/)) {
        call = substr(call, RSTART, RLENGTH)
        sub(/^.VERSION[ \t]+/, "", call)
        print call
      }
    }' CMakeLists.txt)
fi
if [[ -n $version ]]; then
  if [[ ! -f CHANGELOG.md ]]; then
    problem "CHANGELOG.md: missing; it needs an entry '## [$version]' for the version in CMakeLists.txt"
  else
    # The first "## [X.Y.Z]" heading (not "## [Unreleased]").
    top=$(LC_ALL=C awk '/^## \[[0-9]/ { v = $2; gsub(/[][]/, "", v); print v; exit }' CHANGELOG.md)
    if [[ $top != "$version" ]]; then
      problem "CHANGELOG.md: its first released entry is '${top:-none}', but CMakeLists.txt" \
        "declares version $version: add '## [$version] - date' above the older entries"
    fi
  fi
fi

if ((problems > 0)); then
  echo "check-files: FAILED in $root"
  exit 1
fi
echo "check-files: ok ($tracked tracked files, ${#pages[@]} pages, $links links," \
  "${#sources[@]} source files${version:+, version $version})"
