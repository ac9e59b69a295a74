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
# FlashAttention-2, where the package is installed (padded batches: hydrabert pools each sentence from its own
# tokens, so padding-free packed batches, DataCollatorWithFlattening, do not apply to it).
if python -c "import flash_attn" 2>/dev/null; then
  python benchmarks/bench_gpu.py --attention flash_attention_2 "$@" | tee benchmarks/results/speed_gpu_flash.json
else
  echo '{"benchmark": "gpu", "attention": "flash_attention_2", "status": "skipped: flash-attn is not installed"}'
fi

# The engines for models that outgrow one GPU (docs/scaling.md), each a short run_mtl.py run of the demo config:
# DDP, FSDP (configs/engines/accelerate_fsdp.yaml) and DeepSpeed ZeRO-2 (configs/engines/deepspeed_zero2.json). One process per
# GPU (NCCL refuses two processes on one device). Each prints one JSON line: samples/s, and whether the saved
# folder loads with AutoModel.from_pretrained(..., trust_remote_code=True) where hydrabert is not importable.
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l); GPUS=$(( GPUS > 0 ? GPUS : 1 ))
ENGINE_STEPS=${ENGINE_STEPS:-100}
engine_run() {  # name, then accelerate launch options, then run_mtl.py options
  local name=$1; shift
  local out=outputs/gpu_engines/$name
  local launch=() options=()
  while [[ $# -gt 0 && $1 != -- ]]; do launch+=("$1"); shift; done
  shift || true
  options=("$@")
  if accelerate launch --num_processes "$GPUS" "${launch[@]}" run_mtl.py configs/demo.json \
      --max_steps "$ENGINE_STEPS" --bf16 true --output_dir "$out" --overwrite_output_dir true \
      --eval_strategy no --save_strategy no --do_eval false --do_predict false --disable_tqdm true \
      "${options[@]}" > "$out.log" 2>&1; then status=ok; else status=failed; fi
  python - "$name" "$out" "$status" <<'PY' | tee "benchmarks/results/engine_$name.json"
import json, os, subprocess, sys
name, out, status = sys.argv[1:4]
result = {"benchmark": "engine", "engine": name, "status": status}
if status == "ok":
    metrics = json.load(open(os.path.join(out, "all_results.json")))
    result["train_samples_per_second"] = metrics.get("train_samples_per_second")
    check = ("import sys; sys.modules['hydrabert'] = None; from transformers import AutoModel; "
             f"m = AutoModel.from_pretrained({out!r}, trust_remote_code=True); print(sorted(m.config.tasks))")
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    result["saved_model_loads"] = loaded.returncode == 0
    result["tasks"] = loaded.stdout.strip()
else:
    result["log_tail"] = open(out + ".log").read()[-1500:]
print(json.dumps(result))
PY
}
mkdir -p outputs/gpu_engines
if (( GPUS > 1 )); then engine_run ddp --multi_gpu --; else engine_run ddp --; fi
engine_run fsdp --config_file configs/engines/accelerate_fsdp.yaml --
if python -c "import deepspeed" 2>/dev/null; then
  engine_run deepspeed_zero2 -- --deepspeed configs/engines/deepspeed_zero2.json  # the Trainer sets DeepSpeed up
else
  echo '{"benchmark": "engine", "engine": "deepspeed_zero2", "status": "skipped: deepspeed is not installed"}' \
    | tee benchmarks/results/engine_deepspeed_zero2.json
fi
