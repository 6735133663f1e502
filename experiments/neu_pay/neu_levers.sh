#!/usr/bin/env bash
# Issue 9, round 2: the generator levers. After experiments/neu_pay/neu_pay.sh (round 1: segmentation steps, usage mode,
# ratio and synthetic set chosen on val, test scored once), five generators of experiments/neu_pay/gpu_levers.yaml
# (x0 / x0 + zero terminal SNR / epsilon + zero SNR / v + zero SNR / x0 without EMA, equal budget: 1500 steps
# per stage at batch 128) are trained on a lent GPU, and their into-training sets (plus DDIM 50 and DDPM 250
# for x0) are scored on NEU's val.txt with round 1's protocol. The generator chosen on val is scored on
# test once, with its own vanilla DDPM row (the large UNet of the same generator alone) as the baseline.
# The switch is swept (0.2, 0.6 against 0.4) on val for the chosen set before that, as the issue orders.
#
# Needs runs/gpu_levers (the GPU step: about 9 minutes of an H200 in all, README "A GPU machine with limits"):
#   python tools/gpu_levers.py subset-data --config experiments/neu_pay/gpu_levers.yaml --to .gpudata/neu_seg
#   (device)  python3 tools/gpu_levers.py run --config experiments/neu_pay/gpu_levers.yaml --data .gpudata/neu_seg \
#                 --work runs/gpu_levers --train-seconds 330 --sample-seconds 70      # carry .whl and .gpudata
#   python tools/gpu_levers.py unpack --from FETCHED --to runs/gpu_levers --data runs/data/neu_seg
# then, about 2 h on two cores (measured: levers 40 min, switch 14, ratio 26, the new test cells 31):
#   experiments/neu_pay/neu_levers.sh
# Resumable like neu_pay.sh: finished cells and decisions are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"
PAY="python experiments/neu_pay/neu_pay.py"
D=runs/data/neu_seg R=experiments/neu_pay/results W=runs/neu_pay G=runs/gpu_levers
LOG=$R/protocol.jsonl PRIMARY=deeplabv3plus-r18 PRETRAINED=deeplabv3plus-effl0-imagenet
VAL=$R/val_levers_dl-r18 REF=$R/val_dl-r18
for v in x0 x0-zsnr eps-zsnr v-zsnr x0-no-ema; do
  [ -f $G/$v/sets/into-training/manifest.json ] || { echo "neu_levers: $G/$v missing: run the GPU step first (see the top of $0)" >&2; exit 2; }
done
[ -f $REF/summary.csv ] || { echo "neu_levers: $REF missing: run experiments/neu_pay/neu_pay.sh first" >&2; exit 2; }
[ -e $D ] || { mkdir -p runs/data && ln -s "$(cd ../shared/data/neu_seg && pwd)" $D; }
steps() { $PAY steps --log $LOG --model $1; }
args_of() { local -n _a=$1; shift; read -ra _a <<< "$("$@")"; [ ${#_a[@]} -gt 0 ]; }

# 1. val: every lever set at round 1's usage and ratio; the real-only cells are round 1's (same key, checked)
mkdir -p $VAL/cells
cp -n $REF/cells/${PRIMARY}__real__r0__s*.json $VAL/cells/
args_of U $PAY usage-sets --log $LOG --model $PRIMARY
val_part() {  # two halves with disjoint cells, side by side
  local drop=(--set sources.gpu-eps-zsnr= --set sources.gpu-x0-no-ema= --set sources.gpu-x0-ddpm250=)
  [ $1 = a ] || drop=(--set sources.gpu-x0= --set sources.gpu-x0-zsnr= --set sources.gpu-v-zsnr= --set sources.gpu-x0-ddim50=)
  $DEFECTGEN ablate --config experiments/neu_pay/neu_levers_val.yaml --out $VAL --set seg.steps=$(steps $PRIMARY) "${U[@]}" "${drop[@]}"
}
val_part a > $W/levers_val_a.log 2>&1 & pa=$!
val_part b > $W/levers_val_b.log 2>&1 & pb=$!
wait $pa && wait $pb || { echo "neu_levers: val failed, see $W/levers_val_*.log" >&2; exit 1; }
$DEFECTGEN ablate --config experiments/neu_pay/neu_levers_val.yaml --out $VAL --set seg.steps=$(steps $PRIMARY) "${U[@]}"
read -r SRC CHOSEN < <($PAY choose-generator --log $LOG --val $VAL --reference $REF:defectgen --model $PRIMARY)
echo "round 2, generator chosen on val: $SRC ($CHOSEN)"

# 1b. switch, swept only after the levers above: the chosen set again at switch 0.2 and 0.6 (sampled here,
#     same generator, sampler, steps and seed), on val; the chosen switch-0.4 set is the reference
run_of() {  # the generator of a sample folder: runs/gpu_levers/V for its sets, else the one its manifest names
  case $1 in */sets/*) echo "${1%/sets/*}" ;;
    *) python -c "import json, pathlib; print(pathlib.Path(json.load(open('$1/manifest.json'))['model']['pipeline']).parent)" ;; esac
}
no_levers() { python -c "import yaml; print(' '.join(f'--set sources.{s}=' for s in yaml.safe_load(open('experiments/neu_pay/neu_levers_val.yaml'))['sources']))"; }
SW=$R/val_switch_dl-r18 RUN=$(run_of $CHOSEN) GSRC=$SRC REFDIR=$VAL BASE=$CHOSEN
[ "$SRC" != defectgen ] || REFDIR=$REF
read -r SAMPLER NSTEPS < <(python -c "import json; m = json.load(open('$CHOSEN/manifest.json')); print(m['sampler'], m['steps'])")
switch_set() {
  [ -f $CHOSEN-switch$1/manifest.json ] || $DEFECTGEN sample --run $RUN --into-training --mask-source model --num 60 \
    --sampler $SAMPLER --steps $NSTEPS --switch $1 --seed 0 --out $CHOSEN-switch$1 --quiet
  $DEFECTGEN ablate --config experiments/neu_pay/neu_levers_val.yaml --out $SW --set seg.steps=$(steps $PRIMARY) "${U[@]}" \
    $(no_levers) --set sources.$GSRC-sw${1/./}=$CHOSEN-switch$1
}
mkdir -p $SW/cells
cp -n $REF/cells/${PRIMARY}__real__r0__s*.json $SW/cells/
switch_set 0.2 > $W/switch_0.2.log 2>&1 & pa=$!
switch_set 0.6 > $W/switch_0.6.log 2>&1 & pb=$!
wait $pa && wait $pb || { echo "neu_levers: switch sweep failed, see $W/switch_*.log" >&2; exit 1; }
$DEFECTGEN ablate --config experiments/neu_pay/neu_levers_val.yaml --out $SW --set seg.steps=$(steps $PRIMARY) "${U[@]}" \
  $(no_levers) --set sources.$GSRC-sw02=$CHOSEN-switch0.2 --set sources.$GSRC-sw06=$CHOSEN-switch0.6
read -r SRC CHOSEN < <($PAY choose-generator --decision switch --log $LOG --val $SW --reference $REFDIR:$GSRC --model $PRIMARY)
echo "round 2, set chosen on val after the switch sweep: $SRC ($CHOSEN)"
SRCDIR=$SW; [ "$SRC" != "$GSRC" ] || SRCDIR=$REFDIR   # the grid that scored the chosen set at ratio 1

# 1c. ratio, last (round 1 tried 1 only): the chosen set at 0.5 and 2 synthetic pairs per real pair, on val
RT=$R/val_ratio_dl-r18
mkdir -p $RT/cells
cp -n $REF/cells/${PRIMARY}__real__r0__s?.json $SRCDIR/cells/${PRIMARY}__${SRC}__r1__s?.json $RT/cells/
ratio_part() {
  $DEFECTGEN ablate --config experiments/neu_pay/neu_levers_val.yaml --out $RT --set seg.steps=$(steps $PRIMARY) "${U[@]}" \
    $(no_levers) --set sources.$SRC=$CHOSEN --set ratios=0,$1
}
ratio_part 0.5 > $W/ratio_0.5.log 2>&1 & pa=$!
ratio_part 2 > $W/ratio_2.log 2>&1 & pb=$!
wait $pa && wait $pb || { echo "neu_levers: ratio sweep failed, see $W/ratio_*.log" >&2; exit 1; }
ratio_part 0.5,1,2
RATIO=$($PAY choose-ratio --log $LOG --val $RT --source $SRC --model $PRIMARY)
echo "round 2, ratio chosen on val: $RATIO"

# 2. test, once, when round 2 changed the set or the ratio: in new folders (test_r2_*; real-only cells are round 1's),
#    the chosen set and every baseline at the chosen ratio, and the chosen generator's own vanilla DDPM row
TESTS=()
if [ "$CHOSEN" != "$($PAY set-of --log $LOG --model $PRIMARY)" ] || [ "$RATIO" != 1 ]; then
  RUN=$(run_of $CHOSEN) VAN=()
  if [ "$(cd $RUN && pwd -P)" != "$(cd runs/neu_cpu_gen && pwd -P)" ]; then  # round 1's generator has its vanilla row
    V=$RUN/sets/vanilla
    [ -f $V/manifest.json ] || V=$W/vanilla_$(basename $RUN)
    [ -f $V/manifest.json ] || $DEFECTGEN sample --run $RUN --num 60 --switch 0 --steps 100 --sampler ddpm --seed 0 --out $V
    VAN=(--set sources.vanilla-ddpm-r2=$V)
  fi
  test_r2() {
    local t=$R/test_r2_${1/deeplabv3plus-/dl-}
    mkdir -p $t/cells
    cp -n $R/test_${1/deeplabv3plus-/dl-}/cells/${1}__real__r0__s?.json $t/cells/
    $DEFECTGEN ablate --config experiments/neu_pay/neu_pay_test.yaml --out $t --set models=$1 --set seg.steps=$(steps $1) "${U[@]}" \
      --set ratios=0,$RATIO --set sources.defectgen= --set sources.defectgen-r2=$CHOSEN "${VAN[@]}"
  }
  test_r2 $PRIMARY > $W/levers_test_r18.log 2>&1 & pa=$!
  test_r2 $PRETRAINED > $W/levers_test_effl0.log 2>&1 & pb=$!
  wait $pa && wait $pb || { echo "neu_levers: test failed, see $W/levers_test_*.log" >&2; exit 1; }
  TESTS=(--test-r2 $R/test_r2_dl-r18 --test-r2 $R/test_r2_dl-effl0-imagenet)
else
  echo "round 2 keeps round 1's set and ratio: nothing new to score on test"
fi

# 3. quality of the lever sets, the tables (both rounds), the levers plot
$PAY quality --log $LOG --out $R --set gpu-x0=$G/x0/sets/into-training --set gpu-x0-zsnr=$G/x0-zsnr/sets/into-training \
  --set gpu-v-zsnr=$G/v-zsnr/sets/into-training --set gpu-eps-zsnr=$G/eps-zsnr/sets/into-training \
  --set gpu-x0-no-ema=$G/x0-no-ema/sets/into-training --set gpu-x0-ddim50=$G/x0/sets/into-training-ddim50 \
  --set gpu-x0-ddpm250=$G/x0/sets/into-training-ddpm250 --set gpu-vanilla-ddpm=$G/x0/sets/vanilla \
  --set $GSRC-sw02=$BASE-switch0.2 --set $GSRC-sw06=$BASE-switch0.6
L=$VAL:$PRIMARY
$PAY final --log $LOG --out $R --test $R/test_dl-r18 --test $R/test_dl-effl0-imagenet "${TESTS[@]}" --val $REF --val $RT \
  --lever "GPU x0 (10x training), mix=$L:gpu-x0:mix:1" \
  --lever "GPU x0 + zero terminal SNR, mix=$L:gpu-x0-zsnr:mix:1" \
  --lever "GPU epsilon + zero terminal SNR, mix=$L:gpu-eps-zsnr:mix:1" \
  --lever "GPU v + zero terminal SNR, mix=$L:gpu-v-zsnr:mix:1" \
  --lever "GPU x0 without EMA, mix=$L:gpu-x0-no-ema:mix:1" \
  --lever "GPU x0, DDIM 50 steps, mix=$L:gpu-x0-ddim50:mix:1" \
  --lever "GPU x0, DDPM 250 steps, mix=$L:gpu-x0-ddpm250:mix:1" \
  --lever "switch 0.2 ($GSRC), mix=$SW:$PRIMARY:$GSRC-sw02:mix:1" \
  --lever "switch 0.6 ($GSRC), mix=$SW:$PRIMARY:$GSRC-sw06:mix:1" \
  --lever "ratio 0.5 ($SRC), mix=$RT:$PRIMARY:$SRC:mix:0.5" \
  --lever "ratio 2 ($SRC), mix=$RT:$PRIMARY:$SRC:mix:2"
