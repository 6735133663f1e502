#!/usr/bin/env bash
# Guided sampling on NEU-Seg 10-shot with the CPU generator (experiments/neu_guided/results):
#   1. the CPU generator (configs/neu64_cpu.yaml) on the 30 training images of configs/neu_train10_seed0.txt;
#   2. experiments/neu_guided/neu_guided.py: unconditional vs into-training (training masks, with and without resampling,
#      model-chosen masks) vs mask -> image; texture, defect area, FID*, mask agreement, seam, time ratio.
# Both steps resume where they stopped; rerun the same line after an interruption.
#
#   experiments/neu_guided/neu_guided.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"
mkdir -p runs/data
[ -e runs/data/neu_seg ] || ln -s ../../../shared/data/neu_seg runs/data/neu_seg
[ -f runs/data/neu_seg/labels.txt ] || { echo "runs/data/neu_seg: NEU-Seg not found (expected ../shared/data/neu_seg)" >&2; exit 2; }
RUN=runs/neu_cpu_gen
# a finished stage is skipped, an interrupted one continues from its newest checkpoint
$DEFECTGEN train --config configs/neu64_cpu.yaml --data runs/data/neu_seg --split train \
  --list configs/neu_train10_seed0.txt --out $RUN --quiet --resume latest
python experiments/neu_guided/neu_guided.py --run $RUN --out experiments/neu_guided/results
