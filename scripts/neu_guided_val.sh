#!/usr/bin/env bash
# Do the guided pairs help a segmenter? A first check on NEU-Seg's VALIDATION split (894 images; the test
# split is not touched): DeepLabV3+-R18 from scratch, 400 steps, 3 seeds, the 30 real training pairs plus
# 30 synthetic pairs (ratio 1) drawn from each set of scripts/neu_guided.sh, with the paired gain over real only.
# Sets: unconditional, into-training (training masks; model-chosen masks), copy-paste (same count, 60 pairs).
# Resumable.
#
#   scripts/neu_guided.sh && scripts/neu_guided_val.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"
D=runs/data/neu_seg
SEL=(--data $D --split train --list configs/neu_train10_seed0.txt)
EVAL=(--config configs/seg_neu64.yaml --model deeplabv3plus-r18 --seeds 0,1,2 --test-split val)
OUT=runs/guided_val
done_() { [ -f "$1/results.json" ]; }
done_ $OUT/real-only || $DEFECTGEN evaluate "${SEL[@]}" "${EVAL[@]}" --ratio 0 --out $OUT/real-only
[ -f $OUT/copypaste_samples/manifest.json ] || $DEFECTGEN copypaste "${SEL[@]}" --num 60 --size 64 --out $OUT/copypaste_samples
for pair in unconditional=runs/guided/unconditional into-training=runs/guided/into_training_train_masks \
            into-training-model-masks=runs/guided/into_training_model_masks copy-paste=$OUT/copypaste_samples; do
  name=${pair%%=*}; syn=${pair#*=}
  done_ $OUT/$name || $DEFECTGEN evaluate "${SEL[@]}" "${EVAL[@]}" --ratio 1 --synthetic $syn \
    --baseline $OUT/real-only/results.json --out $OUT/$name
done
python scripts/neu_guided.py --downstream $OUT --out results/neu_guided
