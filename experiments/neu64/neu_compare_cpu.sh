#!/usr/bin/env bash
# The NEU comparison at a CPU budget, its diagnostics, and the results folders:
#   1. every row of experiments/neu64/compare_neu64_cpu.yaml (vanilla, small only, two-stage at 0.1/0.25/0.4/0.6,
#      receptive-field variants rf25/rf41, copy-paste), generated and scored;
#   2. the two-stage generator sampled again with all 1000 DDPM steps (30 pairs, the row's first seeds):
#      does the strided 100-step sampler make the images smooth?
#   3. sample filtering by mask agreement (experiments/neu64/neu_filter.sh) of the two-stage u0.40 pairs of the
#      GPU run (runs/compare_neu64, when present);
#   4. python experiments/neu64/neu_results.py -> experiments/neu64/results/cpu (and experiments/neu64/results/gpu for the GPU run).
# Optional, not in the README's numbers for lack of CPU time: EPS=1 adds experiments/neu64/compare_neu64_cpu_eps.yaml
# (epsilon instead of x0 prediction, about 45 minutes), FILTER_CPU=1 filters this run's u0.40 pairs too.
# Every step resumes where it stopped; rerun the same line after an interruption.
#
#   experiments/neu64/neu_compare_cpu.sh
#
# On the 2-core machine the steps ran as parallel processes of one thread each (OMP_NUM_THREADS=1;
# more threads than cores makes torch many times slower), rows shared out with `--set only_rows=[...]`.
# Timings are in the README.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"
CMP=runs/compare_neu64_cpu
mkdir -p runs/data
[ -e runs/data/neu_seg ] || ln -s ../../../shared/data/neu_seg runs/data/neu_seg
[ -f runs/data/neu_seg/labels.txt ] || { echo "runs/data/neu_seg: NEU-Seg not found (expected ../shared/data/neu_seg)" >&2; exit 2; }

$DEFECTGEN compare --config experiments/neu64/compare_neu64_cpu.yaml --out $CMP
[ -f runs/diag/cpu-u0.40-1000steps/manifest.json ] || $DEFECTGEN sample --run $CMP/generator --num 30 --steps 1000 \
  --switch 0.4 --sampler ddpm --batch-size 30 --out runs/diag/cpu-u0.40-1000steps
extra=()
if [ "${FILTER_CPU:-0}" = 1 ]; then
  experiments/neu64/neu_filter.sh $CMP/rows/two-stage-u0.40/samples $CMP/rows/real-only/eval.json runs/filter/cpu-u0.40
  extra+=(--filtered runs/filter/cpu-u0.40)
fi
if [ "${EPS:-0}" = 1 ]; then
  $DEFECTGEN compare --config experiments/neu64/compare_neu64_cpu_eps.yaml --out runs/compare_neu64_cpu_eps
  extra+=(--extra eps=runs/compare_neu64_cpu_eps)
fi
python experiments/neu64/neu_results.py --compare $CMP --ablate none --out experiments/neu64/results/cpu "${extra[@]}" \
  --samples "two-stage-u0.40, 1000 DDPM steps=runs/diag/cpu-u0.40-1000steps"
if [ -f runs/compare_neu64/rows/two-stage-u0.40/samples/manifest.json ]; then
  experiments/neu64/neu_filter.sh runs/compare_neu64/rows/two-stage-u0.40/samples \
    runs/compare_neu64/rows/real-only/eval.json runs/filter/gpu-u0.40
  python experiments/neu64/neu_results.py --filtered runs/filter/gpu-u0.40
fi
