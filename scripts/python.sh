#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the Python package zo_torch (python/) against Debian's python3-torch and installs it where
# that python3 imports it from (its first site directory, /usr/local/lib/python3.X/dist-packages on
# Debian 12), or into DIR (then put DIR on PYTHONPATH). Installs missing Debian packages first, so
# run it as root on a fresh machine:
#   bash scripts/python.sh [DIR]          ZO_JOBS=N sets the build's parallel jobs (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
zo_install_missing "${zo_torch_packages[@]}"

args=(-DCMAKE_BUILD_TYPE=Release -DZO_ENABLE_CUDA=OFF -DZO_BUILD_TESTS=OFF
      -DZO_BUILD_BENCHMARKS=OFF -DZO_BUILD_EXAMPLES=OFF -DZO_BUILD_PYTHON=ON)
if [ $# -ge 1 ]; then
  args+=("-DZO_PYTHON_INSTALL_DIR=$(realpath -m "$1")")
else
  args+=(-UZO_PYTHON_INSTALL_DIR)
fi
cmake -S . -B build-python "${args[@]}"
cmake --build build-python --target _zo_torch -j"${ZO_JOBS:-$(nproc)}"
cmake --install build-python --component python

python=$(sed -n 's/^Python3_EXECUTABLE:FILEPATH=//p' build-python/CMakeCache.txt)
dir=$(sed -n 's/^ZO_PYTHON_INSTALL_DIR:PATH=//p' build-python/CMakeCache.txt)
PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}" "$python" -c \
  'import zo_torch; print("zo_torch installed:", zo_torch.__file__)'
