"""Real-only validation mIoU against segmentation training steps; picks the converged step count on val.

    python tools/seg_steps_curve.py --data ../shared/data/neu_seg --split train --shots 10 --seed 0 \
        --config configs/seg_neu64.yaml --model deeplabv3plus-r18 --steps 100,200,400,800,1600 --seeds 0,1,2 \
        --score-split val --out experiments/neu_pay/results/steps_curve_dl-r18 --protocol-log experiments/neu_pay/results/protocol.jsonl

Writes OUT/curve.{json,csv,md,png} and one JSON per run in OUT/cells/ (a rerun skips finished runs),
and appends the decision ``seg.steps[MODEL]`` with every point's val number to the protocol log. The test
split is refused: a step count is never chosen on test. Rule: the smallest step count whose mean
val mIoU (defect classes by default) is within --tolerance points of the best mean on the curve.
--until-flat runs the step counts in increasing order and stops extending once a point gains no more than
--tolerance over the best earlier mean (e.g. --steps 800,1600,3200,6400: the larger counts only if needed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from defectgen import logs
from defectgen.config import ConfigError, load_config
from defectgen.cli.common import add_selection_args, selection
from defectgen.data import DataError
from defectgen.io import OutputExistsError
from defectgen.seg.curve import METRICS, run_steps_curve
from defectgen.seg.evaluate import EvalConfig
from defectgen.seg.models import MODELS


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from err


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_args(ap)
    ap.add_argument("--config", type=Path, default=None, help="YAML evaluation config (e.g. configs/seg_neu64.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override an evaluation config key, e.g. seg.batch_size=16")
    ap.add_argument("--model", choices=list(MODELS), default=None, help="segmentation model")
    ap.add_argument("--steps", type=_ints, required=True, help="step counts, e.g. 100,200,400,800")
    ap.add_argument("--seeds", type=_ints, default=None, help="training seeds (default: the config's)")
    ap.add_argument("--score-split", default="val", help="validation split to score (default val; test is refused)")
    ap.add_argument("--metric", choices=METRICS, default="miou_defect", help="number the rule looks at")
    ap.add_argument("--tolerance", type=float, default=1.0, help="points of mIoU below the best that count as converged")
    ap.add_argument("--until-flat", action="store_true",
                    help="run larger step counts only while each gains more than --tolerance over the best before it")
    ap.add_argument("--decision", default=None,
                    help="name of the logged decision (default seg.steps[MODEL]; e.g. one per learning rate)")
    ap.add_argument("--protocol-log", type=Path, default=None, help="JSON-lines decision log (default OUT/protocol.jsonl)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (new, or an earlier curve to resume)")
    ap.add_argument("--overwrite", action="store_true", help="discard earlier runs in OUT and start again")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(EvalConfig, args.config, args.overrides)
        cfg.ratio, cfg.test_split, cfg.test_list = 0.0, args.score_split, None
        if args.model:
            cfg.seg.model = args.model
        if args.seeds is not None:
            cfg.seeds = args.seeds
        ds, train = selection(args).select()
        curve = run_steps_curve(ds, train, cfg, args.steps, args.out, args.metric, args.tolerance / 100,
                                args.protocol_log, args.device, overwrite=args.overwrite, until_flat=args.until_flat,
                                decision=args.decision)
    except (ConfigError, DataError, OutputExistsError, FileNotFoundError) as err:  # ConfigError: no --data
        print(f"seg_steps_curve: error: {err}", file=sys.stderr)
        return 2
    print((args.out / "curve.md").read_text())
    print(f"chosen: {curve['chosen_steps']} steps -> {args.out / 'curve.json'}")
    return 0


if __name__ == "__main__":
    logs.configure()  # the library's [data] lines, as the command line shows them
    sys.exit(main())
