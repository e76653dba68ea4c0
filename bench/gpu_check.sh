#!/usr/bin/env bash
# GPU check (issue 4): the bge-large architecture at bf16 and fp16, batch 64 x 128 tokens, through the project's
# encoder code. Needs an NVIDIA GPU, torch and transformers; no download. Under 5 minutes.
#   bash bench/gpu_check.sh [OUT_DIR]
# CPU dry run (shapes and code path only): python bench/gpu_check.py --device cpu --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
for dtype in bf16 fp16; do
  python3 bench/gpu_check.py --device cuda --dtype "$dtype" --out "$out/gpu_check_$dtype.json" ${TOKENIZER_DIR:+--tokenizer-dir "$TOKENIZER_DIR"}
done
