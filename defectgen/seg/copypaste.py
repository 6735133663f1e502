"""Copy-paste augmentation: the non-generative baseline every generator must beat.

A defect region is cut by its mask from one real training image (after a random flip/turn) and
pasted, image and mask together, onto another real training image. The result is written in the
same layout as ``defectgen sample`` (``images/``, ``masks/``, ``manifest.json``), so the evaluation
reads both sources the same way and mixes them at the same ratios.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectgen.data import ClassMap, DataError
from defectgen.data.samples import write_samples
from defectgen.pairs import dihedral


def paste(
    src_img: np.ndarray, src_mask: np.ndarray, dst_img: np.ndarray, dst_mask: np.ndarray, region: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Copy image and mask pixels of ``region`` (bool HxW) from source to destination."""
    if not (src_img.shape == dst_img.shape and src_mask.shape == dst_mask.shape == region.shape == src_img.shape[:2]):
        raise ValueError(f"copy-paste needs equal sizes, got {src_img.shape} and {dst_img.shape}")
    img, mask = dst_img.copy(), dst_mask.copy()
    img[region] = src_img[region]
    mask[region] = src_mask[region]
    return img, mask


def make_copypaste(
    images: np.ndarray, masks: np.ndarray, class_map: ClassMap, num: int, seed: int, balanced: bool = True
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """``num`` copy-paste pairs from real (N,H,W,3) images and (N,H,W) masks.

    Pair ``i`` depends only on ``(seed, i)``. Balanced: the defect classes found in the masks take
    turns, and only the region of that class is cut; otherwise all defect pixels of a random source.
    """
    if len(images) < 2:
        raise DataError("copy-paste needs at least 2 real training images")
    defect = (masks > 0) & (masks != class_map.ignore_index)
    has = {c: np.flatnonzero((masks == c).any(axis=(1, 2))) for c in class_map.defect_ids}
    turns = [c for c in class_map.defect_ids if len(has[c])]
    if not turns:
        raise DataError("copy-paste needs real training masks with defect pixels")
    sources_any = np.flatnonzero(defect.any(axis=(1, 2)))
    out_img, out_mask, meta = [], [], []
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        cls = turns[i % len(turns)] if balanced else None
        src = int(rng.choice(has[cls] if cls is not None else sources_any))
        dst = int(rng.choice([j for j in range(len(images)) if j != src]))
        k = int(rng.integers(0, 8))
        s_img, s_mask = dihedral(images[src], k), dihedral(masks[src], k)
        region = s_mask == cls if cls is not None else (s_mask > 0) & (s_mask != class_map.ignore_index)
        img, mask = paste(s_img, s_mask, images[dst], masks[dst], region)
        out_img.append(img)
        out_mask.append(mask)
        meta.append({"source": src, "target": dst, "symmetry": k, "pasted_class": cls})
    return np.stack(out_img), np.stack(out_mask), meta


def run_copypaste(
    images: np.ndarray,
    masks: np.ndarray,
    stems: Sequence[str],
    class_map: ClassMap,
    out: Path,
    num: int,
    seed: int = 0,
    balanced: bool = True,
) -> None:
    """Make ``num`` copy-paste pairs from the given real training pairs and write them to ``out``."""
    imgs, msks, meta = make_copypaste(images, masks, class_map, num, seed, balanced)
    samples = [
        {"seed": seed, "source_stem": stems[m["source"]], "target_stem": stems[m["target"]], "symmetry": m["symmetry"],
         "pasted_class": None if m["pasted_class"] is None else class_map.names[m["pasted_class"]]}
        for m in meta
    ]
    extra = {"generator": "copypaste", "size": int(images.shape[1]), "seed": seed, "balanced": balanced}
    write_samples(out, imgs, msks, class_map, stems, samples, extra)
