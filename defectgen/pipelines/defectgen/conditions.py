"""Per-sample conditions of a guided request: ``build_conditions`` returns ``condition(i)`` for sample i.

On a run that squashes its images to ``size x size`` every condition is one ``size x size`` pair; on a
run trained on crops the backgrounds stay whole (``full_size.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from defectgen.data import ClassMap
from defectgen.data.folders import read_good_images, read_mask_folder
from defectgen.errors import DataError
from defectgen.pipelines.defectgen.full_size import FullSizeConditions, window_masks
from defectgen.pipelines.defectgen.guidance import Condition
from defectgen.pipelines.defectgen.request import GuidedRequest, parse_classes, pick_mask, place_mask, stem_pairs
from defectgen.run import RunFolder
from defectgen.schedule import sample_seed


@dataclass
class _Inputs:
    """Everything a request reads from disk, at the model size, by stem."""

    backgrounds: dict[str, np.ndarray] = field(default_factory=dict)
    bases: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: list[str] | None = None  # onto + mask folder by stem: the stems that have both


def _read_inputs(req: GuidedRequest, run: RunFolder, class_map: ClassMap, size: int, image_channels: int) -> _Inputs:
    inp = _Inputs()
    if req.mode == "onto":
        good = read_good_images(req.good, size, image_channels, run.resize_mode)
        inp.backgrounds = {k: v.array for k, v in good.items()}
    if req.mask_source == "folder":
        folder = read_mask_folder(req.masks, class_map, size)
        inp.masks = {k: v.array for k, v in folder.items()}
        if req.mode == "onto" and req.pairing == "stem":
            inp.pairs = stem_pairs(req, good, folder)
    if req.mask_source == "train" or req.mode == "into-training":
        images, masks, stems = run.training_pairs(class_map, size)
        if req.mode == "into-training":
            inp.backgrounds, inp.bases = dict(zip(stems, images)), dict(zip(stems, masks))
        if req.mask_source == "train":
            inp.masks = dict(zip(stems, masks))
    return inp


def build_conditions(
    req: GuidedRequest, run: Path | RunFolder, class_map: ClassMap, size: int, image_channels: int, num: int | None,
    seed: int,
) -> tuple[Callable[[int], Condition], int]:
    """Check the request and read its inputs; return ``condition(i)`` for sample i, and the sample count.

    ``run``: the generator's run folder (or its pipeline folder). On a run trained with ``resize_mode: crop``,
    ``onto`` and ``into-training`` give full-size pairs (``FullSizeConditions``: every window placed now, so a
    request that cannot be met fails before anything is sampled) and mask -> image gives ``size x size`` windows.
    """
    req.check()
    plan, num = parse_classes(req.classes, class_map, num)
    run = RunFolder.find(run)
    if run.crop_mode:
        if req.mode == "masks":
            return window_masks(req, run, class_map, plan, seed), num
        return FullSizeConditions.build(req, run, class_map, image_channels, plan, seed), num
    if req.defects_per_image is not None or req.region is not None or req.mask_source == "paste":
        raise DataError("--defects-per-image, --region and --mask-source paste place defects in full-size images, which "
                        "needs a run trained with resize_mode: crop; this run squashes every image to size x size")
    inp = _read_inputs(req, run, class_map, size, image_channels)
    bg_stems, mask_stems = sorted(inp.backgrounds), sorted(inp.masks)
    empty = np.zeros((size, size), np.uint8)

    def condition(i: int) -> Condition:
        rng = np.random.default_rng(sample_seed(seed, i))
        allowed = plan[i]
        info: dict[str, object] = {"mode": req.mode, "mask_source": req.mask_source,
                                   "classes": [class_map.names[c] for c in allowed]}
        bg = ms = None
        if inp.pairs is not None:
            bg = ms = inp.pairs[i % len(inp.pairs)]
        elif bg_stems:
            bg = bg_stems[int(rng.integers(len(bg_stems)))]
        image, base = inp.backgrounds.get(bg), inp.bases.get(bg, empty)
        if bg is not None:
            info["source_image"] = bg
        if req.mask_source == "model":
            return Condition(image, None, base, allowed, info)
        if ms is None:
            ms = mask_stems[pick_mask([inp.masks[s] for s in mask_stems], allowed, rng)]
        info["source_mask"] = ms
        if req.mask_source == "train":
            new = _placed(inp.masks[ms], allowed, base, rng, class_map)
        else:  # the user's own mask is used where it is drawn, with only the requested classes
            new = np.where(np.isin(inp.masks[ms], (0, class_map.ignore_index, *allowed)), inp.masks[ms], 0)
        if req.mode == "masks":
            return Condition(None, new.astype(np.uint8), empty, allowed, info)
        paint = (new > 0) & (new != class_map.ignore_index) & (base == 0)
        if not paint.any():
            raise DataError(f"sample {i}: mask '{ms}' has no requested defect pixel on the background of '{bg}'")
        mask = base.copy()
        mask[paint] = new[paint]
        return Condition(image, mask, base, allowed, info)

    return condition, num


def _placed(mask: np.ndarray, allowed: tuple[int, ...], base: np.ndarray, rng: np.random.Generator,
            class_map: ClassMap, tries: int = 50) -> np.ndarray:
    """A transformed training mask whose defect lands on the background's free pixels (a few tries)."""
    for _ in range(tries):
        placed = place_mask(mask, allowed, rng)
        if ((placed > 0) & (placed != class_map.ignore_index) & (base == 0)).any():
            break
    return placed
