#!/usr/bin/env bash
# The peer bench/serving_bench.py measures the service against, installed in a venv of its own (default
# .bench/infinity-venv, ignored by git): Infinity (infinity-emb) with its torch and optimum (onnxruntime) engines, on
# the same CPU torch build as this project. `make bench-serving` runs it once; benchmarks never install anything.
#   bash bench/setup_peers.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.bench/infinity-venv}
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet torch==2.13.0   # CPU build, pinned as `make setup` pins it
"$venv/bin/pip" install --quiet "infinity-emb[server,torch,optimum]"
"$venv/bin/python" -c "import optimum, infinity_emb"
echo "peers ready: $venv/bin/infinity_emb"
