#!/usr/bin/env bash
# Training throughput and MFU on one GPU (H100/H200): hydrabert's MultiTaskTrainer vs the plain HF
# Trainer, a BERT-base-sized random encoder, bf16, SDPA, fused AdamW; eager, then torch.compile.
# Each run prints one JSON line, saved under benchmarks/results/ (plot_speed.py reads them).
#
#   bash benchmarks/gpu.sh                 # from the repository root or anywhere
#   bash benchmarks/gpu.sh --steps 200     # extra flags go to both runs
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
python - <<'PY' >&2
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
assert torch.cuda.is_available(), "no CUDA device visible"
print("device", torch.cuda.get_device_name())
PY

python benchmarks/bench_gpu.py "$@" | tee benchmarks/results/speed_gpu.json
# Compiled: padded to multiples of 16 on both sides, so torch.compile sees a few shapes, not one per length.
python benchmarks/bench_gpu.py --compile --pad-to-multiple-of 16 "$@" | tee benchmarks/results/speed_gpu_compile.json
