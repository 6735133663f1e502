"""Issue 18's decisions and tables: full-size pairs measured at native scale (experiments/native/native.sh).

Every choice is logged in the data set's protocol log (``defectgen.seg.protocol``) with the val numbers
it was made from, before any test cell runs; the test split is scored once.

    python experiments/native/native.py steps --log L --model M                  # the seg.steps chosen on val
    python experiments/native/native.py choose-ratio --val DIR --log L           # one ratio for every row, from the Defect-Gen rows
    python experiments/native/native.py adopt --from L0 --decision NAME ... --log L   # reuse val decisions of another campaign
    python experiments/native/native.py fix --decision NAME --value V --why TEXT --log L   # a setting fixed before any scoring
    python experiments/native/native.py final --name crackforest --test DIR [--test DIR] [--val DIR] --data D --log L --out DIR \
        [--reference-64 DIR ...]

``final`` records the test scoring (once per model), writes ``headline.{csv,md}`` (IoU of each defect class,
defect mIoU, mIoU with background, gains over real only and differences to copy-paste, paired by seed),
``val_decisions.md``, ``largest.png`` (the largest painted windows beside the largest real defects) and
one ``pairs_<row>.npz`` per synthetic set (full-size uint8 images and masks, the pairs the rows drew).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from defectgen.config import ConfigError
from defectgen.io import atomic_write_bytes, atomic_write_text
from defectgen.seg.headline import (COPY_PASTE, FULL_SIZE_ROWS, ablation_cells as cells, ablation_config as config,
                                    ci, decisions_md, drawn_files, gain, headline_csv, headline_md, headline_rows,
                                    largest_grid, per_class_md, pts, write_npz)
from defectgen.seg.protocol import log_decision, log_final, read_decision, read_protocol

ROWS = FULL_SIZE_ROWS
DEFECTGEN = ("defectgen-train-masks", "defectgen-model-masks")
BASELINE = COPY_PASTE


def decision(log: Path, name: str) -> dict:
    try:
        return read_decision(log, name)
    except ConfigError as err:
        raise ConfigError(f"{err} (run the earlier stage of experiments/native/native.sh)") from None


def cmd_steps(args) -> int:
    print(int(decision(args.log, f"seg.steps[{args.model}]")["chosen"]))
    return 0


def cmd_choose_ratio(args) -> int:
    """One ratio for every row: the ratio of the Defect-Gen set with the largest mean paired val gain in defect
    mIoU over real only (ties: the smaller ratio). Copy-paste is scored at the same ratio (like with like)."""
    got: dict[str, dict[float, dict[int, dict]]] = {}
    for folder in args.val:  # the val grids of one protocol, split over folders to run side by side
        if config(folder)["test_split"] != config(args.val[0])["test_split"] or config(folder)["seeds"] != config(args.val[0])["seeds"]:
            raise ConfigError(f"{folder}: another split or other seeds than {args.val[0]}")
        for src, by_ratio in cells(folder).items():
            got.setdefault(src, {}).update(by_ratio)
    real = got.get("real", {}).get(0.0, {})
    ratios = sorted({float(r) for f in args.val for r in config(f)["ratios"] if float(r) > 0})
    seeds = config(args.val[0])["seeds"]
    evidence, best = {}, None
    for src in [*DEFECTGEN, *([BASELINE] if BASELINE in got else [])]:
        for r in ratios:
            mine = got.get(src, {}).get(r, {})
            if sorted(mine) != sorted(seeds) or sorted(real) != sorted(seeds):
                raise ConfigError(f"{args.val}: the val grid is not finished ({src}, ratio {r:g})")
            g = gain(mine, real)
            evidence[f"{src}, r{r:g}"] = {"gain": g["mean"], "ci": [g["ci_low"], g["ci_high"]], "seeds": len(seeds)}
            if src in DEFECTGEN and (best is None or (g["mean"], -r) > (best[0], -best[2])):
                best = (g["mean"], src, r)
    log_decision(args.log, "ratio", best[2], split=config(args.val[0])["test_split"], evidence=evidence,
                 source=", ".join(str(Path(f) / "cells") for f in args.val),
                 rule="the ratio of the Defect-Gen set with the largest mean paired val gain in defect mIoU over real "
                      "only (ties: the smaller ratio); every row of the test scoring uses it",
                 note=f"best Defect-Gen set on val: {best[1]} ({pts(best[0])} points); both Defect-Gen sets are scored")
    print(f"{best[2]:g}")
    return 0


def cmd_adopt(args) -> int:
    """Copy val decisions of another campaign's log (the 64-px protocol) into this one, saying where they come from."""
    for name in args.decision:
        e = decision(args.source, name)
        log_decision(args.log, name, e["chosen"], split=e["split"], rule=e["rule"], evidence=e["evidence"],
                     source=str(args.source), note=f"adopted from {args.source} ({e['time']}); {e['note']}".strip("; "))
        print(f"{name} = {e['chosen']}")
    return 0


def cmd_fix(args) -> int:
    """A setting fixed in advance, not tuned (e.g. when the val grid does not fit the compute budget); logged as such."""
    try:
        value: float | str = float(args.value)
    except ValueError:
        value = args.value
    log_decision(args.log, args.decision, value, split="none", evidence={}, source=args.script,
                 rule="fixed before any scoring, not tuned on any split", note=args.why)
    print(args.value)
    return 0


# ---------------------------------------------------------------- the one test scoring


def headline(tests: list[Path]) -> list[dict]:
    rows = []
    for folder in tests:
        rows += headline_rows(cells(folder), config(folder), ROWS, versus=BASELINE, compared=lambda s: s in DEFECTGEN,
                              order=list(ROWS))
    return rows


def reference_md(rows: list[dict], refs: list[Path]) -> str:
    """The same rows of the 64-px protocol (the NEU headline), beside the native ones, by model."""
    lines = ["| model | training data | defect mIoU at 64 px (squashed; scored at 64 px) | gain | "
             "defect mIoU native (crops; scored at 200 px) | gain |", "|---|---|---|---|---|---|"]
    ref_rows = {(r["model"], _kind(r["row"])): r for r in headline(refs)}
    for r in rows:
        ref = ref_rows.get((r["model"], _kind(r["row"])))
        if ref is None:
            continue
        lines.append(f"| {r['model']} | {r['name'].replace(', full size', '')} | {pts(ref['miou_defect']['mean'], False)} | "
                     f"{ci(ref['gain']) if 'gain' in ref else '–'} | {pts(r['miou_defect']['mean'], False)} | "
                     f"{ci(r['gain']) if 'gain' in r else '–'} |")
    return "\n".join(lines) + "\n"


def _kind(source: str) -> str:
    """The 64-px protocol's source names -> this campaign's (its Defect-Gen set is into-training with model masks)."""
    return "defectgen-model-masks" if source.startswith("defectgen") else source


def cmd_final(args) -> int:
    out = Path(args.out)
    for folder in args.test:
        cfg = config(folder)
        if cfg.get("test_split") != "test":
            raise ConfigError(f"{folder}: not a test-split ablation")
        what = f"{args.name} native headline, {cfg['models'][0]}"
        if not any(e.get("kind") == "final" and e.get("what") == what for e in read_protocol(args.log)):
            log_final(args.log, what, split="test", results=str(Path(folder) / "cells"),
                      note="scored once with the val-chosen settings; the ablation folder is resumable, never re-scored")
    rows = headline(args.test)
    classes = [c for c in next(iter(rows))["per_class_iou"]]
    text = f"# {args.name}: the one test scoring\n\n" + headline_md(rows, classes)
    text += "\nPer-class IoU gains over real only (points, paired by seed):\n\n" + per_class_md(rows, classes)
    if args.reference_64:
        text += "\nThe same rows in the 64-px protocol (experiments/neu_pay/results, squashed images, the same 30 training images, " \
                "seeds and test split):\n\n" + reference_md(rows, args.reference_64)
    atomic_write_text(out / "headline.md", text)
    atomic_write_text(out / "headline.csv", headline_csv(rows))
    atomic_write_text(out / "val_decisions.md", f"# Protocol log, in order ({args.log})\n\n" + decisions_md(args.log))
    stems = json.loads(Path(args.stems).read_text())["stems"] if args.stems else []
    sizes = {}
    for src in {r["row"] for r in rows if r["synthetic_folder"]}:
        folder = Path(next(r["synthetic_folder"] for r in rows if r["row"] == src))
        sizes[src] = write_npz(folder, drawn_files(args.test, src), out / f"pairs_{src}.npz")
        if src in DEFECTGEN and stems:
            atomic_write_bytes(out / f"largest_{src}.png", largest_grid(folder, Path(args.data), stems))
    print(text)
    print("npz sizes (bytes):", sizes)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("steps")
    s.add_argument("--log", type=Path, required=True)
    s.add_argument("--model", required=True)
    s = sub.add_parser("choose-ratio")
    s.add_argument("--val", type=Path, action="append", required=True)
    s.add_argument("--log", type=Path, required=True)
    s = sub.add_parser("adopt")
    s.add_argument("--from", dest="source", type=Path, required=True)
    s.add_argument("--decision", action="append", required=True)
    s.add_argument("--log", type=Path, required=True)
    s = sub.add_parser("fix")
    s.add_argument("--decision", required=True)
    s.add_argument("--value", required=True)
    s.add_argument("--why", required=True)
    s.add_argument("--script", default="experiments/native/native.sh", help="the campaign script that fixes it")
    s.add_argument("--log", type=Path, required=True)
    s = sub.add_parser("final")
    s.add_argument("--name", required=True)
    s.add_argument("--test", type=Path, action="append", required=True)
    s.add_argument("--reference-64", type=Path, action="append", default=[])
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--stems", type=Path, default=None, help="the generator's selection.json (largest real defects)")
    s.add_argument("--log", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        return {"steps": cmd_steps, "choose-ratio": cmd_choose_ratio, "adopt": cmd_adopt, "fix": cmd_fix, "final": cmd_final}[args.cmd](args)
    except ConfigError as err:
        print(f"native: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
