"""A campaign's one test scoring, read off its ablation folders: rows, paired gains, tables and the pairs behind them.

Campaign scripts (experiments/native, experiments/beat_copypaste) score the test split once with
``defectgen ablate``; this module turns the finished cells of one or more ablation folders into the
headline: one row per (source, ratio) with defect mIoU, per-class IoU, the gain over real only and the
difference to a baseline source, paired by seed with a t-interval; and it keeps the synthetic pairs a
row trained on as small ``.npz`` files so anyone can re-score them.

    got = merge_cells([folder_a, folder_b])               # source -> ratio -> seed -> metrics
    rows = headline_rows(got, ablation_config(folder_a), names={"copy-paste": "copy-paste"},
                         versus="copy-paste", compared=lambda src: src != "copy-paste")
    text = headline_md(rows, classes=list(rows[0]["per_class_iou"]))
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from PIL import Image

from defectgen.io import atomic_write_bytes
from defectgen.seg.protocol import read_protocol
from defectgen.seg.stats import mean_std, paired_gain
from defectgen.tables import csv_text

REAL = "real"
COPY_PASTE = "copy-paste"
FULL_SIZE_ROWS = {  # the full-size campaigns' ablation source names -> what the row is, in table order
    REAL: "real only",
    COPY_PASTE: "copy-paste, full size",
    "defectgen-train-masks": "Defect-Gen into training images, training masks, full size",
    "defectgen-model-masks": "Defect-Gen into training images, model-chosen masks, full size",
}
MAX_NPZ_BYTES = 2_000_000  # the repository's limit per tracked file

Cells = dict[str, dict[float, dict[int, dict]]]


def ablation_cells(folder: str | Path) -> Cells:
    """source -> ratio -> seed -> metrics of an ablation folder's finished cells."""
    out: Cells = {}
    for path in sorted((Path(folder) / "cells").glob("*.json")):
        c = json.loads(path.read_text())
        out.setdefault(c["cell"]["source"], {}).setdefault(float(c["cell"]["ratio"]), {})[c["seed"]] = c["metrics"]
    return out


def merge_cells(folders: list[str | Path]) -> Cells:
    """The cells of several folders of one protocol (e.g. seeds or sources run side by side), later folders last."""
    got: Cells = {}
    for folder in folders:
        for src, by_ratio in ablation_cells(folder).items():
            for ratio, by_seed in by_ratio.items():
                got.setdefault(src, {}).setdefault(ratio, {}).update(by_seed)
    return got


def ablation_config(folder: str | Path) -> dict[str, Any]:
    return yaml.safe_load((Path(folder) / "config.yaml").read_text())


def gain(mine: dict[int, dict], base: dict[int, dict], key: str = "miou_defect") -> dict[str, Any]:
    """``mine - base`` of ``key``, paired by seed (the seeds both have), with a t-interval."""
    seeds = sorted(set(mine) & set(base))
    return {**paired_gain([mine[s][key] for s in seeds], [base[s][key] for s in seeds]), "seeds": seeds}


def class_gain(mine: dict[int, dict], base: dict[int, dict], name: str) -> dict[str, Any]:
    """The paired gain of one class's IoU (seeds where either side leaves it undefined are dropped)."""
    seeds = [s for s in sorted(set(mine) & set(base))
             if mine[s]["per_class"][name]["iou"] is not None and base[s]["per_class"][name]["iou"] is not None]
    return paired_gain([mine[s]["per_class"][name]["iou"] for s in seeds], [base[s]["per_class"][name]["iou"] for s in seeds])


def pts(v: float | None, sign: bool = True) -> str:
    """A fraction as points (per cent, one decimal), signed by default; ``–`` when undefined."""
    return "–" if v is None else (f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}")


def ci(g: dict[str, Any]) -> str:
    """A paired gain as ``+1.2 [-0.3, +2.7]``."""
    lo = "" if g["ci_low"] is None else f" [{pts(g['ci_low'])}, {pts(g['ci_high'])}]"
    return pts(g["mean"]) + lo


def headline_rows(got: Cells, cfg: dict[str, Any], names: dict[str, str], versus: str,
                  compared: Callable[[str], bool], order: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per (source, ratio) of ``got`` (which holds the real-only cells at ratio 0): means, per-class IoU,
    the gain over real only and, for sources where ``compared(source)``, the difference to ``versus`` at the same
    ratio. ``names`` names the rows (default: the source); ``order`` orders them (then by name and ratio)."""
    if REAL not in got or 0.0 not in got[REAL]:
        raise ValueError("the headline needs the real-only cells (ratio 0)")
    real = got[REAL][0.0]
    order = order or [REAL, versus]
    rows = []
    for src, by_ratio in got.items():
        for ratio, mine in sorted(by_ratio.items()):
            per_class = {n: mean_std([m["per_class"][n]["iou"] for m in mine.values()])["mean"]
                         for n in next(iter(mine.values()))["per_class"]
                         if n != "background" and all(m["per_class"][n]["iou"] is not None for m in mine.values())}
            row = {"model": cfg["models"][0], "row": src, "name": names.get(src, src), "ratio": ratio,
                   "seeds": len(mine), "steps": cfg["seg"]["steps"], "synthetic_folder": cfg["sources"].get(src, ""),
                   "miou_defect": mean_std([m["miou_defect"] for m in mine.values()]),
                   "miou_all": mean_std([m["miou_all"] for m in mine.values()])["mean"], "per_class_iou": per_class}
            if src != REAL:
                row["gain"] = gain(mine, real)
                row["per_class_gain"] = {n: class_gain(mine, real, n) for n in per_class}
            if src != REAL and compared(src) and ratio in got.get(versus, {}):
                row["minus_copy_paste"] = gain(mine, got[versus][ratio])
            rows.append(row)
    rows.sort(key=lambda r: (r["model"], order.index(r["row"]) if r["row"] in order else len(order), r["row"], r["ratio"]))
    return rows


def headline_md(rows: list[dict[str, Any]], classes: list[str]) -> str:
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


def per_class_md(rows: list[dict[str, Any]], classes: list[str]) -> str:
    lines = ["| model | training data | ratio | " + " | ".join(f"gain IoU {c}" for c in classes) + " |",
             "|" + "---|" * (3 + len(classes))]
    for r in rows:
        if "per_class_gain" in r:
            lines.append(f"| {r['model']} | {r['name']} | {r['ratio']:g} | "
                         + " | ".join(ci(r["per_class_gain"][c]) if c in r["per_class_gain"] else "–" for c in classes) + " |")
    return "\n".join(lines) + "\n"


def headline_csv(rows: list[dict[str, Any]]) -> str:
    fields = ["model", "row", "name", "ratio", "seeds", "steps", "miou_defect", "miou_defect_std", "miou_all", "gain",
              "gain_ci_low", "gain_ci_high", "minus_copy_paste", "minus_copy_paste_ci_low", "minus_copy_paste_ci_high",
              "synthetic_folder"]
    out = []
    for r in rows:
        g, d = r.get("gain", {}), r.get("minus_copy_paste", {})
        out.append({"model": r["model"], "row": r["row"], "name": r["name"], "ratio": r["ratio"], "seeds": r["seeds"],
                    "steps": r["steps"], "miou_defect": r["miou_defect"]["mean"], "miou_defect_std": r["miou_defect"]["std"],
                    "miou_all": r["miou_all"], "gain": g.get("mean"), "gain_ci_low": g.get("ci_low"),
                    "gain_ci_high": g.get("ci_high"), "minus_copy_paste": d.get("mean"),
                    "minus_copy_paste_ci_low": d.get("ci_low"), "minus_copy_paste_ci_high": d.get("ci_high"),
                    "synthetic_folder": r["synthetic_folder"]})
    return csv_text(out, fields)


def decisions_md(log: str | Path) -> str:
    """A protocol log, readable: each decision with its evidence (gains, values, or mIoU with a paired difference),
    then each test scoring."""
    lines = []
    for e in read_protocol(log):
        if e.get("kind") != "decision":
            lines.append(f"- **test scored once**: {e['what']} ({e['time']}) -> `{e['results']}`")
            continue
        ev = ", ".join(f"{k}: {_evidence(v)}" for k, v in e["evidence"].items()) or "none (fixed)"
        lines.append(f"- **{e['decision']} = {e['chosen']}** on {e['split']} ({e['rule']}). Evidence: {ev}. {e['note']}")
    return "\n".join(lines) + "\n"


def _evidence(v: Any) -> str:
    if isinstance(v, dict) and "miou_defect" in v:
        return pts(v["miou_defect"], False) + (f" ({pts(v['gain'])} paired)" if v.get("gain") is not None else "")
    if isinstance(v, dict):
        return pts(v["gain"])
    return pts(v, False)


def drawn_files(tests: list[str | Path], source: str) -> list[str]:
    """The synthetic files the test rows of ``source`` trained on, over every seed and model."""
    files: set[str] = set()
    for folder in tests:
        for path in (Path(folder) / "cells").glob(f"*__{source}__*.json"):
            files |= set(json.loads(path.read_text())["synthetic_files"])
    return sorted(files)


def write_npz(folder: str | Path, files: list[str], out: str | Path) -> int:
    """The drawn pairs of a sample folder at full size; grey images (three equal channels) stored as one channel.
    Over ``MAX_NPZ_BYTES`` the pairs are split evenly over ``<stem>_part<i>of<k>.npz`` files; returns the bytes written."""
    folder, out = Path(folder), Path(out)
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
    k = min(-(-len(whole) // (MAX_NPZ_BYTES * 3 // 4)), len(files))  # a part holds at least one pair
    parts = [packed(list(range(len(files)))[j::k]) for j in range(k)]
    for j, data in enumerate(parts, 1):
        atomic_write_bytes(out.with_name(f"{out.stem}_part{j}of{k}.npz"), data)
    return sum(map(len, parts))


def largest_grid(folder: str | Path, data: str | Path, stems: list[str], count: int = 8) -> bytes:
    """PNG: the ``count`` windows with the most new defect pixels beside the ``count`` largest real defects (the
    same window size, around each training mask's largest defect): are large regions painted as flat fills?"""
    from defectgen.data import load_pair, open_dataset
    from defectgen.pipelines.defectgen.windows import defect_box
    from defectgen.viz import overlay, panel_grid

    folder = Path(folder)
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
