#!/usr/bin/env bash
# The NEU comparison at a CPU budget, its two diagnostics, and the results folders:
#   1. every row of configs/compare_neu64_cpu.yaml (vanilla, small only, two-stage at 0.1/0.25/0.4/0.6,
#      receptive-field variants rf25/rf41, copy-paste), generated and scored;
#   2. the same generator with epsilon instead of x0 prediction (configs/compare_neu64_cpu_eps.yaml);
#   3. sample filtering by mask agreement (scripts/neu_filter.sh) of the two-stage u0.40 pairs of this
#      run and, when present, of the GPU run (runs/compare_neu64);
#   4. python scripts/neu_results.py -> results/neu64_cpu (and results/neu64 for the GPU run).
# Every step resumes where it stopped; rerun the same line after an interruption.
#
#   scripts/neu_compare_cpu.sh
#
# On the 2-core machine the steps ran in two lanes of one thread each (OMP_NUM_THREADS=1; more threads
# than cores makes torch many times slower): generation of (1) with two threads first, then the
# scoring of (1) followed by (3) in one lane and all of (2) in the other. Timings are in the README.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFECTGEN="${DEFECTGEN:-python -m defectgen.cli}"
mkdir -p runs/data
[ -e runs/data/neu_seg ] || ln -s ../../../shared/data/neu_seg runs/data/neu_seg
[ -f runs/data/neu_seg/labels.txt ] || { echo "runs/data/neu_seg: NEU-Seg not found (expected ../shared/data/neu_seg)" >&2; exit 2; }

$DEFECTGEN compare --config configs/compare_neu64_cpu.yaml --out runs/compare_neu64_cpu
$DEFECTGEN compare --config configs/compare_neu64_cpu_eps.yaml --out runs/compare_neu64_cpu_eps
scripts/neu_filter.sh runs/compare_neu64_cpu/rows/two-stage-u0.40/samples \
  runs/compare_neu64_cpu/rows/real-only/eval.json runs/filter/cpu-u0.40
python scripts/neu_results.py --compare runs/compare_neu64_cpu --ablate none --out results/neu64_cpu \
  --extra eps=runs/compare_neu64_cpu_eps --filtered runs/filter/cpu-u0.40
if [ -f runs/compare_neu64/rows/two-stage-u0.40/samples/manifest.json ]; then
  scripts/neu_filter.sh runs/compare_neu64/rows/two-stage-u0.40/samples \
    runs/compare_neu64/rows/real-only/eval.json runs/filter/gpu-u0.40
  python scripts/neu_results.py --filtered runs/filter/gpu-u0.40
fi
