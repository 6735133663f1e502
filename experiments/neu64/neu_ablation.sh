#!/usr/bin/env bash
# Reproduce the README segmentation table and plot on NEU-Seg (10 images per defect class, 64 px,
# tested on the published test.txt): DeepLabV3+-R18 and the small UNet, ratios 0 / 0.5 / 1 / 2,
# generator samples and copy-paste, 3 seeds. Resumable: rerun the same line after an interruption.
#
#   experiments/neu64/neu_ablation.sh [SAMPLES_DIR] [OUT_DIR]
#
# SAMPLES_DIR: output of `defectgen sample` from a generator trained with
#   `defectgen train --config configs/neu64.yaml --data ../shared/data/neu_seg --split train --shots 10 --seed 0 ...`
#   (leave it out, or pass "", for the real-only and copy-paste rows alone).
# OUT_DIR: default runs/ablate_neu64. Extra settings: SET="seg.threads=2 seeds=[0]" experiments/neu64/neu_ablation.sh ...
# On 2 CPU cores one cell takes 2-4 min (DeepLabV3+) or 1-2 min (small UNet); a GPU is used when present.
set -euo pipefail
cd "$(dirname "$0")/../.."

SAMPLES="${1:-}"
OUT="${2:-runs/ablate_neu64}"
DATA="${DATA:-../shared/data/neu_seg}"
CP="${CP:-runs/neu_copypaste}"
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"

if [ ! -f "$CP/manifest.json" ]; then
  # 120 pairs: twice what ratio 2 needs (60), so each seed draws its own subset
  $DEFECTGEN copypaste --data "$DATA" --split train --shots 10 --seed 0 --num 120 --size 64 --out "$CP"
fi

sets=(--set "data=$DATA" --set "sources.copypaste=$CP" --set "sources.defectgen=$SAMPLES")
for s in ${SET:-}; do sets+=(--set "$s"); done

$DEFECTGEN ablate --config experiments/neu64/ablate_neu64.yaml --out "$OUT" "${sets[@]}"
echo "table: $OUT/report.md   plot: $OUT/miou_vs_ratio.png   per-cell rows: $OUT/results.csv"
