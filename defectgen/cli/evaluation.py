"""The segmentation evaluation's commands: ``evaluate``, ``mix``, ``ablate`` and ``copypaste``."""
from __future__ import annotations

import argparse
from pathlib import Path

from defectgen.cli.common import (command, add_device, add_out, add_set, device, finish, finite, positive, seed,
                                  selection)
from defectgen.config import MAX_PAIRS, MAX_SIDE, ConfigError, load_config
from defectgen.data import load_pair, load_pairs
from defectgen.io import refuse_existing
from defectgen.seg.ablate import AblateConfig, run_ablation, summarize, summary_markdown
from defectgen.seg.copypaste import run_copypaste, run_copypaste_full
from defectgen.seg.evaluate import EvalConfig, evaluate_into
from defectgen.seg.models import MODELS
from defectgen.seg.usage import USAGE_MODES, UsageConfig
from defectgen.tables import pct_stat
from defectgen.timing import Timer


def _seeds(text: str) -> list[int]:
    try:
        return [seed(s) for s in text.split(",") if s.strip()]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"--seeds expects comma-separated non-negative integers, got '{text}'") from err


def add_usage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--usage", choices=USAGE_MODES, default=None,
                   help="how synthetic pairs are used: mix (one pool), pretrain (synthetic first, then real), "
                   "weighted (mix with a synthetic loss weight); default: the config's (mix)")
    p.add_argument("--synthetic-weight", type=finite, default=None, help="--usage weighted: loss weight of a synthetic pair")
    p.add_argument("--pretrain-fraction", type=finite, default=None,
                   help="--usage pretrain: share of the steps spent on synthetic pairs before the real fine-tune")


def usage_from_args(args: argparse.Namespace, usage: UsageConfig) -> UsageConfig:
    """``usage`` with the command line's --usage/--synthetic-weight/--pretrain-fraction applied and checked."""
    if args.usage is not None:
        usage.mode = args.usage
    for flag, key, mode in (("synthetic_weight", "synthetic_weight", "weighted"), ("pretrain_fraction", "pretrain_fraction", "pretrain")):
        value = getattr(args, flag)
        if value is not None:
            if usage.mode != mode:
                raise ConfigError(f"--{flag.replace('_', '-')} applies to --usage {mode} only (the usage is {usage.mode})")
            setattr(usage, key, value)
    usage.check()
    return usage


def _add_synthetic(p: argparse.ArgumentParser, required: bool) -> None:
    """--synthetic and --ratio: which sample folder, and how many of its pairs per real training pair."""
    p.add_argument("--synthetic", type=Path, required=required, default=None,
                   help="sample folder (images/, masks/, manifest.json)")
    p.add_argument("--ratio", type=finite, required=required, default=None,
                   help="synthetic pairs per real training pair" + ("" if required else " (0 = real only)"))


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "evaluate", cmd_evaluate, data_flag="--data",
                help="train a segmenter on real + synthetic pairs and score it on the test split")
    _add_synthetic(p, required=False)
    add_usage_args(p)
    p.add_argument("--model", choices=list(MODELS), default=None, help="segmentation model")
    p.add_argument("--seeds", type=_seeds, default=None, help="training seeds, e.g. 0,1,2")
    p.add_argument("--negatives", type=int, default=None,
                   help="add this many defect-free images (all background) to each seed's training set")
    p.add_argument("--test-split", default=None,
                   help="split whose stems are scored (default: test); use val for every choice, test once at the end")
    p.add_argument("--test-list", default=None, help="file of exact test stems instead of a split")
    p.add_argument("--baseline", type=Path, default=None, help="ratio-0 results.json of the same protocol: adds the paired gain")
    p.add_argument("--config", type=Path, default=None, help="YAML evaluation config (e.g. configs/seg_neu64.yaml)")
    add_set(p, "the evaluation config", "seg.steps=300")
    add_device(p)
    add_out(p, "output folder (new, or an unfinished evaluation to continue)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Train a segmentation model on the real training selection plus RATIO synthetic pairs per real pair, for
    each seed, and score it on the held-out test split. Writes OUT/results.json and OUT/config.yaml."""
    cfg = load_config(EvalConfig, args.config, args.set)
    for flag, key in (("ratio", "ratio"), ("seeds", "seeds"), ("test_split", "test_split"), ("test_list", "test_list"),
                      ("negatives", "negatives")):
        if getattr(args, flag) is not None:
            setattr(cfg, key, getattr(args, flag))
    if args.model is not None:
        cfg.seg.model = args.model
    cfg.usage = usage_from_args(args, cfg.usage)
    cfg.check()  # the flags above override checked config values: check them the same way
    dev = device(args)
    sel = selection(args)
    ds, train = sel.select()
    timer = Timer()
    with timer.phase("evaluate", seeds=len(cfg.seeds)):
        results = evaluate_into(args.out, ds, train, cfg, synthetic=args.synthetic, baseline=args.baseline, device=dev,
                                overwrite=args.overwrite, selection=sel.options())
    out = Path(args.out)
    agg = results["aggregate"]
    miou_all, miou_defect = (pct_stat(agg[k], missing="undefined") for k in ("miou_all", "miou_defect"))
    print(f"mIoU all {miou_all}, defect {miou_defect} (%, over {len(cfg.seeds)} seeds) -> {out / 'results.json'}")
    if results["paired_gain"]:
        g = results["paired_gain"]["miou_defect"]
        print(f"paired gain (defect mIoU) over the baseline: {100 * g['mean']:+.1f} points"
              + (f" [{100 * g['ci_low']:+.1f}, {100 * g['ci_high']:+.1f}]" if g["ci_low"] is not None else ""))
    finish(out, timer, f"defectgen evaluate: {out.name}", args)
    return 0


def _add_mix(sub: argparse._SubParsersAction) -> None:
    from defectgen.data.layouts import LAYOUTS

    p = command(sub, "mix", cmd_mix, data_flag="--data",
                help="real + synthetic pairs at a ratio, written as one data set (mmseg, voc or defectgen layout)")
    _add_synthetic(p, required=True)
    p.add_argument("--mix-seed", type=seed, default=0, help="seed of the synthetic draw")
    p.add_argument("--layout", choices=LAYOUTS, default="mmseg")
    p.add_argument("--test-split", default="test", help="split of the real test pairs (written when the data has splits)")
    p.add_argument("--no-balance", dest="balanced", action="store_false", help="do not balance synthetic pairs over classes")
    add_out(p)


def cmd_mix(args: argparse.Namespace) -> int:
    """Write the real training selection plus RATIO synthetic pairs per real pair (drawn from --mix-seed) as split
    'train', and the real test pairs as the test split, in a layout segmentation code reads; OUT/manifest.json says
    where every pair came from."""
    from defectgen.data.layouts import mix_dataset
    from defectgen.seg.evaluate import test_records
    from defectgen.data.samples import open_synthetic

    ds, train = selection(args).select()
    test = test_records(ds, train, args.test_split)[0] if ds.splits else []
    syn = open_synthetic(args.synthetic)
    refuse_existing(args.out, args.overwrite)
    timer = Timer()
    with timer.phase("mix"):
        m = mix_dataset(ds, train, test, syn, args.ratio, args.mix_seed, args.layout, args.out, args.balanced,
                        args.test_split)
    print(f"{m['num_real']} real + {m['num_synthetic']} synthetic training pairs, {len(test)} real test pairs "
          f"-> {args.out} ({args.layout})")
    print(timer.line())
    return 0


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "ablate", cmd_ablate, help="the grid sources x ratios x models x seeds, resumable")
    p.add_argument("--config", type=Path, required=True, help="YAML ablation config (e.g. experiments/neu64/ablate_neu64.yaml)")
    add_set(p, "the ablation config", "seeds=[0,1]")
    add_usage_args(p)
    add_device(p)
    add_out(p, "output folder (new, or an earlier ablation to resume)")


def cmd_ablate(args: argparse.Namespace) -> int:
    """Run every (model, source, ratio, seed) cell of the config's grid; finished cells in OUT/cells/ are not
    recomputed. Writes OUT/results.csv, OUT/summary.csv, OUT/miou_vs_ratio.png and OUT/report.md."""
    cfg = load_config(AblateConfig, args.config, args.set)
    if any(getattr(args, k) is not None for k in ("usage", "synthetic_weight", "pretrain_fraction")):
        if len(cfg.usages) != 1:
            raise ConfigError("--usage/--synthetic-weight/--pretrain-fraction set one usage mode; the config sweeps "
                              f"{len(cfg.usages)} (key 'usages'): change that key instead")
        cfg.usages = [usage_from_args(args, cfg.usages[0])]
    timer = Timer()
    with timer.phase("ablate") as phase:
        cells = run_ablation(cfg, args.out, device=device(args), overwrite=args.overwrite)
        phase["cells"] = len(cells)
    print(summary_markdown(summarize(cfg, cells)))
    print(f"tables: {args.out / 'report.md'}")
    finish(args.out, timer, f"defectgen ablate: {args.out.name}", args)
    return 0


def _add_copypaste(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "copypaste", cmd_copypaste, data_flag="--data", help="copy-paste baseline pairs in the sample layout")
    p.add_argument("--num", type=int, required=True, help="number of pairs to write")
    p.add_argument("--size", type=int, default=64,
                   help="side of the written pairs in pixels (default 64); with --full-size, of each pasted window")
    p.add_argument("--full-size", action="store_true",
                   help="keep the images at their own size and paste each defect as a --size window, placed like "
                   "Defect-Gen's full-size pairs (on the target's background, windows apart)")
    p.add_argument("--defects-per-image", type=int, default=None, metavar="K",
                   help="--full-size: defects pasted into each image (default 1)")
    p.add_argument("--paste-seed", type=seed, default=0, help="seed of the cut/paste draws (pair i depends on it and i only)")
    p.add_argument("--no-balance", dest="balanced", action="store_false", help="do not cycle through the defect classes")
    add_out(p)


def cmd_copypaste(args: argparse.Namespace) -> int:
    """Cut defect regions by their masks from the selected real training images and paste them onto other selected
    training images. Writes OUT/images/, OUT/masks/ and OUT/manifest.json like `defectgen sample`."""
    positive(args, "num", most=MAX_PAIRS)
    positive(args, "size", least=8, most=MAX_SIDE)
    if args.defects_per_image is not None and not args.full_size:
        raise ConfigError("--defects-per-image applies to --full-size copy-paste")
    positive(args, "defects_per_image", most=MAX_PAIRS)
    ds, train = selection(args).select()
    refuse_existing(args.out, args.overwrite)
    timer = Timer()
    with timer.phase("copypaste", pairs=args.num):
        stems = [r.stem for r in train]
        if args.full_size:
            pairs = [load_pair(r, ds.class_map) for r in train]
            run_copypaste_full([p[0] for p in pairs], [p[1] for p in pairs], stems, ds.class_map, args.out, args.num,
                               args.size, args.paste_seed, args.defects_per_image or 1, args.balanced)
        else:
            images, masks = load_pairs(train, ds.class_map, args.size)
            run_copypaste(images, masks, stems, ds.class_map, args.out, args.num, args.paste_seed, args.balanced)
    print(f"{args.num} copy-paste pairs from {len(train)} real training pairs -> {args.out}")
    print(timer.line())
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for add in (_add_evaluate, _add_mix, _add_ablate, _add_copypaste):
        add(sub)
