"""The generation-quality commands: ``metrics`` and ``filter``.

``defectgen metrics``: generation quality of one synthetic folder against the real training subset.

    defectgen metrics --real ../shared/data/neu_seg --synthetic runs/gen/samples --out runs/gen/metrics
    defectgen metrics --real DATA --split train --shots 10 --synthetic SYN --out OUT --no-mask-agreement
    defectgen metrics --real DATA --synthetic SYN --out OUT --feature-extractor inception-v3-compat \\
        --inception-weights weights-inception-2015-12-05-6726825d.pth

The real subset defaults to the synthetic manifest's ``train_stems`` (the images the generator
trained on); ``--shots/--seed/--list/--split`` choose it explicitly instead.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from defectgen.cli.common import add_device, add_out, add_set, command, device, finish, finite, seed, selection
from defectgen.quality.features import FEATURE_EXTRACTORS


def _add_metrics(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "metrics", cmd_metrics, data_flag="--real", description=__doc__,
                help="FID/KID, memorisation, diversity, mask agreement and class statistics of a synthetic set",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", type=Path, required=True, help="folder written by 'defectgen sample'")
    add_out(p)
    p.add_argument("--config", type=Path, default=None, help="YAML with MetricsConfig fields")
    add_set(p, "the MetricsConfig", "kid_subsets=10")
    p.add_argument("--feature-extractor", choices=FEATURE_EXTRACTORS, default=None,
                   help="features for FID/KID (default efficientnet-lite0: offline, not comparable to published FID)")
    p.add_argument("--inception-weights", type=Path, default=None,
                   help="local torch-fidelity Inception-v3 weights file (used with inception-v3-compat)")
    p.add_argument("--size", type=int, default=None, help="compare size in pixels (default 64)")
    p.add_argument("--percentile", type=finite, default=None,
                   help="memorised: NN distance at or below this percentile of training LOO NN distances (default 5)")
    p.add_argument("--no-mask-agreement", action="store_true", help="skip training the real-data segmenter")
    p.add_argument("--seg-config", type=Path, default=None, help="YAML with SegConfig fields for the mask-agreement segmenter")
    p.add_argument("--seg-set", action="append", default=[], metavar="KEY=VALUE", help="override a SegConfig field")
    add_device(p)


def config_from_args(args: argparse.Namespace):
    """MetricsConfig from defaults, --config, --set, then the explicit flags."""
    from defectgen.config import ConfigError, load_config
    from defectgen.quality.compute import MetricsConfig

    cfg = load_config(MetricsConfig, args.config, args.set)
    extractor = args.feature_extractor
    if args.inception_weights is not None:
        if extractor not in (None, "inception-v3-compat"):
            raise ConfigError(f"--inception-weights is for inception-v3-compat, not --feature-extractor {extractor}")
        extractor = "inception-v3-compat"  # a weights file means Inception
    flags = {
        "feature_extractor": extractor,
        "inception_weights": None if args.inception_weights is None else str(args.inception_weights),
        "size": args.size,
        "memorisation_percentile": args.percentile,
        "device": device(args),
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    if args.no_mask_agreement:
        cfg = dataclasses.replace(cfg, mask_agreement=False)
    return cfg


def cmd_metrics(args: argparse.Namespace) -> int:
    """Data, config, output-exists and missing-weights errors propagate to ``defectgen.cli.main``."""
    from defectgen.config import ConfigError, load_config
    from defectgen.quality.compute import compute_metrics
    from defectgen.quality.features import FeatureExtractorError
    from defectgen.timing import Timer

    cfg = config_from_args(args)
    seg_cfg = None
    if cfg.mask_agreement:
        from defectgen.seg.train import SegConfig

        seg_cfg = load_config(SegConfig, args.seg_config, args.seg_set)
    timer = Timer()
    try:
        with timer.phase("metrics"):
            m = compute_metrics(args.synthetic, selection(args), cfg, out=args.out, overwrite=args.overwrite,
                                seg_config=seg_cfg)
    except FeatureExtractorError as err:  # missing or wrong weights: a user error like any other (exit 2)
        raise ConfigError(str(err)) from err
    fk = m["fid_kid"]
    print(f"FID {fk['fid']:.3f}  KID {fk['kid_mean']:.5f} ± {fk['kid_std']:.5f}  [{m['feature_extractor']['note']}]")
    for space in ("pixel", "feature"):
        s = m["memorisation"][space]
        print(f"memorised ({space}): {s['n_memorised']}/{m['counts']['n_generated']}")
    print(f"wrote {args.out / 'metrics.json'}, metrics.md, nearest_neighbours.png, class_stats.png")
    finish(args.out, timer, f"defectgen metrics: {args.out.name}", args)
    return 0


def _add_filter(sub: argparse._SubParsersAction) -> None:
    from defectgen.quality import filtering

    p = command(sub, "filter", cmd_filter, data_flag="--real", description=filtering.__doc__,
                help="keep generated pairs whose mask a segmenter trained on the real subset agrees with",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", type=Path, required=True, help="folder written by 'defectgen sample'")
    add_out(p, "new sample folder for the kept pairs")
    p.add_argument("--min-agreement", type=finite, default=0.5, help="keep pairs with at least this IoU (default 0.5)")
    p.add_argument("--per-class", type=int, default=None, metavar="N",
                   help="keep at most the N best-agreeing pairs of each defect class (a balanced top-up from an oversampled set)")
    p.add_argument("--seg-config", type=Path, default=None, help="YAML with SegConfig fields for the segmenter")
    p.add_argument("--seg-set", action="append", default=[], metavar="KEY=VALUE", help="override a SegConfig field")
    p.add_argument("--seg-seed", type=seed, default=0, help="seed of the segmenter's training")
    add_device(p)


def cmd_filter(args: argparse.Namespace) -> int:
    """Keep the pairs of --synthetic whose mask the real-data segmenter agrees with; writes OUT like `sample`."""
    from defectgen.config import load_config
    from defectgen.quality.filtering import filter_by_real_segmenter
    from defectgen.seg.train import SegConfig
    from defectgen.timing import Timer

    timer = Timer()
    seg_cfg = load_config(SegConfig, args.seg_config, args.seg_set)
    summary = filter_by_real_segmenter(args.synthetic, args.out, selection(args), seg_cfg, args.seg_seed,
                                       args.min_agreement, args.per_class, device(args), args.overwrite)
    print(f"kept {summary['n_kept']}/{summary['n_in']} pairs with agreement >= {args.min_agreement} "
          f"(median score {summary['score_quantiles']['0.5']:.2f}) -> {args.out}")
    print("masks with each class, in -> kept: " + ", ".join(
        f"{n} {summary['masks_with_class']['in'][n]} -> {summary['masks_with_class']['kept'][n]}"
        for n in summary["masks_with_class"]["in"]))
    if args.per_class is not None:
        print("kept per class (most pixels), at most {}: ".format(args.per_class) + ", ".join(
            f"{n} {k}" for n, k in summary["kept_by_dominant_class"].items()))
    timer.add("filter", timer.total, pairs=summary["n_in"])
    print(timer.line())
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_metrics(sub)
    _add_filter(sub)
