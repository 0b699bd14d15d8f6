#!/bin/bash
# Stage 6: fronts on every seed; the recommended recipe through run_toy on seeds 0-4.
cd "$(dirname "$0")/../.."  # the repository root
PY=.venv/bin/python
REC="--main 4096:4096:0.02 --guide 64:512:0.01:4096::same"
$PY benchmarks/toy_recipe/front.py --label rec-seed0 --seed 0 $REC --uncond 32:512:0.01:2048 --uncond 64:512:0.01:4096
$PY benchmarks/toy_recipe/confirm.py --label rec $REC --uncond 64:512:0.01:4096 --w 2.5 --extra-w 1.5,2,2.25,2.75,3,3.5
for s in 1 2 3 4; do
  $PY benchmarks/toy_recipe/front.py --label rec-seed$s --seed $s $REC --uncond 64:512:0.01:4096
done
