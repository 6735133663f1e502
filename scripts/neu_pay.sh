#!/usr/bin/env bash
# Issue 9: do the Defect-Gen pairs pay on NEU-Seg 10-shot? Every choice is made on NEU's val.txt (894
# images) and written to results/neu_pay/protocol.jsonl with its numbers; test.txt (447 images) is scored
# once, at the end, for the chosen settings and every baseline. Two segmentation baselines: DeepLabV3+-R18
# from scratch and DeepLabV3+ with the packaged ImageNet EfficientNet-Lite0 encoder.
#
# Needs the CPU generator and its guided sets: scripts/neu_guided.sh (trains runs/neu_cpu_gen, about an
# hour on one core, and samples runs/guided/*). Then, about 2.5 h on two cores:
#
#   scripts/neu_guided.sh && scripts/neu_pay.sh
#
# Resumable: finished cells, sample folders and decisions are kept; a rerun only does what is missing.
# Stages: 1 synthetic sets -> per model, side by side: 2 steps curve (val) -> 3 usage x ratio (val) ->
# 4 filtered vs unfiltered at the chosen usage (val, DeepLabV3+-R18) -> 5 test, once -> 6 tables, plots, .npz.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"
PAY="python scripts/neu_pay.py"
D=runs/data/neu_seg R=results/neu_pay W=runs/neu_pay
LOG=$R/protocol.jsonl
mkdir -p $W
[ -e $D ] || { mkdir -p runs/data && ln -s "$(cd ../shared/data/neu_seg && pwd)" $D; }
LIST=(--split train --list configs/neu_train10_seed0.txt)   # the generator's 30 training pairs
MODELS=(deeplabv3plus-r18 deeplabv3plus-effl0-imagenet)
short() { echo "${1/deeplabv3plus-/dl-}"; }
for need in runs/neu_cpu_gen/pipeline runs/guided/into_training_model_masks runs/guided/unconditional; do
  [ -e $need ] || { echo "neu_pay: $need missing: run scripts/neu_guided.sh first" >&2; exit 2; }
done

# 1. synthetic sets: a per-class pool of into-training pairs with model masks (60 per class) and its
#    filtered top-20 per class; vanilla DDPM (the large UNet alone); copy-paste. 60 pairs each.
[ -f $W/pool_model_masks/manifest.json ] || $DEFECTGEN sample --run runs/neu_cpu_gen --into-training \
  --mask-source model --classes Inclusions=60,Patches=60,Scratches=60 --steps 100 --switch 0.4 --sampler ddpm \
  --seed 0 --out $W/pool_model_masks
[ -f $W/filtered/manifest.json ] || $DEFECTGEN filter --real $D "${LIST[@]}" --synthetic $W/pool_model_masks \
  --min-agreement 0 --per-class 20 --out $W/filtered
[ -f $W/vanilla/manifest.json ] || $DEFECTGEN sample --run runs/neu_cpu_gen --num 60 --switch 0 --steps 100 \
  --sampler ddpm --seed 0 --out $W/vanilla
[ -f $W/copypaste/manifest.json ] || $DEFECTGEN copypaste --data $D "${LIST[@]}" --num 60 --size 64 --out $W/copypaste

PRIMARY=deeplabv3plus-r18   # the baseline of the issue's target; its val choices also pick the synthetic set
val_stages() {  # stages 2-4 for one segmentation model
  local m=$1 s; s=$(short $1)
  # 2. segmentation steps: real-only val mIoU against steps, 3 seeds; logs seg.steps[MODEL]
  python scripts/seg_steps_curve.py --data $D "${LIST[@]}" --config configs/seg_neu64.yaml --model $m \
    --steps 200,400,800 --seeds 0,1,2 --score-split val --out $R/steps_curve_$s --protocol-log $LOG
  # 3. usage mode x ratio for the Defect-Gen pairs on val; logs usage[MODEL] (mode and ratio)
  local M U RATIOS=(); args_of M model_sets $m
  [ $m = $PRIMARY ] || RATIOS=(--set ratios=0,1)  # the slower baseline: ratio 1 only
  $DEFECTGEN ablate --config configs/neu_pay_val.yaml --out $R/val_usage_$s "${M[@]}" "${RATIOS[@]}"
  $PAY usage --log $LOG --val $R/val_usage_$s --model $m > /dev/null
  [ $m = $PRIMARY ] || return 0
  # 4. filtered vs unfiltered at the chosen usage and ratio on val (primary baseline); the real-only and
  #    unfiltered cells are the val_usage cells (same protocol key), copied so only the filtered cells are new
  local lbl u r suf=""; lbl=$($PAY usage-label --log $LOG --model $m); u=${lbl%%:*} r=${lbl#*:}
  [ $u = mix ] || suf=__$u
  mkdir -p $R/val_set_$s/cells
  cp -n $R/val_usage_$s/cells/${m}__real__r0__s[0-9].json $R/val_usage_$s/cells/${m}__defectgen__r${r}__s[0-9]$suf.json \
    $R/val_set_$s/cells/
  args_of U usage_sets $m
  $DEFECTGEN ablate --config configs/neu_pay_val.yaml --out $R/val_set_$s "${M[@]}" "${U[@]}" \
    --set sources.defectgen-filtered=$W/filtered
  $PAY set --log $LOG --val $R/val_set_$s --model $m > /dev/null
}
model_sets() { echo --set models=$1 --set seg.steps=$($PAY steps --log $LOG --model $1); }
usage_sets() { $PAY usage-sets --log $LOG --model $1; }
# the --set arguments as arrays (read -a splits words without globbing the [..] of the values)
args_of() { local -n _a=$1; shift; read -ra _a <<< "$("$@")"; [ ${#_a[@]} -gt 0 ]; }
test_stage() {  # 5. test, once: real-only, copy-paste, vanilla DDPM, (Defect-Gen unconditional,) the chosen set
  local m=$1 s; s=$(short $1)
  local M U UNCOND=(); args_of M model_sets $m; args_of U usage_sets $m
  [ $m = $PRIMARY ] || UNCOND=(--set sources.defectgen-unconditional=)  # CPU time: on the primary only
  $DEFECTGEN ablate --config configs/neu_pay_test.yaml --out $R/test_$s "${M[@]}" "${U[@]}" \
    --set sources.defectgen=$($PAY set-of --log $LOG --model $PRIMARY) "${UNCOND[@]}"
}
side_by_side() {  # run "$1 MODEL" for both models at once, one thread each (logs in runs/neu_pay/)
  local pids=() m
  for m in "${MODELS[@]}"; do $1 $m > $W/$1_$(short $m).log 2>&1 & pids+=($!); done
  for p in "${pids[@]}"; do wait $p || { echo "neu_pay: $1 failed, see $W/$1_*.log" >&2; exit 1; }; done
}
side_by_side val_stages
side_by_side test_stage

# 6. headline table, decisions, plots, the synthetic pairs as .npz
G=runs/guided_val G2=runs/guided_val_seeds_3_4_5 V=$R/val_usage_dl-r18
$PAY final --log $LOG --out $R --test $R/test_dl-r18 --test $R/test_dl-effl0-imagenet \
  --val $V --val $R/val_usage_dl-effl0-imagenet \
  --lever "unconditional, mix 1 (6 seeds)=$G/unconditional:$G2/unconditional" \
  --lever "copy-paste, mix 1 (6 seeds)=$G/copy-paste:$G2/copy-paste" \
  --lever "into-training, train masks, mix 1 (6 seeds)=$G/into-training:$G2/into-training" \
  --lever "into-training, model masks, mix 1 (6 seeds)=$G/into-training-model-masks:$G2/into-training-model-masks" \
  --lever "model masks, mix 2=$V:deeplabv3plus-r18:defectgen:mix:2" \
  --lever "model masks, pretrain 1=$V:deeplabv3plus-r18:defectgen:pretrain-f0.5:1" \
  --lever "model masks, pretrain 2=$V:deeplabv3plus-r18:defectgen:pretrain-f0.5:2" \
  --lever "model masks, weighted 0.3, 1=$V:deeplabv3plus-r18:defectgen:weighted-w0.3:1" \
  --lever "model masks, weighted 0.3, 2=$V:deeplabv3plus-r18:defectgen:weighted-w0.3:2" \
  --lever "filtered top-20/class, chosen usage=$R/val_set_dl-r18:deeplabv3plus-r18:defectgen-filtered:$($PAY usage-label --log $LOG --model deeplabv3plus-r18)"
