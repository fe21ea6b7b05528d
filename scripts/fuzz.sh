#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds every libFuzzer target (fuzz/fuzz_<name>.cpp) with Clang in build-fuzz and runs each for
# ZO_FUZZ_SECONDS seconds (default 60) on a copy of its seed corpus fuzz/corpus/<name>/, with
# fuzz/<name>.dict when present. The repository's corpus is never modified. Fails on the first
# crash, leak, timeout or sanitizer report; the input that caused it is kept as
# build-fuzz/artifacts/<name>/crash-* (add it to the corpus or a test once fixed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# libclang_rt.fuzzer-x86_64.a, the libFuzzer runtime, comes with libclang-rt-14-dev on Debian 12.
zo_install_missing clang libclang-rt-14-dev
seconds=${ZO_FUZZ_SECONDS:-60}
jobs=$(nproc)

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DZO_BUILD_FUZZERS=ON \
  -DZO_BUILD_TESTS=OFF -DZO_BUILD_BENCHMARKS=OFF -DZO_BUILD_EXAMPLES=OFF -DZO_ENABLE_CUDA=OFF \
  -DZO_USE_TORCH=OFF
cmake --build build-fuzz -j"$jobs"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for source in fuzz/fuzz_*.cpp; do
  target=$(basename "$source" .cpp)
  name=${target#fuzz_}
  corpus="$work/$name"
  mkdir -p "$corpus" "build-fuzz/artifacts/$name"
  if [ -d "fuzz/corpus/$name" ]; then cp -R "fuzz/corpus/$name/." "$corpus/"; fi
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
           -artifact_prefix="build-fuzz/artifacts/$name/")
  if [ -f "fuzz/$name.dict" ]; then options+=(-dict="fuzz/$name.dict"); fi
  echo "zo: fuzzing $target for ${seconds}s"
  "build-fuzz/fuzz/$target" "${options[@]}" "$corpus"
done
