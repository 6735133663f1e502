"""``defectgen compare``: the method against its alternatives (see ``defectgen.compare``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from defectgen.cli.common import command, add_device, add_set, device, finish


def cmd_compare(args: argparse.Namespace) -> int:
    from defectgen.compare import CompareConfig, markdown, run_compare
    from defectgen.config import load_config
    from defectgen.timing import Timer

    cfg = load_config(CompareConfig, args.config, args.set)
    timer = Timer()
    with timer.phase(f"compare {args.only}"):
        table = run_compare(cfg, args.out, args.only, device(args))
    print(markdown(table, cfg.metrics.feature_extractor))
    finish(args.out, timer, f"defectgen compare: {args.out.name}", args)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "compare", cmd_compare, help="vanilla vs small-only vs two-stage vs copy-paste, scored the same way")
    p.add_argument("--config", type=Path, required=True, help="YAML comparison config (e.g. experiments/neu64/compare_neu64.yaml)")
    p.add_argument("--out", type=Path, required=True, help="output folder (new, or an earlier comparison to resume)")
    p.add_argument("--only", choices=("all", "generate", "score"), default="all")
    add_device(p)
    add_set(p, "the comparison config", "num_samples=100")
