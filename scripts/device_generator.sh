#!/usr/bin/env bash
# One call on a lent GPU machine: pre-train the TinyWorld generator on the 16x16 latent grid.
#
# Why: issue 4's shape bar needs more optimizer steps than this project's 2-core CPU gives in a
# session (docs/generator.md). The recipe is the CPU one (pretrain_generator: render, codec, train);
# only the device, the batch and the step count change. The GPU image has torch, transformers,
# tokenizers, safetensors, peft, accelerate, Pillow and scipy but no diffusers and reaches no
# package registry, so diffusers travels as a wheel:
#
#   .venv/bin/pip download diffusers==0.42.1 importlib_metadata zipp --no-deps -d .wheels   # here, once
#   device run: command "bash scripts/device_generator.sh", carry [".wheels"], timeout_s 600
#
# It writes to $OUT: log.txt (every stage's output), train_log.jsonl (the loss curve) and the
# exported pipeline with its EMA weights and config as pipeline.tar.part-aa, -ab, ... (the device
# returns files of at most 16 MiB).
# Back here:
#
#   mkdir -p runs/gpu_gen && cat FILES_AT/pipeline.tar.part-* | tar x -C runs/gpu_gen
#   .venv/bin/python -m training.eval_generator --model runs/gpu_gen/pipeline-final --num-prompts 120 --camera-prompts 0
#
# Settings (environment): CLIPS rendered clips (24000), MINUTES of training (4.5), BATCH (256),
# LR (1e-3), DEVICE (cuda), WORKERS render processes (all cores), PY (python3), WORK scratch folder.
# SMOKE=1 shrinks everything to a one-minute CPU check of the plumbing (tests/training/test_device_generator.py).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${OUT:?OUT must name the folder the results go to (the device tool sets it)}"
PY=${PY:-python3}
WORK=${WORK:-/tmp/tinyworld_gpu}
CLIPS=${CLIPS:-24000}
MINUTES=${MINUTES:-4.5}
BATCH=${BATCH:-256}
LR=${LR:-1e-3}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-$(nproc)}
EXTRA=()
if [ "${SMOKE:-0}" = 1 ]; then
    CLIPS=24; MINUTES=0.05; BATCH=4; DEVICE=cpu; WORKERS=1
    EXTRA=(--codec-fit-clips 16 --layers 1 --heads 2 --head-dim 16 --ffn-dim 32 --freq-dim 32 --threads 1)
fi
mkdir -p "$OUT" "$WORK"
LOG="$OUT/log.txt"

if [ -d .wheels ] && ls .wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --target "$WORK/site" .wheels/*.whl 2>&1 | tee -a "$LOG"
    export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ "$DEVICE" != cpu ]; then
    # Fail in seconds, not after the render, when the GPU or a package is missing.
    "$PY" -c "import torch, diffusers, transformers; assert torch.cuda.is_available(), 'no CUDA device';
print('torch', torch.__version__, torch.cuda.get_device_name(0), '| diffusers', diffusers.__version__, '| transformers', transformers.__version__)" 2>&1 | tee -a "$LOG"
fi

F=(--data-dir "$WORK/data" --run-dir "$WORK/run" --codec-scale-spatial 4 --z-dim 8 --patch 4 "${EXTRA[@]}")
stage() {
    local t0=$SECONDS
    "$PY" -m training.pretrain_generator "$@" 2>&1 | tee -a "$LOG"
    echo "stage $1: $((SECONDS - t0)) s" | tee -a "$LOG"
}
stage render "${F[@]}" --num-clips "$CLIPS" --render-workers "$WORKERS"
stage codec "${F[@]}"
# The train stage saves pipeline-final (linear codec decoder) when its budget ends; the codec's
# refiner is trained afterwards on the CPU here (pretrain_generator refiner), as for the shipped model.
stage train "${F[@]}" --device "$DEVICE" $([ "$DEVICE" = cpu ] || echo --bf16) --batch-size "$BATCH" --lr "$LR" \
    --minutes "$MINUTES" --checkpoint-minutes 1000

cp "$WORK/run/log.jsonl" "$OUT/train_log.jsonl"
tar cf - -C "$WORK/run" pipeline-final ema-final.safetensors config.json | split -b 15m - "$OUT/pipeline.tar.part-"
ls -l "$OUT" | tee -a "$LOG"
