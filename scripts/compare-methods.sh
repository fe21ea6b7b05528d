#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Every method zo-finetune runs (docs/variants.md), fine-tuned from the demo's pretrained model at
# one budget of forward passes: one table (results.md) and one plot (comparison.png) in
# ZO_COMPARE_OUT (default compare-output/). The pretrained model is the demo's (demo-output/,
# made first when missing); ZO_DEMO_BUDGET and ZO_DEMO_THREADS work as for the demo. About 6 min
# on 2 cores with the build and the pretraining, 4 without.
set -euo pipefail
cd "$(dirname "$0")/.."
methods=(mezo lozo lozo-m loho zo-momentum zo-adam lezo sign-sgd fzoo subzero sparse-mezo hizoo
         adam)
export ZO_DEMO_METHODS="${methods[*]}"
export ZO_DEMO_BF16_METHODS=""  # the fp32 comparison only
export ZO_DEMO_PRETRAINED=${ZO_DEMO_PRETRAINED:-${ZO_DEMO_OUT:-demo-output}/pretrained}
export ZO_DEMO_OUT=${ZO_COMPARE_OUT:-compare-output}
exec bash scripts/demo.sh
