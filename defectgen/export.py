"""Sampling a trained generator into the standard output layout.

``DIR/images/NNNNNN.png``, ``DIR/masks/NNNNNN.png`` (class ids), ``DIR/manifest.json`` and
``DIR/grid.png``. The folder is built under a temporary name and renamed when complete.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from defectgen import __version__
from defectgen.io import atomic_dir, atomic_write_json, refuse_existing
from defectgen.guided import Condition, GuidedRequest, known_batch
from defectgen.pipeline import DefectGenPipeline, sample_seed
from defectgen.viz import pair_grid


def class_pixels(mask: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    """Pixels of each class in a mask (ignore pixels are not counted)."""
    counts = np.bincount(mask[mask < len(names)].ravel(), minlength=len(names))
    return {name: int(counts[i]) for i, name in enumerate(names)}


def save_pair(folder: Path, index: int, image: np.ndarray, mask: np.ndarray, names: tuple[str, ...]) -> dict:
    """Write pair ``index`` into ``folder/images`` and ``folder/masks``; return its manifest entry."""
    name = f"{index:06d}.png"
    Image.fromarray(image).save(folder / "images" / name)
    Image.fromarray(mask).save(folder / "masks" / name)
    return {"index": index, "file": name, "class_pixels": class_pixels(mask, names)}


def export_samples(
    pipe: DefectGenPipeline,
    out: Path,
    num: int,
    seed: int = 0,
    switch: float | None = None,
    sampler: str = "ddpm",
    steps: int | None = None,
    batch_size: int = 16,
    overwrite: bool = False,
    identity: dict[str, object] | None = None,
    progress: bool = True,
    condition: Callable[[int], Condition] | None = None,
    request: GuidedRequest | None = None,
) -> dict[str, object]:
    """Sample ``num`` pairs (sample i seeded by (seed, i)) and write them to ``out``; return the manifest.

    Guided sampling: ``condition(i)`` says what sample i must keep (see ``defectgen.guided``) and
    ``request`` holds the blend band and resampling; a given mask is written exactly as given.
    """
    out = Path(out)
    refuse_existing(out, overwrite)
    if pipe.class_map is None:
        raise ValueError("the pipeline has no class map; load it with DefectGenPipeline.from_pretrained")
    names = pipe.class_map.names
    switch = pipe.config.switch if switch is None else switch
    samples, timesteps, t0 = [], None, time.time()
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        grid_imgs, grid_masks, grid_bgs = [], [], []
        for start in tqdm(range(0, num, batch_size), desc="sample", disable=not progress):
            idx = list(range(start, min(start + batch_size, num)))
            seeds = [sample_seed(seed, i) for i in idx]
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            conds = [condition(i) for i in idx] if condition is not None else None
            guided = {} if conds is None else {
                "known": known_batch(conds, pipe.class_map, pipe.config.image_channels, request.blend),
                "resample": request.resample}
            res = pipe(gens, switch=switch, sampler=sampler, num_inference_steps=steps, progress=False, **guided)
            timesteps = res.timesteps
            masks = res.masks if conds is None else [c.mask if c.mask is not None else m for c, m in zip(conds, res.masks)]
            for j, (i, s, img, mask) in enumerate(zip(idx, seeds, res.images, masks)):
                samples.append({**save_pair(tmp, i, img, mask, names), "seed": s, **(conds[j].info if conds else {})})
            if len(grid_imgs) < 16:
                grid_imgs.extend(res.images[: 16 - len(grid_imgs)])
                grid_masks.extend(masks[: 16 - len(grid_masks)])
                if conds is not None:
                    grid_bgs.extend(_background(c, img) for c, img in zip(conds[: 16 - len(grid_bgs)], res.images))
        seconds = time.time() - t0
        manifest = {
            "defectgen_version": __version__,
            "class_map": pipe.class_map.to_dict(),
            "model": identity or {},
            "train_stems": list((identity or {}).get("train_stems", [])),
            "switch": switch,
            "switch_timestep": switch * pipe.scheduler.config.num_train_timesteps,
            "sampler": sampler,
            "mode": request.mode if request else "unconditional",
            "guided": _request_info(request),
            "steps": len((timesteps or {}).get("large", [])) + len((timesteps or {}).get("small", [])),
            "timesteps": timesteps,
            "seed": seed,
            "num_samples": num,
            "seconds": round(seconds, 2),
            "seconds_per_sample": round(seconds / max(num, 1), 4),
            "samples": samples,
        }
        if grid_imgs:
            scale = max(1, 128 // grid_masks[0].shape[0])
            bgs = np.stack(grid_bgs) if grid_bgs and request and request.mode != "masks" else None
            pair_grid(np.stack(grid_imgs), np.stack(grid_masks), ncols=4, scale=scale, backgrounds=bgs,
                      names=names).save(tmp / "grid.png")
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def _background(cond: Condition, image: np.ndarray) -> np.ndarray:
    """The grid's first panel of a guided sample: the background it was painted onto (black: none)."""
    return cond.image if cond.image is not None else np.zeros_like(image)


def _request_info(request: GuidedRequest | None) -> dict[str, object] | None:
    if request is None:
        return None
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(request).items()}
