#!/bin/bash
# Stage 5: does the guide's shared seed matter; its EMA; reproducibility; figures.
cd "$(dirname "$0")/../.."  # the repository root
PY=.venv/bin/python
W=1.5,2,2.5,3,3.5,4
$PY benchmarks/toy_recipe/screen.py --main 4096:4096:0.02 --seeds 0-4 --guides "64:512:0.01:4096,64:512:0.05:4096::same,64:512:0.1:4096::same" --weights $W
$PY benchmarks/toy_recipe/repro.py guide
$PY benchmarks/toy_recipe/figure.py --label rec-w2.5 --main 4096:4096:0.02 --guide 64:512:0.01:4096::same --uncond 32:512:0.01:2048 --w 2.5
$PY benchmarks/toy_recipe/figure.py --label rec-w3 --main 4096:4096:0.02 --guide 64:512:0.01:4096::same --uncond 32:512:0.01:2048 --w 3
$PY benchmarks/toy_recipe/figure.py --label current-default --main 2048:2048:0.02 --guide 32:512:0.01:2048 --uncond 32:512:0.01:2048 --w 3
