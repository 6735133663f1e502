"""Copy-paste augmentation: the non-generative baseline every generator must beat.

A defect region is cut by its mask from one real training image (after a random flip/turn) and
pasted, image and mask together, onto another real training image. The result is written in the
same layout as ``defectgen sample`` (``images/``, ``masks/``, ``manifest.json``), so the evaluation
reads both sources the same way and mixes them at the same ratios.

At full size (``make_copypaste_full``) the images keep their own resolution and each pasted defect is
a ``window x window`` crop around a real defect, placed by the rules Defect-Gen's full-size pairs
follow (``pipelines/defectgen/windows.py``: inside the image, windows apart, on the target's background): the
two differ only in who makes the window's pixels, copying or the generator.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectgen.data import ClassMap, DataError
from defectgen.data.samples import write_full_grids, write_samples
from defectgen.pairs import dihedral
from defectgen.pipelines.defectgen.windows import Window, cut_defect, max_windows, place_windows


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


def make_copypaste_full(
    images: list[np.ndarray], masks: list[np.ndarray], class_map: ClassMap, num: int, seed: int, window: int,
    per_image: int = 1, balanced: bool = True, names: Sequence[str] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:
    """``num`` full-size copy-paste pairs: a real training image with ``per_image`` defects pasted from
    other training images, each a ``window`` crop around a real defect (random symmetry), placed where
    it lands on the target's background. Pair ``i`` depends only on ``(seed, i)``; ``names`` name the
    images in errors."""
    if len(images) < 2:
        raise DataError("copy-paste needs at least 2 real training images")
    has = {c: [j for j, m in enumerate(masks) if (m == c).any()] for c in class_map.defect_ids}
    turns = [c for c in class_map.defect_ids if has[c]]
    if not turns:
        raise DataError("copy-paste needs real training masks with defect pixels")
    out_img, out_mask, meta = [], [], []
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        allowed = (turns[i % len(turns)],) if balanced else tuple(turns)
        dst = int(rng.integers(len(images)))
        shape, where = masks[dst].shape, names[dst] if names else f"image {dst}"
        side = min(window, *shape)
        if per_image > max_windows(shape, side):
            raise DataError(f"{where}: --defects-per-image {per_image}: at most {max_windows(shape, side)} windows of "
                            f"{side}x{side} px fit in its {shape[1]}x{shape[0]} px")
        sources = [j for c in allowed for j in has[c] if j != dst] or [j for c in allowed for j in has[c]]
        draw = lambda r: _cut(images, masks, sources, allowed, side, r)  # noqa: E731
        windows = place_windows(shape, side, per_image, rng, masks[dst] > 0, draw)
        if windows is None:
            raise DataError(f"{where}: {per_image} pasted window(s) of {side}x{side} px do not fit on its background "
                            "without overlapping; lower --defects-per-image")
        img, mask = images[dst].copy(), masks[dst].copy()
        for w in windows:
            put = w.new > 0
            img[w.box][put], mask[w.box][put] = w.pixels[put], w.new[put]
        out_img.append(img)
        out_mask.append(mask)
        meta.append({"target": dst, "windows": [w.record(side) | {"new_pixels": int((w.new > 0).sum())} for w in windows]})
    return out_img, out_mask, meta


def _cut(images: list[np.ndarray], masks: list[np.ndarray], sources: list[int], allowed: tuple[int, ...], side: int,
         rng: np.random.Generator) -> Window:
    """A window cut around a defect of a random source image: its allowed-class mask and its pixels."""
    src = int(rng.choice(sources))
    new, pixels, where = cut_defect(masks[src], allowed, side, rng, images[src])
    return Window(0, 0, side, new, info={"source": src, **where}, pixels=pixels)


def run_copypaste_full(
    images: list[np.ndarray], masks: list[np.ndarray], stems: Sequence[str], class_map: ClassMap, out: Path, num: int,
    window: int, seed: int = 0, per_image: int = 1, balanced: bool = True,
) -> None:
    """Make ``num`` full-size copy-paste pairs from the given real training pairs and write them to ``out``."""
    imgs, msks, meta = make_copypaste_full(images, masks, class_map, num, seed, window, per_image, balanced, stems)
    for m in meta:
        for w in m["windows"]:
            w["source_stem"] = stems[w.pop("source")]
    samples = [{"seed": seed, "source_image": stems[m["target"]], "image_size": [imgs[k].shape[1], imgs[k].shape[0]],
                "windows": m["windows"]} for k, m in enumerate(meta)]
    extra = {"generator": "copypaste", "full_size": True, "window": window, "seed": seed, "balanced": balanced,
             "defects_per_image": per_image}
    write_samples(out, imgs, msks, class_map, stems, samples, extra,
                  grids=lambda tmp: write_full_grids(tmp, imgs, msks, [images[m["target"]] for m in meta],
                                                     [m["windows"] for m in meta], class_map.names))
