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
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from defectgen.config import ConfigError
from defectgen.io import atomic_write_bytes, atomic_write_text
from defectgen.seg.protocol import log_decision, log_final, read_decision, read_protocol
from defectgen.seg.stats import mean_std, paired_gain

ROWS = {  # ablation source name -> what the row is
    "real": "real only",
    "copy-paste": "copy-paste, full size",
    "defectgen-train-masks": "Defect-Gen into training images, training masks, full size",
    "defectgen-model-masks": "Defect-Gen into training images, model-chosen masks, full size",
}
DEFECTGEN = ("defectgen-train-masks", "defectgen-model-masks")
BASELINE = "copy-paste"


def cells(folder: Path) -> dict[str, dict[float, dict[int, dict]]]:
    """source -> ratio -> seed -> metrics of an ablation folder's finished cells."""
    out: dict[str, dict[float, dict[int, dict]]] = {}
    for path in sorted((Path(folder) / "cells").glob("*.json")):
        c = json.loads(path.read_text())
        out.setdefault(c["cell"]["source"], {}).setdefault(float(c["cell"]["ratio"]), {})[c["seed"]] = c["metrics"]
    return out


def config(folder: Path) -> dict:
    return yaml.safe_load((Path(folder) / "config.yaml").read_text())


def decision(log: Path, name: str) -> dict:
    try:
        return read_decision(log, name)
    except ConfigError as err:
        raise ConfigError(f"{err} (run the earlier stage of experiments/native/native.sh)") from None


def gain(mine: dict[int, dict], base: dict[int, dict], key: str = "miou_defect") -> dict:
    seeds = sorted(set(mine) & set(base))
    return {**paired_gain([mine[s][key] for s in seeds], [base[s][key] for s in seeds]), "seeds": seeds}


def pts(v: float | None, sign: bool = True) -> str:
    return "–" if v is None else (f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}")


def ci(g: dict) -> str:
    lo = "" if g["ci_low"] is None else f" [{pts(g['ci_low'])}, {pts(g['ci_high'])}]"
    return pts(g["mean"]) + lo


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
    log_decision(args.log, args.decision, value, split="none", evidence={}, source="experiments/native/native.sh",
                 rule="fixed before any scoring, not tuned on any split", note=args.why)
    print(args.value)
    return 0


# ---------------------------------------------------------------- the one test scoring


def headline(tests: list[Path]) -> list[dict]:
    rows = []
    for folder in tests:
        cfg, got = config(folder), cells(folder)
        real = got["real"][0.0]
        for src, by_ratio in got.items():
            for ratio, mine in sorted(by_ratio.items()):
                per_class = {n: mean_std([m["per_class"][n]["iou"] for m in mine.values()])["mean"]
                             for n in next(iter(mine.values()))["per_class"]
                             if n != "background" and all(m["per_class"][n]["iou"] is not None for m in mine.values())}
                row = {"model": cfg["models"][0], "row": src, "name": ROWS.get(src, src), "ratio": ratio,
                       "seeds": len(mine), "steps": cfg["seg"]["steps"],
                       "synthetic_folder": cfg["sources"].get(src, ""),
                       "miou_defect": mean_std([m["miou_defect"] for m in mine.values()]),
                       "miou_all": mean_std([m["miou_all"] for m in mine.values()])["mean"],
                       "per_class_iou": per_class}
                if src != "real":
                    row["gain"] = gain(mine, real)
                    row["per_class_gain"] = {n: _class_gain(mine, real, n) for n in per_class}
                if src in DEFECTGEN and BASELINE in got:
                    row["minus_copy_paste"] = gain(mine, got[BASELINE][ratio])
                rows.append(row)
    order = list(ROWS)
    rows.sort(key=lambda r: (r["model"], order.index(r["row"]) if r["row"] in order else 99, r["ratio"]))
    return rows


def _class_gain(mine: dict[int, dict], base: dict[int, dict], name: str) -> dict:
    seeds = [s for s in sorted(set(mine) & set(base))
             if mine[s]["per_class"][name]["iou"] is not None and base[s]["per_class"][name]["iou"] is not None]
    return paired_gain([mine[s]["per_class"][name]["iou"] for s in seeds], [base[s]["per_class"][name]["iou"] for s in seeds])


def headline_md(rows: list[dict], classes: list[str]) -> str:
    head = "| model (steps) | training data | ratio | seeds | defect mIoU | " + " | ".join(f"IoU {c}" for c in classes) \
        + " | mIoU with background | gain over real only [95% CI] | minus copy-paste [95% CI] |"
    lines = [head, "|" + "---|" * (8 + len(classes))]
    for r in rows:
        std = r["miou_defect"]["std"]
        ratio = "–" if not r["ratio"] else f"{r['ratio']:g}"
        lines.append(
            f"| {r['model']} ({r['steps']}) | {r['name']} | {ratio} | {r['seeds']} "
            f"| {pts(r['miou_defect']['mean'], False)}{'' if std is None else f' ± {100 * std:.1f}'} | "
            + " | ".join(pts(r["per_class_iou"].get(c), False) for c in classes)
            + f" | {pts(r['miou_all'], False)} | {ci(r['gain']) if 'gain' in r else '–'} "
            f"| {ci(r['minus_copy_paste']) if 'minus_copy_paste' in r else '–'} |")
    return "\n".join(lines) + "\n"


def per_class_md(rows: list[dict], classes: list[str]) -> str:
    lines = ["| model | training data | ratio | " + " | ".join(f"gain IoU {c}" for c in classes) + " |",
             "|" + "---|" * (3 + len(classes))]
    for r in rows:
        if "per_class_gain" in r:
            lines.append(f"| {r['model']} | {r['name']} | {r['ratio']:g} | "
                         + " | ".join(ci(r["per_class_gain"][c]) for c in classes) + " |")
    return "\n".join(lines) + "\n"


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


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["model", "row", "name", "ratio", "seeds", "steps", "miou_defect", "miou_defect_std", "miou_all", "gain",
              "gain_ci_low", "gain_ci_high", "minus_copy_paste", "minus_copy_paste_ci_low", "minus_copy_paste_ci_high",
              "synthetic_folder"]
    w = csv.DictWriter(buf, fields)
    w.writeheader()
    for r in rows:
        g, d = r.get("gain", {}), r.get("minus_copy_paste", {})
        w.writerow({"model": r["model"], "row": r["row"], "name": r["name"], "ratio": r["ratio"], "seeds": r["seeds"],
                    "steps": r["steps"], "miou_defect": r["miou_defect"]["mean"], "miou_defect_std": r["miou_defect"]["std"],
                    "miou_all": r["miou_all"], "gain": g.get("mean"), "gain_ci_low": g.get("ci_low"),
                    "gain_ci_high": g.get("ci_high"), "minus_copy_paste": d.get("mean"),
                    "minus_copy_paste_ci_low": d.get("ci_low"), "minus_copy_paste_ci_high": d.get("ci_high"),
                    "synthetic_folder": r["synthetic_folder"]})
    return buf.getvalue()


def decisions_md(log: Path) -> str:
    lines = []
    for e in read_protocol(log):
        if e.get("kind") == "decision":
            ev = ", ".join(f"{k}: {v['gain'] * 100:+.1f}" if isinstance(v, dict) else f"{k}: {100 * v:.1f}"
                           for k, v in e["evidence"].items())
            lines.append(f"- **{e['decision']} = {e['chosen']}** on {e['split']} ({e['rule']}). Evidence: {ev}. {e['note']}")
        else:
            lines.append(f"- **test scored once**: {e['what']} ({e['time']}) -> `{e['results']}`")
    return "\n".join(lines) + "\n"


def drawn_files(tests: list[Path], source: str) -> list[str]:
    """The synthetic files the test rows of ``source`` trained on, over every seed and model."""
    files: set[str] = set()
    for folder in tests:
        for path in (Path(folder) / "cells").glob(f"*__{source}__*.json"):
            files |= set(json.loads(path.read_text())["synthetic_files"])
    return sorted(files)


MAX_NPZ_BYTES = 2_000_000  # the repository's limit per tracked file


def write_npz(folder: Path, files: list[str], out: Path) -> int:
    """The drawn pairs of a sample folder at full size; grey images (three equal channels) stored as one channel.
    Over ``MAX_NPZ_BYTES`` the pairs are split evenly over ``<stem>_part<i>of<k>.npz`` files; returns the bytes written."""
    images = [np.asarray(Image.open(folder / "images" / f).convert("RGB")) for f in files]
    grey = all(np.array_equal(i[..., 0], i[..., 1]) and np.array_equal(i[..., 0], i[..., 2]) for i in images)
    masks = [np.asarray(Image.open(folder / "masks" / f)) for f in files]
    manifest = json.loads((folder / "manifest.json").read_text())
    windows = {s["file"]: s.get("windows", []) for s in manifest["samples"]}

    def packed(idx: list[int]) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, masks=np.stack([masks[i] for i in idx]), files=np.array([files[i] for i in idx]),
                            images=np.stack([images[i][..., 0] if grey else images[i] for i in idx]),
                            class_names=np.array(manifest["class_map"]["names"]),
                            windows_json=np.array(json.dumps({files[i]: windows.get(files[i], []) for i in idx})))
        return buf.getvalue()

    whole = packed(list(range(len(files))))
    for old in out.parent.glob(f"{out.stem}*.npz"):
        old.unlink()
    if len(whole) <= MAX_NPZ_BYTES:
        atomic_write_bytes(out, whole)
        return len(whole)
    k = -(-len(whole) // (MAX_NPZ_BYTES * 3 // 4))
    parts = [packed(list(range(len(files)))[j::k]) for j in range(k)]
    for j, data in enumerate(parts, 1):
        atomic_write_bytes(out.with_name(f"{out.stem}_part{j}of{k}.npz"), data)
    return sum(map(len, parts))


def largest_grid(folder: Path, data: Path, stems: list[str], count: int = 8) -> bytes:
    """The ``count`` windows with the most new defect pixels beside the ``count`` largest real defects (the
    same window size, around each training mask's largest defect): are large regions painted as flat fills?"""
    from defectgen.data import load_pair, open_dataset
    from defectgen.viz import overlay, panel_grid
    from defectgen.pipelines.defectgen.windows import defect_box

    manifest = json.loads((folder / "manifest.json").read_text())
    wins = sorted(((w["new_pixels"], s["file"], w) for s in manifest["samples"] for w in s.get("windows", [])),
                  key=lambda t: -t[0])[:count]
    painted = []
    for _, file, w in wins:
        img = np.asarray(Image.open(folder / "images" / file).convert("RGB"))
        mask = np.asarray(Image.open(folder / "masks" / file))
        box = np.s_[w["y"]:w["y"] + w["side"], w["x"]:w["x"] + w["side"]]
        painted.append([img[box], overlay(img[box], mask[box])])
    ds = open_dataset(data)
    pairs = sorted((load_pair(ds.by_stem(s), ds.class_map) for s in stems), key=lambda p: -int((p[1] > 0).sum()))
    side, rng, real = wins[0][2]["side"] if wins else 64, np.random.default_rng(0), []
    for img, mask in pairs[:count]:  # a window of the same size around a defect of each largest real mask
        box = defect_box(mask, tuple(ds.class_map.defect_ids), side, rng)
        real.append([img[box], overlay(img[box], mask[box])])
    rows = [a + b for a, b in zip(painted, real)]
    buf = io.BytesIO()
    panel_grid(rows, long_side=128, ncols=2, names=ds.class_map.names).save(buf, format="PNG")
    return buf.getvalue()


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
    atomic_write_text(out / "headline.csv", to_csv(rows))
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
