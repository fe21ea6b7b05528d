#!/usr/bin/env bash
# Builds and runs zo's main demo: MeZO fitting a least-squares problem from loss values alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
zo_install_missing
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DZO_ENABLE_CUDA=OFF
cmake --build build --target zo-quickstart -j"$(nproc)"
./build/examples/zo-quickstart
