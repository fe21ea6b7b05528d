#!/usr/bin/env bash
# Installs what is missing, builds everything (CUDA targets too when nvcc is present) and runs
# the whole test suite through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
zo_install_missing
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(zo_cuda_flags)
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure -j"$(nproc)"
