#!/bin/bash
# Stage 4: the fronts of the recommended pair (model seed 0); run after stage 3.
cd "$(dirname "$0")/../.."  # the repository root
PY=.venv/bin/python
$PY benchmarks/toy_recipe/front.py --label rec-seed0 --seed 0 --main 4096:4096:0.02 --guide 64:512:0.01:4096::same \
    --uncond 32:512:0.01:2048 --uncond 64:512:0.01:4096
