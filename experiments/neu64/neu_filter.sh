#!/usr/bin/env bash
# Sample filtering on NEU-Seg: keep the generated pairs whose mask the real-data segmenter agrees with
# (per-pair defect IoU >= MIN_AGREEMENT, fixed up front), then score the kept pairs with the protocol
# of `defectgen compare` (DeepLabV3+-R18, ratio 1, 3 seeds, paired gain over the real-only baseline).
#
#   experiments/neu64/neu_filter.sh SAMPLES_DIR BASELINE_EVAL_JSON OUT_DIR [MIN_AGREEMENT]
#   e.g. experiments/neu64/neu_filter.sh runs/compare_neu64/rows/two-stage-u0.40/samples \
#            runs/compare_neu64/rows/real-only/eval.json runs/filter/gpu-u0.40
#
# The segmenter is SegConfig's default, the one `compare` uses for mask agreement (same seed).
# Writes OUT_DIR/samples (the kept pairs, manifest with every pair's score) and OUT_DIR/eval.
# On 2 CPU cores: about 3 min for the segmenter and 8 min for the three evaluation seeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
SAMPLES="$1"; BASELINE="$2"; OUT="$3"; MIN="${4:-0.5}"
DATA="${DATA:-runs/data/neu_seg}"
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"

if [ ! -f "$OUT/samples/manifest.json" ]; then
  $DEFECTGEN filter --real "$DATA" --synthetic "$SAMPLES" --out "$OUT/samples" --min-agreement "$MIN"
fi
if [ ! -f "$OUT/eval/results.json" ]; then
  $DEFECTGEN evaluate --config configs/seg_neu64.yaml --data "$DATA" --split train --list configs/neu_train10_seed0.txt \
    --synthetic "$OUT/samples" --ratio 1 --baseline "$BASELINE" --out "$OUT/eval"
fi
