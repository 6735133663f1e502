"""Collect the NEU-Seg results into ``results/neu64/``: JSON, Markdown tables and plots.

Reads the run folders the real-data commands wrote (nothing is recomputed here):

    scripts/gpu_neu.sh                 -> runs/compare_neu64   (generators + samples, on a GPU)
    defectgen compare --config configs/compare_neu64.yaml --out runs/compare_neu64 --only score
    defectgen ablate  --config configs/ablate_neu64.yaml --out runs/ablate_neu64 \
        --set sources.defectgen=runs/compare_neu64/rows/two-stage-u0.40/samples

    python scripts/neu_results.py [--compare runs/compare_neu64] [--ablate runs/ablate_neu64] [--out results/neu64]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from defectgen.data import load_pairs, open_dataset, read_stem_list
from defectgen.io import atomic_write_json, atomic_write_text


def stage_timings(run: Path) -> dict[str, dict[str, float]]:
    out = {}
    for stage in ("large", "small"):
        log = run / stage / "log.jsonl"
        if not log.is_file():
            continue
        lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln]
        first, last = lines[0], lines[-1]
        per_step = (last["seconds"] - first["seconds"]) / max(last["step"] - first["step"], 1)
        out[stage] = {"steps": last["step"], "seconds_per_step": round(per_step, 4),
                      "final_loss": round(last["loss"], 5)}
    return out


def class_shares(pixels: dict[str, int]) -> dict[str, float]:
    total = sum(pixels.values())
    return {k: v / total for k, v in pixels.items()}


def class_proportions(compare: Path) -> dict[str, dict[str, float]]:
    """Share of pixels per class: the training masks vs every row's samples."""
    import yaml

    cfg = yaml.safe_load((compare / "config.yaml").read_text())
    ds = open_dataset(cfg["data"])
    stems = read_stem_list(Path(cfg["list_file"]))
    _, masks = load_pairs([ds.by_stem(s) for s in stems], ds.class_map, 64)
    counts = np.bincount(masks.ravel(), minlength=ds.class_map.num_classes)
    table = {"real (training)": class_shares({n: int(counts[i]) for i, n in enumerate(ds.class_map.names)})}
    for manifest in sorted((compare / "rows").glob("*/samples/manifest.json")):
        m = json.loads(manifest.read_text())
        total = {n: 0 for n in ds.class_map.names}
        for s in m["samples"]:
            for n, c in (s.get("class_pixels") or {}).items():
                total[n] += c
        table[manifest.parent.parent.name] = class_shares(total)
    return table


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean |discrete Laplacian| of the grey channel: how much fine texture (grain, edges) an image set has."""
    g = images[..., 0].astype(np.float32)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return float(np.abs(lap).mean())


def texture(compare: Path) -> dict[str, float]:
    """The diagnostic behind the NEU result: generated images are much smoother than real ones."""
    import yaml

    cfg = yaml.safe_load((compare / "config.yaml").read_text())
    ds = open_dataset(cfg["data"])
    train = [ds.by_stem(s) for s in read_stem_list(Path(cfg["list_file"]))]
    out = {"real (training)": high_frequency_energy(load_pairs(train, ds.class_map, 64)[0]),
           "real (test, first 100)": high_frequency_energy(
               load_pairs([ds.by_stem(s) for s in ds.splits["test"][:100]], ds.class_map, 64)[0])}
    for folder in sorted((compare / "rows").glob("*/samples")):
        if (folder / "manifest.json").is_file():
            syn = open_dataset(folder, "index")
            out[folder.parent.name] = high_frequency_energy(load_pairs(syn.records, syn.class_map, 64)[0])
    return out


def proportions_markdown(table: dict[str, dict[str, float]]) -> str:
    names = [n for n in next(iter(table.values())) if n != "others"]
    head = "| set | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    return head + "\n".join(f"| {row} | " + " | ".join(f"{100 * v[n]:.1f}%" for n in names) + " |"
                            for row, v in table.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", type=Path, default=Path("runs/compare_neu64"))
    ap.add_argument("--ablate", type=Path, default=Path("runs/ablate_neu64"))
    ap.add_argument("--out", type=Path, default=Path("results/neu64"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gen = {"timings": stage_timings(args.compare / "generator"),
           "sampling": {}, "class_pixel_share": class_proportions(args.compare)}
    for manifest in sorted((args.compare / "rows").glob("*/samples/manifest.json")):
        m = json.loads(manifest.read_text())
        if "seconds_per_sample" in m:
            gen["sampling"][manifest.parent.parent.name] = {
                "seconds_per_sample": m["seconds_per_sample"], "steps": m["steps"], "sampler": m["sampler"]}
    gen["high_frequency_energy"] = texture(args.compare)
    atomic_write_json(args.out / "generator.json", gen)
    md = ["# NEU-Seg, 10 images per class, 64 px\n", "## Generator (trained on the GPU)\n",
          "| stage | steps | s/step | final loss |", "|---|---|---|---|"]
    md += [f"| {k} | {v['steps']} | {v['seconds_per_step']} | {v['final_loss']} |" for k, v in gen["timings"].items()]
    md += ["", "## Class pixel shares: training masks vs samples\n", proportions_markdown(gen["class_pixel_share"]), ""]
    md += ["## Fine texture: mean |Laplacian| of the grey image (64 px)\n", "| set | value |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in gen["high_frequency_energy"].items()] + [""]
    for src, name in ((args.compare / "report.md", "compare"), (args.ablate / "report.md", "ablation")):
        if src.is_file():
            md += [f"## {name}\n", src.read_text().split("\n", 1)[1].strip(), ""]
    for src in (args.compare / "results.csv", args.compare / "gain_vs_switch.png",
                args.compare / "memorisation_vs_switch.png", args.ablate / "summary.csv",
                args.ablate / "miou_vs_ratio.png", args.compare / "rows/two-stage-u0.40/samples/grid.png"):
        if src.is_file():
            name = src.name if src.name != "grid.png" else "samples_two_stage_u0.40.png"
            shutil.copyfile(src, args.out / (f"{src.parent.name}_{name}" if src.suffix == ".csv" else name))
    atomic_write_text(args.out / "README.md", "\n".join(md) + "\n")
    print((args.out / "README.md").read_text())


if __name__ == "__main__":
    main()
