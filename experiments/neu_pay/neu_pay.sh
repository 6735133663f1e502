#!/usr/bin/env bash
# Issue 9: do the Defect-Gen pairs pay on NEU-Seg 10-shot? Every choice is made on NEU's val.txt (894
# images) and written to experiments/neu_pay/results/protocol.jsonl with its numbers; test.txt (447 images) is scored
# once, at the end, for the chosen settings and every baseline. Two segmentation baselines: DeepLabV3+-R18
# from scratch and DeepLabV3+ with the packaged ImageNet EfficientNet-Lite0 encoder.
#
# Needs the CPU generator and its guided sets: experiments/neu_guided/neu_guided.sh (trains runs/neu_cpu_gen, about an
# hour on one core, and samples runs/guided/*), and the first val check experiments/neu_guided/neu_guided_val.sh (its rows
# are levers in the plot). Then, about 2.5 h on two cores:
#
#   experiments/neu_guided/neu_guided.sh && experiments/neu_guided/neu_guided_val.sh && experiments/neu_pay/neu_pay.sh
#
# Resumable: finished cells, sample folders and decisions are kept; a rerun only does what is missing.
# Stages: 1 synthetic sets -> 2 steps curve per model (val) -> 3 synthetic set x usage mode at ratio 1
# (val, DeepLabV3+-R18) -> 4 test, once, both models -> 5 quality of the sets, tables, plots, .npz.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"
PAY="python experiments/neu_pay/neu_pay.py"
D=runs/data/neu_seg R=experiments/neu_pay/results W=runs/neu_pay
LOG=$R/protocol.jsonl
mkdir -p $W
[ -e $D ] || { mkdir -p runs/data && ln -s "$(cd ../shared/data/neu_seg && pwd)" $D; }
LIST=(--split train --list configs/neu_train10_seed0.txt)   # the generator's 30 training pairs
MODELS=(deeplabv3plus-r18 deeplabv3plus-effl0-imagenet)
short() { echo "${1/deeplabv3plus-/dl-}"; }
for need in runs/neu_cpu_gen/pipeline runs/guided/into_training_model_masks runs/guided/unconditional runs/guided_val; do
  [ -e $need ] || { echo "neu_pay: $need missing: run experiments/neu_guided/neu_guided.sh and experiments/neu_guided/neu_guided_val.sh first" >&2; exit 2; }
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

PRIMARY=deeplabv3plus-r18   # the baseline of the issue's target: its val grid chooses set, usage and ratio
PRETRAINED=deeplabv3plus-effl0-imagenet
model_sets() { echo --set models=$1 --set seg.steps=$($PAY steps --log $LOG --model $1); }
usage_sets() { $PAY usage-sets --log $LOG --model $PRIMARY; }
# the --set arguments as arrays (read -a splits words without globbing the [..] of the values)
args_of() { local -n _a=$1; shift; read -ra _a <<< "$("$@")"; [ ${#_a[@]} -gt 0 ]; }
steps_curve() {  # 2. real-only val mIoU against steps, 3 seeds; logs seg.steps[MODEL]
  python tools/seg_steps_curve.py --data $D "${LIST[@]}" --config configs/seg_neu64.yaml --model $1 \
    --steps 200,400,800 --seeds 0,1,2 --score-split val --out $R/steps_curve_$(short $1) --protocol-log $LOG
}
val_part() {  # 3. one half of the val grid (same folder, disjoint cells): real + unfiltered, or filtered
  local M; args_of M model_sets $PRIMARY
  local part=(--set sources.defectgen-filtered=); [ $1 = a ] || part=(--set sources.defectgen= --set "ratios=[1]")
  $DEFECTGEN ablate --config experiments/neu_pay/neu_pay_val.yaml --out $R/val_$(short $PRIMARY) "${M[@]}" "${part[@]}"
}
test_part() {  # 4. one part of the test scoring (disjoint cells, so parts run side by side)
  local M U part; args_of U usage_sets
  local only_chosen="ratios=[${U[3]#ratios=0,}]"
  case $1 in
    r18a) args_of M model_sets $PRIMARY; part=(--set sources.vanilla-ddpm= --set sources.defectgen=) ;;  # real, copy-paste
    r18b) args_of M model_sets $PRIMARY; part=(--set sources.copy-paste= --set "$only_chosen") ;;         # vanilla, chosen
    effl0a) args_of M model_sets $PRETRAINED; part=(--set sources.copy-paste= --set sources.vanilla-ddpm=) ;;  # real, chosen
    effl0b) args_of M model_sets $PRETRAINED; part=(--set sources.defectgen= --set "$only_chosen") ;;    # copy-paste, vanilla
  esac
  test_run "${M[@]}" "${U[@]}" "${part[@]}"
}
test_run() {  # ablate on the test split with the val-chosen usage, ratio and synthetic set
  local m=${2#models=}
  $DEFECTGEN ablate --config experiments/neu_pay/neu_pay_test.yaml --out $R/test_$(short $m) \
    --set sources.defectgen=$($PAY set-of --log $LOG --model $PRIMARY) "$@"
}
side_by_side() {  # run "$1 ARG" for each further argument at once, one thread each (logs in runs/neu_pay/)
  local f=$1 pids=() a; shift
  for a in "$@"; do $f $a > $W/${f}_$(short $a).log 2>&1 & pids+=($!); done
  for p in "${pids[@]}"; do wait $p || { echo "neu_pay: $f failed, see $W/${f}_*.log" >&2; exit 1; }; done
}
side_by_side steps_curve "${MODELS[@]}"
# 3. the val grid of the primary baseline: synthetic set (unfiltered, filtered) x usage mode at ratio 1,
#    in two processes; the last call only gathers (every cell is done) and writes the full tables
side_by_side val_part a b
args_of M model_sets $PRIMARY
$DEFECTGEN ablate --config experiments/neu_pay/neu_pay_val.yaml --out $R/val_$(short $PRIMARY) "${M[@]}"
$PAY choose --log $LOG --val $R/val_$(short $PRIMARY) --model $PRIMARY
side_by_side test_part r18a r18b effl0a effl0b
args_of U usage_sets   # gather: every cell is done; the full tables of each test folder
for m in $PRIMARY $PRETRAINED; do args_of M model_sets $m; test_run "${M[@]}" "${U[@]}"; done

# 5. quality of the sets (as experiments/neu_guided/neu_guided.py scores them), headline table, decisions, plots, .npz
$PAY quality --log $LOG --out $R --set vanilla-ddpm=$W/vanilla --set defectgen-unconditional=runs/guided/unconditional \
  --set defectgen=runs/guided/into_training_model_masks --set defectgen-filtered=$W/filtered --set copy-paste=$W/copypaste
G=runs/guided_val G2=runs/guided_val_seeds_3_4_5 V=$R/val_$(short $PRIMARY):$PRIMARY
$PAY final --log $LOG --out $R --test $R/test_dl-r18 --test $R/test_dl-effl0-imagenet --val $R/val_$(short $PRIMARY) \
  --lever "first check (400 steps, 6 seeds): unconditional, mix=$G/unconditional:$G2/unconditional" \
  --lever "first check (400 steps, 6 seeds): copy-paste, mix=$G/copy-paste:$G2/copy-paste" \
  --lever "first check (400 steps, 6 seeds): into-training, train masks, mix=$G/into-training:$G2/into-training" \
  --lever "first check (400 steps, 6 seeds): into-training, model masks, mix=$G/into-training-model-masks:$G2/into-training-model-masks" \
  --lever "model masks, mix=$V:defectgen:mix:1" \
  --lever "model masks, pretrain 0.5=$V:defectgen:pretrain-f0.5:1" \
  --lever "model masks, weighted 0.3=$V:defectgen:weighted-w0.3:1" \
  --lever "model masks filtered (top 20/class), mix=$V:defectgen-filtered:mix:1" \
  --lever "model masks filtered (top 20/class), pretrain 0.5=$V:defectgen-filtered:pretrain-f0.5:1" \
  --lever "model masks filtered (top 20/class), weighted 0.3=$V:defectgen-filtered:weighted-w0.3:1"
