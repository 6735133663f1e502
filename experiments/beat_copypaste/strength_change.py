"""How far does harmonisation move a pasted defect? (issue 19, experiments/beat_copypaste)

For each strength, the harmonised set of the same seed (the same windows, the same pasted defects; sampled
with ``defectgen sample --into-training --mask-source paste`` when absent) is compared with the set at the
smallest strength (one denoising step: the copy, re-rendered once) inside the pasted masks, against the
defect's own contrast (the copy against the training image it was pasted into, inside the same mask). A
change far below the contrast at strength 1 (the window painted from pure noise, the mask given) means the
generator redraws the copied defect from its mask alone: it has memorised its training pairs.

    python experiments/beat_copypaste/strength_change.py --run runs/native/cf_gen --data runs/data/crackforest \
        --sets runs/beat_copypaste/crackforest --num 20 --out experiments/beat_copypaste/results/crackforest

writes ``strength_change.{json,md}`` and ``strength_change.png`` (one window per row: the copy, then each strength).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from defectgen.data import load_pair, open_dataset
from defectgen.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from defectgen.tables import markdown_table

STRENGTHS = (0.01, 0.2, 0.4, 0.6, 0.8, 1.0)


def sample_set(run: Path, folder: Path, strength: float, num: int) -> Path:
    if not (folder / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "defectgen.cli", "sample", "--run", str(run), "--into-training",
                        "--mask-source", "paste", "--strength", f"{strength:g}", "--num", str(num), "--seed", "0",
                        "--out", str(folder), "--quiet"], check=True, env={**os.environ})
    return folder


def read(folder: Path, file: str) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(Image.open(folder / "images" / file).convert("RGB")).astype(np.float64),
            np.asarray(Image.open(folder / "masks" / file)))


def measure(sets: dict[float, Path], data: Path) -> tuple[list[dict], list[np.ndarray]]:
    """Per strength: mean absolute change (grey levels, RGB mean) inside the pasted defects against the copy;
    and the defects' contrast (the copy against the image it was pasted into)."""
    ds = open_dataset(data)
    copy = sets[min(sets)]
    samples = json.loads((copy / "manifest.json").read_text())["samples"]
    change = {s: [] for s in sets}
    contrast, strips = [], []
    for e in samples:
        img0, mask = read(copy, e["file"])
        w = e["windows"][0]
        box = np.s_[w["y"]:w["y"] + w["side"], w["x"]:w["x"] + w["side"]]
        pasted = np.zeros(mask.shape, bool)
        pasted[box] = True
        bg, own = load_pair(ds.by_stem(e["source_image"]), ds.class_map)
        pasted &= (mask > 0) & (own == 0)  # the new defect: labelled now, background before
        if not pasted.any():
            continue
        contrast.append(np.abs(img0 - bg.astype(np.float64)).mean(-1)[pasted].mean())
        row = [img0[box]]
        for s, folder in sets.items():
            img, _ = read(folder, e["file"])
            change[s].append(np.abs(img - img0).mean(-1)[pasted].mean())
            if s != min(sets):
                row.append(img[box])
        if len(strips) < 6:
            strips.append(np.concatenate([np.pad(r, ((2, 2), (2, 2), (0, 0)), constant_values=255) for r in row], 1))
    rows = [{"strength": s, "change": float(np.mean(v)), "contrast": float(np.mean(contrast)),
             "change_over_contrast": float(np.mean(v) / np.mean(contrast)), "windows": len(v)}
            for s, v in change.items() if s != min(sets)]
    return rows, strips


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the generator's run folder")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--sets", type=Path, required=True, help="folder of the harmonised sets (paste_s<hundredths>)")
    p.add_argument("--num", type=int, required=True, help="pairs per set (the campaign's set size)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        sets = {s: sample_set(args.run, args.sets / f"paste_s{round(100 * s)}", s, args.num) for s in STRENGTHS}
    except subprocess.CalledProcessError as err:  # defectgen sample has said why, in one line
        return err.returncode
    rows, strips = measure(sets, args.data)
    atomic_write_json(args.out / "strength_change.json", {"run": str(args.run), "sets": {str(s): str(f) for s, f in sets.items()},
                                                          "reference_strength": min(sets), "rows": rows})
    table = markdown_table(["strength", "mean change inside the pasted defect (grey levels)", "defect contrast",
                            "change / contrast", "windows"],
                           [[f"{r['strength']:g}", f"{r['change']:.1f}", f"{r['contrast']:.1f}",
                             f"{r['change_over_contrast']:.2f}", r["windows"]] for r in rows])
    atomic_write_text(args.out / "strength_change.md",
                      f"# How far harmonisation moves a pasted defect ({args.run})\n\nAgainst the set at strength "
                      f"{min(sets):g} (the copy, re-rendered by one step); contrast: the copy against the image it was "
                      "pasted into, inside the same pixels.\n\n" + table)
    img = np.concatenate(strips, 0).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(png, format="PNG")
    atomic_write_bytes(args.out / "strength_change.png", png.getvalue())
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
