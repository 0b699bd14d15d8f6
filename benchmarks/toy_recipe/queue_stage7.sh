#!/bin/bash
# Stage 7: the knot measure (share of samples in dense grid cells) on the saved figure runs.
cd "$(dirname "$0")/../.."  # the repository root
.venv/bin/python benchmarks/toy_recipe/knots.py out/research/figure/current-default out/research/figure/rec-w2.5 out/research/figure/rec-w3
