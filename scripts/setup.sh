#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what building zo needs on Debian 12 (compilers included), and only what is missing.
# Sourced by demo.sh and test.sh.
set -euo pipefail

zo_packages=(g++ cmake make libeigen3-dev libboost-test-dev librandom123-dev libbenchmark-dev
             libomp-dev libthrust-dev nlohmann-json3-dev libopenmpi-dev openmpi-bin)
# The libtorch adapter's tests and the Python package (python/), which test.sh and python.sh ask
# for: zo_install_missing "${zo_torch_packages[@]}". Debian's libtorch-dev and python3-torch are
# one build, so the package's extension links the libtorch the C++ tests use.
zo_torch_packages=(libtorch-dev python3-torch pybind11-dev python3-dev python3-pytest)

zo_install_missing() {
  local missing=()
  local p
  for p in "${zo_packages[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "zo: missing packages: ${missing[*]}; run as root or install them first" >&2
    exit 1
  fi
  echo "zo: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# nvcc builds the CUDA targets when the CUDA toolkit is present; nothing needs it.
zo_cuda_flags() {
  local nvcc
  nvcc=$(command -v nvcc || true)
  [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
  if [ -n "$nvcc" ]; then echo "-DCMAKE_CUDA_COMPILER=$nvcc"; else echo "-DZO_ENABLE_CUDA=OFF"; fi
}
