"""DPM-Solver++ at 20-25 steps against DDPM at 250 (and DDPM/DDIM at 25): same generator, same seeds.

    python experiments/sampler_quality/sampler_quality.py --run runs/sq_demo/run --data runs/sq_demo/data --out experiments/sampler_quality/results

For each sampler: FID* and KID* (EfficientNet-Lite0 features, not comparable to published
Inception FID), mask agreement (a segmenter trained on the real pairs, `defectgen metrics`), fine
texture (mean |Laplacian|, real vs generated) and the defect share, plus the sampling time. Writes
``results.json`` and ``results.md``. On a GPU run the same with ``configs/neu64_gpu.yaml``'s
generator and NEU-Seg; on the CPU we could only afford the demo generator (see results.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from defectgen.cli import main as defectgen  # noqa: E402
from defectgen.data.samples import is_complete, read_manifest  # noqa: E402
from defectgen.data import load_pairs, open_dataset  # noqa: E402
from defectgen.io import atomic_write_json, atomic_write_text  # noqa: E402
from defectgen.quality.texture import defect_share, fine_texture  # noqa: E402

SETTINGS = [("ddpm", 250), ("dpmsolver++", 25), ("dpmsolver++", 20), ("ddpm", 25), ("ddim", 25)]


def folder_stats(folder: Path, size: int) -> dict[str, float]:
    ds = open_dataset(folder)
    images, masks = load_pairs(ds.records, ds.class_map, size)
    return {"n": int(len(images)), "texture": fine_texture(images), "defect_share": defect_share(masks)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the real pairs the generator was trained on")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=REPO / "runs" / "sampler_quality",
                   help="sample sets and metrics folders (large; kept out of results/)")
    p.add_argument("--num", type=int, default=96)
    p.add_argument("--seg-steps", type=int, default=150, help="steps of the mask-agreement segmenter")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    size = json.loads((args.run / "pipeline" / "unet" / "config.json").read_text())["sample_size"]
    rows = {"real": folder_stats(args.data, size)}
    for sampler, steps in SETTINGS:
        name = f"{sampler}-{steps}"
        syn, met = args.work / name, args.work / f"{name}_metrics"
        t0 = time.time()
        if not is_complete(syn):
            assert defectgen(["sample", "--run", str(args.run), "--num", str(args.num), "--out", str(syn), "--sampler",
                              sampler, "--steps", str(steps), "--batch-size", "32", "--quiet"]) == 0
        seconds = read_manifest(syn)["seconds"]
        if not (met / "metrics.json").is_file():
            assert defectgen(["metrics", "--real", str(args.data), "--synthetic", str(syn), "--out", str(met),
                              "--size", str(size), "--seg-set", f"steps={args.seg_steps}", "--seg-set", "model=unet-small",
                              "--overwrite"]) == 0
        m = json.loads((met / "metrics.json").read_text())
        rows[name] = {**folder_stats(syn, size), "sampling_s": seconds, "metrics": m,
                      "wall_s": round(time.time() - t0, 1)}
    atomic_write_json(args.out / "results.json", rows)
    atomic_write_text(args.out / "results.md", table(rows, args))
    print((args.out / "results.md").read_text())
    return 0


def table(rows: dict[str, dict], args: argparse.Namespace) -> str:
    real = rows["real"]
    lines = [f"# DPM-Solver++ vs DDPM: same generator ({args.run}), same {args.num} seeds", "",
             f"Real set: {real['n']} pairs, texture {real['texture']:.2f}, defect share {real['defect_share']:.3f}.", "",
             "| sampler | steps | FID* | KID* | mask agreement (mIoU) | texture | defect share | sampling s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if name == "real":
            continue
        sampler, steps = name.rsplit("-", 1)
        m = r["metrics"]
        fid, kid, agree = m["fid_kid"]["fid"], m["fid_kid"]["kid_mean"], m["mask_agreement"]["mean_iou_defects"]
        lines.append(f"| {sampler} | {steps} | {fid:.2f} | {kid:.4f} | {agree:.3f} "
                     f"| {r['texture']:.2f} | {r['defect_share']:.3f} | {r['sampling_s']:.1f} |")
    seg = next(r for n, r in rows.items() if n != "real")["metrics"]["mask_agreement"]
    lines += ["", "FID*/KID*: EfficientNet-Lite0 features, not comparable to published Inception FID. Mask agreement:",
              f"mean defect IoU between each generated mask and a unet-small segmenter ({args.seg_steps} steps) trained",
              f"on the real pairs (its IoU on those: {seg['segmenter_iou_on_its_training_images']:.3f}).",
              f"Command: `python experiments/sampler_quality/sampler_quality.py --run {args.run} --data {args.data} --out {args.out}`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
