#!/usr/bin/env bash
# One prepared GPU check: on a machine with a CUDA GPU (after the README's setup), measure the
# engine's tokens/s and MFU for the MLE step (vs plain PyTorch + transformers) and for the unified
# step on annotated data, then run the gpu-125m benchmark preset (resumable: rerun to continue).
#
#   bash scripts/gpu_check.sh [OUT]            # OUT defaults to runs/gpu-check
#   METHODS=mle,conditional,tags,ufarsap SEEDS=1 bash scripts/gpu_check.sh   # a shorter table
#   SKIP_BENCH=1 bash scripts/gpu_check.sh     # the throughput check only (~2 min)
set -euo pipefail
OUT=${1:-runs/gpu-check}
mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script needs a GPU')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
echo "== MLE step: engine vs plain PyTorch + transformers (tokens/s, MFU)"
python benchmarks/trainer_bench.py --device cuda --preset 125m --steps 20 --global-batch 32 --micro-batch 8 \
  | tee "$OUT/trainer_bench.txt"
echo "== unified step on annotated data vs MLE step"
python benchmarks/objective_bench.py --device cuda --preset 125m --global-batch 32 --micro-batch 8 \
  | tee "$OUT/objective_bench.txt"
if [[ -z "${SKIP_BENCH:-}" ]]; then
  echo "== benchmark preset gpu-125m"
  ufarsap-engine bench --preset gpu-125m --out "$OUT/bench" ${METHODS:+--methods "$METHODS"} ${SEEDS:+--seeds "$SEEDS"}
fi
echo "figures in $OUT"
