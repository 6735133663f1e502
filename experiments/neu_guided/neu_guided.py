"""Guided sampling on NEU-Seg 10-shot with the CPU generator: each mode against unconditional sampling.

    defectgen train --config configs/neu64.yaml --data runs/data/neu_seg --split train \
        --list configs/neu_train10_seed0.txt --out runs/neu_cpu_gen $(cat configs/neu64_cpu_overrides.txt)
    python experiments/neu_guided/neu_guided.py --run runs/neu_cpu_gen --out experiments/neu_guided/results

For each sample set (same generator, seeds, DDPM steps and switch): fine texture (mean |Laplacian|),
defect area, FID* (EfficientNet-Lite0 features) and mask agreement against the 30 training pairs,
the seam (texture on the blend band's outer ring over texture of the background, beside the same
ratio for real defects), and time per pair as a ratio to unconditional sampling, measured
interleaved in one run. NEU-Seg has no defect-free images, so the modes with a real background
use the training images (``--into-training``); the demo data covers ``--onto``. Every set is
written to runs/guided/NAME and kept (uint8) in the results folder as NAME.npz. Resumable: a set
whose folder is complete is not sampled again. Nothing here is chosen on the test split.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from defectgen import logs
from defectgen.data import load_pairs, open_dataset
from defectgen.data.samples import is_complete, read_manifest
from defectgen.export import export_samples
from defectgen.guided import GuidedRequest, build_conditions, known_batch, training_pairs
from defectgen.io import atomic_write_json, atomic_write_text
from defectgen.pipeline import soft_region
from defectgen.quality.compute import MetricsConfig, evaluate
from defectgen.quality.texture import defect_share, laplacian_magnitude
from defectgen.run import RunFolder, load_generator
from defectgen.viz import pair_grid

SETS = {  # name: guided request (None = unconditional)
    "unconditional": None,
    "into-training, train masks": GuidedRequest("into-training", "train"),
    "into-training, train masks, resample 3": GuidedRequest("into-training", "train", resample=3),
    "into-training, model masks": GuidedRequest("into-training", "model"),
    "mask -> image, train masks": GuidedRequest("masks", "train"),
}


def slug(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def texture(images: np.ndarray) -> float:
    """Mean |Laplacian| over the whole image, its zero border included (the numbers of experiments/neu_guided/results)."""
    return float(laplacian_magnitude(images).mean())


def seam_ratio(images: np.ndarray, region: np.ndarray, blend: int) -> float:
    """Texture on the ring just around the painted region over texture of the background further away.

    1 means the border is as busy as ordinary surface; a visible seam or halo makes it larger.
    """
    r = torch.from_numpy(region)
    ring = (soft_region(r, blend + 1)[:, 0] > 0).numpy() & ~region
    far = (soft_region(r, blend + 4)[:, 0] == 0).numpy()
    lap = laplacian_magnitude(images)
    if not ring.any() or not far.any():
        return float("nan")
    return float(lap[ring].mean() / lap[far].mean())


def sample_set(pipe, run: Path, name: str, req: GuidedRequest | None, args, out: Path) -> dict:
    folder = out / slug(name)
    if is_complete(folder):
        return read_manifest(folder)
    size = pipe.unet.config.sample_size
    cond = None
    if req is not None:
        cond, _ = build_conditions(req, run, pipe.class_map, size, pipe.config.image_channels, args.num, args.seed)
    identity = RunFolder.find(run).identity()
    return export_samples(pipe, folder, args.num, seed=args.seed, switch=args.switch, sampler="ddpm",
                          steps=args.steps, batch_size=args.batch_size, identity=identity, progress=False,
                          condition=cond, request=req)


def read_set(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    ds = open_dataset(folder, "index")
    return load_pairs(ds.records, ds.class_map, size)


def timing_ratios(pipe, run: Path, args, rounds: int = 3, n: int = 8, steps: int = 20) -> dict[str, float]:
    """Seconds per pair of each mode over unconditional sampling, interleaved so machine noise cancels."""
    size = pipe.unet.config.sample_size
    seconds: dict[str, list[float]] = {name: [] for name in SETS}
    for _ in range(rounds):
        for name, req in SETS.items():
            gens = [torch.Generator().manual_seed(i) for i in range(n)]
            guided = {}
            if req is not None:
                cond, _ = build_conditions(req, run, pipe.class_map, size, pipe.config.image_channels, n, args.seed)
                guided = {"known": known_batch([cond(i) for i in range(n)], pipe.class_map,
                                               pipe.config.image_channels, req.blend), "resample": req.resample}
            t = time.perf_counter()
            pipe(gens, switch=args.switch, sampler="ddpm", num_inference_steps=steps, progress=False, **guided)
            seconds[name].append(time.perf_counter() - t)
    base = np.median(seconds["unconditional"])
    return {name: round(float(np.median(v) / base), 3) for name, v in seconds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/neu_cpu_gen"))
    ap.add_argument("--out", type=Path, default=Path("experiments/neu_guided/results"))
    ap.add_argument("--samples", type=Path, default=Path("runs/guided"))
    ap.add_argument("--num", type=int, default=60)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--switch", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=30)
    ap.add_argument("--downstream", type=Path, action="append", default=None,
                    help="an experiments/neu_guided/neu_guided_val.sh output folder (repeatable: seeds are pooled); "
                         "write the val-split segmentation table and stop")
    ap.add_argument("--tables-only", action="store_true",
                    help="rebuild the figures, the new-defect statistics and README.md from the kept sample "
                         "folders and results.json, without sampling or scoring again")
    args = ap.parse_args()
    if args.downstream is not None:
        write_downstream(args.downstream, args.out)
        return
    if args.tables_only:
        rebuild_tables(args)
        return
    pipe = load_generator(args.run)
    size = pipe.unet.config.sample_size
    real_images, real_masks, _ = training_pairs(args.run, pipe.class_map, size)
    rows: dict[str, dict] = {"real (training)": {
        "n": len(real_images), "texture": texture(real_images), "defect_share": defect_share(real_masks),
        "seam": seam_ratio(real_images, (real_masks > 0) & (real_masks != 255), 2)}}
    cfg = MetricsConfig(size=size)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, req in SETS.items():
        t = time.time()
        manifest = sample_set(pipe, args.run, name, req, args, args.samples)
        images, masks = read_set(args.samples / slug(name), size)
        q = evaluate(real_images, real_masks, images, masks, pipe.class_map.names, cfg).metrics
        row = {"n": len(images), "texture": texture(images), "defect_share": defect_share(masks),
               "fid": q["fid_kid"]["fid"], "mask_agreement": q["mask_agreement"]["mean_iou_defects"],
               "memorised_pixel": q["memorisation"]["pixel"]["share_memorised"],
               "seconds_per_pair": manifest["seconds_per_sample"]}
        if req is not None and req.mode == "into-training":
            row.update(into_training_stats(args.run, manifest, images, masks, real_masks, req.blend))
        rows[name] = row
        np.savez_compressed(args.out / f"{slug(name)}.npz", images=images[..., 0], masks=masks)
        print(f"{name}: {json.dumps(row)} ({time.time() - t:.0f} s)", flush=True)
    ratios = timing_ratios(pipe, args.run, args)
    for name, r in ratios.items():
        rows[name]["time_ratio"] = r
    atomic_write_json(args.out / "results.json", {"settings": vars(args) | {"run": str(args.run), "out": str(args.out),
                                                                             "samples": str(args.samples)},
                                                   "rows": rows})
    write_figure(args, size)
    atomic_write_text(args.out / "README.md", markdown(rows, args))
    print((args.out / "README.md").read_text())


def into_training_stats(run: Path, manifest: dict, images: np.ndarray, masks: np.ndarray, real_masks: np.ndarray,
                        blend: int) -> dict[str, float]:
    """Seam, and how much new defect each pair got, against the training mask it was painted into."""
    bases = np.stack([real_masks[_stem_index(run, s["source_image"])] for s in manifest["samples"]])
    new = ((masks != bases) & (masks > 0)).sum(axis=(1, 2))
    return {"seam": seam_ratio(images, masks != bases, blend), "pairs_with_new_defect": int((new > 0).sum()),
            "new_defect_pixels_median": float(np.median(new))}


def rebuild_tables(args) -> None:
    saved = json.loads((args.out / "results.json").read_text())
    pipe = load_generator(args.run)
    size = pipe.unet.config.sample_size
    _, real_masks, _ = training_pairs(args.run, pipe.class_map, size)
    for name, req in SETS.items():
        if req is not None and req.mode == "into-training":
            folder = args.samples / slug(name)
            images, masks = read_set(folder, size)
            manifest = read_manifest(folder)
            saved["rows"][name].update(into_training_stats(args.run, manifest, images, masks, real_masks, req.blend))
    atomic_write_json(args.out / "results.json", saved)
    write_figure(args, size)
    atomic_write_text(args.out / "README.md", markdown(saved["rows"], argparse.Namespace(**saved["settings"])))
    print((args.out / "README.md").read_text())


def _stem_index(run: Path, stem: str, _cache: dict = {}) -> int:
    if not _cache:
        _cache.update({s: i for i, s in enumerate(json.loads((run / "selection.json").read_text())["stems"])})
    return _cache[stem]


def write_figure(args, size: int) -> None:
    """Training image | generated | overlay for the first 8 into-training pairs."""
    name = "into-training, train masks"
    manifest = read_manifest(args.samples / slug(name))
    images, masks = read_set(args.samples / slug(name), size)
    ds = open_dataset(json.loads((args.run / "selection.json").read_text())["data"])
    bgs, _ = load_pairs([ds.by_stem(s["source_image"]) for s in manifest["samples"][:8]], ds.class_map, size)
    names = ds.class_map.names
    pair_grid(images[:8], masks[:8], ncols=2, scale=2, backgrounds=bgs, names=names).save(args.out / "into_training.png")
    uncond, umasks = read_set(args.samples / slug("unconditional"), size)
    pair_grid(uncond[:8], umasks[:8], ncols=4, scale=2, names=names).save(args.out / "unconditional.png")


def write_downstream(folders: list[Path], out: Path) -> None:
    """Val mIoU and the paired gain over real only, per synthetic set, pooled over every folder's seeds
    (experiments/neu_guided/neu_guided_val.sh: each folder holds one real-only baseline and the sets, same protocol)."""
    from defectgen.seg.stats import mean_std, paired_gain

    per_seed: dict[str, dict[int, float]] = {}
    for folder in folders:
        for name in ("real-only", "unconditional", "into-training", "into-training-model-masks", "copy-paste"):
            path = folder / name / "results.json"
            if path.is_file():
                r = json.loads(path.read_text())
                assert r["selection"]["test_source"].startswith("split val"), path  # never test
                per_seed.setdefault(name, {}).update({s["seed"]: s["metrics"]["miou_defect"] for s in r["per_seed"]})
    base = per_seed.get("real-only", {})
    rows = {}
    for name, vals in per_seed.items():
        seeds = sorted(vals)
        row = {"seeds": seeds, **{k: v for k, v in mean_std([vals[s] for s in seeds]).items() if k != "n"}}
        if name != "real-only":
            common = [s for s in seeds if s in base]
            row["gain"] = paired_gain([vals[s] for s in common], [base[s] for s in common])
        rows[name] = row
    atomic_write_json(out / "val_downstream.json", rows)
    cp = folders[0] / "copypaste_samples"
    if is_complete(cp):  # kept like the generated sets, to re-score
        images, masks = read_set(cp, 64)
        np.savez_compressed(out / "copy_paste.npz", images=images[..., 0], masks=masks)
    n = max(len(r["seeds"]) for r in rows.values())
    lines = ["# Do the guided pairs help? NEU-Seg validation split (894 images; test not touched)\n",
             "DeepLabV3+-R18 from scratch, 400 steps, 30 real training pairs + 30 synthetic (ratio 1), "
             f"{n} seeds; gain in defect-class mIoU points, paired by seed, 95% t-interval "
             "(`experiments/neu_guided/neu_guided_val.sh`).\n",
             "| training data | seeds | defect mIoU (val) | gain over real only [95% CI] |", "|---|---|---|---|"]
    for name, r in rows.items():
        g = r.get("gain") or {}
        gain = "–" if g.get("mean") is None else f"{100 * g['mean']:+.1f}" + (
            "" if g.get("ci_low") is None else f" [{100 * g['ci_low']:+.1f}, {100 * g['ci_high']:+.1f}]")
        lines.append(f"| {name} | {len(r['seeds'])} | {100 * r['mean']:.1f} ± {100 * (r['std'] or 0):.1f} | {gain} |")
    atomic_write_text(out / "val_downstream.md", "\n".join(lines) + "\n")
    print((out / "val_downstream.md").read_text())


def markdown(rows: dict[str, dict], args) -> str:
    def f(v, fmt):
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)

    lines = [f"# Guided sampling on NEU-Seg 10-shot, CPU generator ({args.run})\n",
             f"{args.num} pairs per set, DDPM {args.steps} steps, switch {args.switch}, seed {args.seed}. "
             "FID* and mask agreement against the 30 training pairs (EfficientNet-Lite0 features; "
             "segmenter trained on the same 30 pairs). Seam: texture on the ring around the painted "
             "region over texture far from it (real defects: the same ratio around their masks). Time: "
             "seconds per pair over unconditional sampling, interleaved, 8 pairs x 20 steps x 3 rounds.\n",
             "| set | pairs | defect pixels | fine texture | FID* | mask agr. | memorised (pix) | seam | new defect: pairs, median px | time ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        new = "–" if "pairs_with_new_defect" not in r else f"{r['pairs_with_new_defect']}/{r['n']}, {r['new_defect_pixels_median']:.0f}"
        mem = r.get("memorised_pixel")
        lines.append(f"| {name} | {r['n']} | {100 * r['defect_share']:.1f}% | {r['texture']:.1f} | {f(r.get('fid'), '.0f')} "
                     f"| {f(r.get('mask_agreement') and 100 * r['mask_agreement'], '.1f')} "
                     f"| {f(mem and 100 * mem, '.0f')}{'%' if mem is not None else ''} | {f(r.get('seam'), '.2f')} "
                     f"| {new} | {f(r.get('time_ratio'), '.2f')} |")
    lines += ["", "![into-training pairs: training image | generated | overlay](into_training.png)", "",
              "![unconditional pairs](unconditional.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    logs.configure()  # the library's [data]/[defectgen] lines, as the command line shows them
    main()
