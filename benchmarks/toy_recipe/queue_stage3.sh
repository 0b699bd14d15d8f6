#!/bin/bash
# Stage 3: the paper-length main (4096 x 4096, lr 2e-2) on seeds 3-4 and the same-seed guide's length.
cd "$(dirname "$0")/../.."  # the repository root
PY=.venv/bin/python
W=1.5,2,2.5,3,3.5,4
$PY benchmarks/toy_recipe/screen.py --main 4096:4096:0.02 --seeds 3-4 --guides "64:512:0.01:4096::same,32:1024:0.01,48:512:0.01,64:384:0.01:4096::same,64:768:0.01:4096::same" --weights $W
$PY benchmarks/toy_recipe/screen.py --main 4096:4096:0.02 --seeds 0-2 --guides "64:512:0.01:4096::same,32:1024:0.01,48:512:0.01,64:384:0.01:4096::same,64:768:0.01:4096::same" --weights $W
$PY benchmarks/toy_recipe/screen.py --main 4096:2048:0.02 --seeds 0-2 --guides "64:512:0.01:2048::same,64:256:0.01:2048::same,32:1024:0.01" --weights $W
