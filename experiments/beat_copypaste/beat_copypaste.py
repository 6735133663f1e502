"""Issue 19's decisions and tables: harmonised copy-paste against plain copy-paste at native scale
(experiments/beat_copypaste/beat_copypaste.sh).

    python experiments/beat_copypaste/beat_copypaste.py choose-schedule --curve DIR [--curve DIR] --log L
    python experiments/beat_copypaste/beat_copypaste.py choose-strength --val DIR [--val DIR] --log L
    python experiments/beat_copypaste/beat_copypaste.py final --name N --test DIR --reference DIR --data D \
        --stems SELECTION_JSON --log L --out DIR

``choose-schedule`` reads real-only val curves of one baseline at different peak learning rates
(tools/seg_steps_curve.py) and logs ``seg.schedule[MODEL]`` = {lr, steps}: the fewest steps within the curves'
tolerance of the best mean on any of them, with whether that curve has flattened; it prints "LR STEPS".
``choose-strength`` picks the harmonised set (one per strength) with the largest mean val defect mIoU and logs
the choice with every set's val numbers, copy-paste's among them, before any test cell runs. ``final`` records
the one test scoring of the chosen set, checks that the reference rows (real only and copy-paste, scored on
test once by experiments/native/native.sh) were trained and scored with the same protocol (segmentation
settings, ratio, training and test images, seeds), and writes ``headline.{md,csv}`` with every row's gains
over real only and differences to copy-paste (paired by seed), ``val_decisions.md``, ``largest.png`` and the
chosen set's ``pairs_<row>.npz``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from defectgen.config import ConfigError
from defectgen.io import atomic_write_bytes, atomic_write_text
from defectgen.seg.headline import (COPY_PASTE, FULL_SIZE_ROWS, ablation_config as config, ci, decisions_md, drawn_files,
                                    gain, headline_csv, headline_md, headline_rows, largest_grid, merge_cells,
                                    per_class_md, pts, write_npz)
from defectgen.seg.curve import choose_schedule, flattened
from defectgen.seg.protocol import TEST_SPLITS, log_decision, log_final, read_protocol
from defectgen.seg.stats import mean_std

PASTE = "harmonised-paste-s"  # source names: harmonised-paste-s20 is strength 0.2 (--set keys split at dots)
BASELINE, ROWS = COPY_PASTE, FULL_SIZE_ROWS  # the native campaign's rows


def harmonised(source: str) -> bool:
    return source.startswith(PASTE)


def strength(source: str) -> float:
    return int(source[len(PASTE):]) / 100


def names(sources) -> dict[str, str]:
    return {s: f"harmonised copy-paste, strength {strength(s):g}, full size" if harmonised(s) else ROWS.get(s, s)
            for s in sources}


def cmd_choose_strength(args) -> int:
    """The harmonised set with the largest mean val defect mIoU (ties: the smaller strength, nearer the copy)."""
    first = config(args.val[0])
    for folder in args.val[1:]:
        if config(folder)["test_split"] != first["test_split"] or config(folder)["seeds"] != first["seeds"]:
            raise ConfigError(f"{folder}: another split or other seeds than {args.val[0]}")
    if first["test_split"] in TEST_SPLITS:
        raise ConfigError(f"{args.val[0]}: a test-split grid; strengths are chosen on val")
    got, seeds = merge_cells(args.val), sorted(first["seeds"])
    ratio = max(float(r) for r in first["ratios"])
    rows = {src: by_ratio[ratio] for src, by_ratio in got.items() if ratio in by_ratio}
    for src, mine in rows.items():
        if sorted(mine) != seeds:
            raise ConfigError(f"{args.val[0]}: the val grid is not finished ({src}: seeds {sorted(mine)} of {seeds})")
    if BASELINE not in rows or not any(map(harmonised, rows)):
        raise ConfigError(f"{args.val[0]}: the val grid needs copy-paste and at least one harmonised set")
    evidence = {}
    for src, mine in sorted(rows.items()):
        vals = [mine[s]["miou_defect"] for s in seeds]
        evidence[src] = {"miou_defect": mean_std(vals)["mean"], "seeds": len(seeds)}
        if src != BASELINE:
            g = gain(mine, rows[BASELINE])
            evidence[src] |= {"gain": g["mean"], "ci": [g["ci_low"], g["ci_high"]]}
    best = max((s for s in rows if harmonised(s)), key=lambda s: (evidence[s]["miou_defect"], -strength(s)))
    beats = evidence[best]["gain"] > 0
    log_decision(args.log, "harmonised_set", best, split=first["test_split"], evidence=evidence,
                 source=", ".join(str(Path(f) / "cells") for f in args.val),
                 rule="the harmonised copy-paste set (one per strength) with the largest mean val defect mIoU "
                      "(ties: the smaller strength); 'gain' is its paired val difference to plain copy-paste",
                 note=f"{best}: {pts(evidence[best]['gain'])} points over copy-paste on val"
                      + ("" if beats else " (no harmonised set beat copy-paste on val; the best is still scored on test)"))
    print(best)
    return 0


def read_curve(folder: Path) -> dict:
    path = folder / "curve.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not a steps curve ({err})") from err


def cmd_choose_schedule(args) -> int:
    """The (peak lr, steps) of the fewest steps within tolerance of the best real-only val mean over all curves."""
    curves = [read_curve(folder) for folder in args.curve]
    metric, tol = curves[0]["metric"], curves[0]["tolerance"]
    if any((c["metric"], c["tolerance"]) != (metric, tol) for c in curves):
        raise ConfigError(f"{args.curve}: the curves use different metrics or tolerances")
    curve, steps = choose_schedule(curves, metric, tol)
    lr = curve["config"]["seg"]["lr"]
    flat = len(curve["points"]) > 1 and flattened(curve["points"], metric, tol)
    evidence = {f"lr {c['config']['seg']['lr']:g}, {p['steps']} steps": p[metric]["mean"] for c in curves for p in c["points"]}
    log_decision(args.log, f"seg.schedule[{curve['model']}]", {"lr": lr, "steps": steps}, split=curve["config"]["test_split"],
                 rule=f"fewest steps whose mean {metric} is within {100 * tol:g} points of the best mean over every "
                      "learning rate's curve (equal steps: the higher mean)",
                 evidence=evidence, source=", ".join(str(f / "curve.json") for f in args.curve),
                 note=f"real only; the chosen curve has {'' if flat else 'not '}flattened "
                      f"(its last point {'gains no more' if flat else 'still gains more'} than {100 * tol:g} points)")
    print(f"{lr:g} {steps}")
    return 0


def check_same_protocol(test: Path, ref: Path) -> None:
    """The reference rows count only if trained and scored exactly like the new ones."""
    a, b = config(test), config(ref)
    for key in ("seg", "models", "balanced", "detect_min_area", "test_split", "usages"):
        if a.get(key) != b.get(key):
            raise ConfigError(f"{test}: config key '{key}' differs from the reference {ref} ({a.get(key)} vs {b.get(key)})")
    for key in ("seeds", "ratios"):  # every new cell has a reference cell of its seed and ratio to pair with
        if not set(a[key]) <= set(b[key]):
            raise ConfigError(f"{test}: {key} {a[key]} not all in the reference {ref} ({b[key]})")
    sa, sb = (json.loads((Path(f) / "selection.json").read_text()) for f in (test, ref))
    for key in ("train_stems", "test_stems"):
        if sa[key] != sb[key]:
            raise ConfigError(f"{test}: {key} differ from the reference {ref}")


def verdict(rows: list[dict]) -> str:
    """The issue's target, read off the table: >= +2 over copy-paste with the interval above 0, >= +3 over real."""
    lines = []
    for r in rows:
        if not harmonised(r["row"]):
            continue
        d, g = r["minus_copy_paste"], r["gain"]
        met = d["mean"] >= 0.02 and (d["ci_low"] or 0) > 0 and g["mean"] >= 0.03
        lines.append(f"- {r['name']}: {ci(g)} over real only, {ci(d)} over copy-paste: target "
                     f"(>= +2 over copy-paste, interval above 0, >= +3 over real) **{'met' if met else 'not met'}**.")
    return "\n".join(lines) + "\n"


def cmd_final(args) -> int:
    check_same_protocol(args.test, args.reference)
    cfg = config(args.test)
    if cfg.get("test_split") != "test":
        raise ConfigError(f"{args.test}: not a test-split ablation")
    what = f"{args.name} harmonised copy-paste, {cfg['models'][0]}"
    if not any(e.get("kind") == "final" and e.get("what") == what for e in read_protocol(args.log)):
        log_final(args.log, what, split="test", results=str(Path(args.test) / "cells"),
                  note=f"scored once with the val-chosen set; real only and copy-paste rows: {args.reference} "
                       "(scored once by experiments/native/native.sh with the same protocol)")
    got = merge_cells([args.reference, args.test])
    both = {**cfg, "sources": {**config(args.reference)["sources"], **cfg["sources"]}}
    rows = headline_rows(got, both, names(got), versus=BASELINE, compared=lambda s: s != BASELINE, order=list(ROWS))
    classes = list(rows[0]["per_class_iou"])
    text = (f"# {args.name}: the one test scoring\n\nReal only, copy-paste and Defect-Gen rows from `{args.reference}` "
            f"(experiments/native/native.sh); harmonised copy-paste from `{args.test}`. Same segmentation settings, "
            "training and test images and seeds (checked).\n\n" + headline_md(rows, classes)
            + "\nPer-class IoU gains over real only (points, paired by seed):\n\n" + per_class_md(rows, classes)
            + "\nThe issue's target:\n\n" + verdict(rows))
    out = Path(args.out)
    atomic_write_text(out / "headline.md", text)
    atomic_write_text(out / "headline.csv", headline_csv(rows))
    atomic_write_text(out / "val_decisions.md", f"# Protocol log, in order ({args.log})\n\n" + decisions_md(args.log))
    stems = json.loads(Path(args.stems).read_text())["stems"]
    for src in cfg["sources"]:
        folder = Path(cfg["sources"][src])
        size = write_npz(folder, drawn_files([args.test], src), out / f"pairs_{src}.npz")
        atomic_write_bytes(out / f"largest_{src}.png", largest_grid(folder, Path(args.data), stems))
        print(f"pairs_{src}.npz: {size} bytes")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("choose-schedule")
    s.add_argument("--curve", type=Path, action="append", required=True, help="a tools/seg_steps_curve.py output folder")
    s.add_argument("--log", type=Path, required=True)
    s = sub.add_parser("choose-strength")
    s.add_argument("--val", type=Path, action="append", required=True)
    s.add_argument("--log", type=Path, required=True)
    s = sub.add_parser("final")
    s.add_argument("--name", required=True)
    s.add_argument("--test", type=Path, required=True)
    s.add_argument("--reference", type=Path, required=True, help="the native campaign's test ablation of the same data")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--stems", type=Path, required=True, help="the generator's selection.json (largest real defects)")
    s.add_argument("--log", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        return {"choose-schedule": cmd_choose_schedule, "choose-strength": cmd_choose_strength, "final": cmd_final}[args.cmd](args)
    except (ConfigError, OSError) as err:  # OSError: a missing or unreadable file
        print(f"beat_copypaste: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
