#!/usr/bin/env bash
# Do the guided pairs help a segmenter? A first check on NEU-Seg's VALIDATION split (894 images; the test
# split is not touched): DeepLabV3+-R18 from scratch, 400 steps, the 30 real training pairs plus 30 synthetic
# pairs (ratio 1) drawn from each set of experiments/neu_guided/neu_guided.sh, with the paired gain over real only.
# Sets: unconditional, into-training (training masks; model-chosen masks), copy-paste (same count, 60 pairs).
# Seeds 0,1,2 in runs/guided_val, seeds 3,4,5 in runs/guided_val_seeds_3_4_5; the table pools all six.
# Resumable: a finished evaluation is not run again.
#
#   experiments/neu_guided/neu_guided.sh && experiments/neu_guided/neu_guided_val.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"
D=runs/data/neu_seg
SEL=(--data $D --split train --list configs/neu_train10_seed0.txt)
CP=runs/guided_val/copypaste_samples
[ -f $CP/manifest.json ] || $DEFECTGEN copypaste "${SEL[@]}" --num 60 --size 64 --out $CP
outs=()
for seeds in 0,1,2 3,4,5; do
  OUT=runs/guided_val; [ $seeds = 0,1,2 ] || OUT=runs/guided_val_seeds_${seeds//,/_}
  outs+=(--downstream $OUT)
  EVAL=(--config configs/seg_neu64.yaml --model deeplabv3plus-r18 --seeds $seeds --test-split val)
  [ -f $OUT/real-only/results.json ] || $DEFECTGEN evaluate "${SEL[@]}" "${EVAL[@]}" --ratio 0 --out $OUT/real-only
  for pair in unconditional=runs/guided/unconditional into-training=runs/guided/into_training_train_masks \
              into-training-model-masks=runs/guided/into_training_model_masks copy-paste=$CP; do
    name=${pair%%=*}; syn=${pair#*=}
    [ -f $OUT/$name/results.json ] || $DEFECTGEN evaluate "${SEL[@]}" "${EVAL[@]}" --ratio 1 --synthetic $syn \
      --baseline $OUT/real-only/results.json --out $OUT/$name
  done
done
python experiments/neu_guided/neu_guided.py "${outs[@]}" --out experiments/neu_guided/results
