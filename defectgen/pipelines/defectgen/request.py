"""A guided sampling request as the user states it, and the choices every guided mode shares.

Guided sampling: defects onto good images, images for given masks, defects into training images. One
trained pair of UNets does all of this at sampling time (``DefectGenPipeline`` with a ``Known``);
a request only decides, per sample, what is known.

- ``onto``: a good (defect-free) image is the background. Outside the defect region the output
  is that image; inside, the generator paints the defect.
- ``masks``: mask -> image. The mask is fixed; the whole image is generated.
- ``into-training``: a training image of the generator is the background; its own defects and
  labels are kept, a new defect is painted where its mask is background (a learned copy-paste).

The defect region comes from a mask folder (``folder``), from the generator's training masks after a
random flip/turn/shift (``train``), from the model itself (``model``: the large model chooses
where and what, the mask is frozen at the switch and the small model paints it), or (``paste``,
full-size pairs) from a real defect pasted with its pixels and harmonised by the model. Every
sample's choices come from its own seed, so the output does not depend on batching.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from defectgen.config import MAX_PAIRS
from defectgen.data import ClassMap
from defectgen.data.folders import Loaded
from defectgen.errors import DataError
from defectgen.pairs import dihedral

logger = logging.getLogger(__name__)
MODES = ("unconditional", "onto", "masks", "into-training")
MASK_SOURCES = ("folder", "train", "model", "paste")
PASTE_STRENGTH = 0.5  # harmonised copy-paste: how far down the schedule the pasted window is noised by default


@dataclass
class GuidedRequest:
    """A guided sampling request as the user states it (the CLI's flags, or Python)."""

    mode: str  # onto | masks | into-training
    mask_source: str  # folder | train | model | paste
    good: Path | None = None
    masks: Path | None = None
    pairing: str = "stem"  # onto + mask folder: by stem, or at random
    classes: str | None = None
    blend: int = 2
    resample: int = 1
    defects_per_image: int | None = None  # full-size pairs: new defects (windows) per image (None: 1)
    region: Path | None = None  # full-size pairs: masks by stem, non-zero where new defects may go
    strength: float | None = None  # mask source paste: the pasted window noised to strength * T (None: 0.5)

    def check(self) -> None:
        """Refuse a request that cannot be met, naming the flag (before anything is read)."""
        if self.mode not in MODES[1:]:
            raise DataError(f"unknown guided mode '{self.mode}'")
        if self.mask_source not in MASK_SOURCES:
            raise DataError(f"unknown mask source '{self.mask_source}' (choose from {', '.join(MASK_SOURCES)})")
        if self.mode == "onto" and self.good is None:
            raise DataError("onto mode needs a folder of good images (--onto GOOD_DIR)")
        if self.mode == "masks" and self.mask_source in ("model", "paste"):
            raise DataError(f"--mask-source {self.mask_source} needs a background: add --onto GOOD_DIR or --into-training")
        if self.strength is not None and self.mask_source != "paste":
            raise DataError("--strength sets how far a pasted defect may change: it needs --mask-source paste")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise DataError(f"--strength must be above 0 and at most 1 (a share of the schedule), got {self.strength}")
        if self.mask_source == "folder" and self.masks is None:
            raise DataError("a mask folder is needed (--masks MASK_DIR), or --mask-source train|model")
        if self.pairing not in ("stem", "random"):
            raise DataError(f"--pairing must be 'stem' or 'random', got '{self.pairing}'")
        if self.blend < 0:
            raise DataError(f"--blend must be 0 or more pixels, got {self.blend}")
        if self.resample < 1:
            raise DataError(f"--resample must be at least 1, got {self.resample}")
        if self.defects_per_image is not None and self.defects_per_image < 1:
            raise DataError(f"--defects-per-image must be at least 1, got {self.defects_per_image}")
        placed = [f for f, v in (("--defects-per-image", self.defects_per_image), ("--region", self.region)) if v is not None]
        if placed and self.mask_source == "folder":
            raise DataError(f"{placed[0]} places defects drawn from the training pairs or chosen by the model; "
                            "a mask folder (--masks) places its own")
        if placed and self.mode == "masks":
            raise DataError(f"{placed[0]} places defects in a background image: add --onto GOOD_DIR or --into-training")


def parse_classes(spec: str | None, class_map: ClassMap, num: int | None) -> tuple[list[tuple[int, ...]], int]:
    """``A,B`` (allowed classes) or ``A=50,B=20`` (per-class counts) -> per-sample allowed ids, and N.

    Without a spec every defect class is allowed. Per-class counts fix N; ``--num`` must then be
    absent or equal to their sum.
    """
    everything = tuple(class_map.defect_ids)
    if spec is None:
        if num is None:
            raise DataError("--num is required (or give per-class counts with --classes NAME=COUNT)")
        return [everything] * num, num
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    counts: list[tuple[int, int]] = []
    names: list[int] = []
    if not parts:
        raise DataError(f"--classes: no class named in {spec!r} (give A,B or A=N,B=M, or leave the flag out)")
    for part in parts:
        name, _, count = part.partition("=")
        if name not in class_map.names or name == class_map.names[0]:
            raise DataError(f"--classes: '{name}' is not a defect class of the generator "
                            f"(choose from {', '.join(class_map.names[1:])})")
        cid = class_map.id_of(name)
        if cid in names or cid in dict(counts):
            raise DataError(f"--classes: '{name}' is named twice in {spec!r}")
        if count:
            if not count.isdigit() or not 1 <= int(count) <= MAX_PAIRS:
                raise DataError(f"--classes: count for '{name}' must be an integer from 1 to {MAX_PAIRS}, got '{count}'")
            counts.append((cid, int(count)))
        else:
            names.append(cid)
    if counts and names:
        raise DataError("--classes: give either class names (A,B) or per-class counts (A=10,B=5), not both")
    if counts:
        total = sum(n for _, n in counts)
        if num is not None and num != total:
            raise DataError(f"--num {num} differs from the per-class counts in --classes (total {total})")
        return [(cid,) for cid, n in counts for _ in range(n)], total
    if num is None:
        raise DataError("--num is required with --classes NAME[,NAME]")
    return [tuple(sorted(set(names)))] * num, num


def place_mask(mask: np.ndarray, allowed: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Keep the allowed classes of ``mask``, then a random flip/turn and a shift that keeps the defect inside."""
    keep = np.isin(mask, allowed)
    out = dihedral(np.where(keep, mask, 0).astype(np.uint8), int(rng.integers(0, 8)))
    ys, xs = np.nonzero(out)
    h, w = out.shape
    dy = int(rng.integers(-ys.min(), h - ys.max()))
    dx = int(rng.integers(-xs.min(), w - xs.max()))
    return np.roll(out, (dy, dx), axis=(0, 1))  # the shift keeps every defect pixel, so nothing wraps


def pick_mask(masks: Sequence[np.ndarray], allowed: tuple[int, ...], rng: np.random.Generator) -> int:
    """Index of a mask that holds at least one allowed class."""
    fits = [i for i, m in enumerate(masks) if np.isin(m, allowed).any()]
    if not fits:
        raise DataError(f"no mask holds any of the classes {list(allowed)}")
    return int(rng.choice(fits))


def stem_pairs(req: GuidedRequest, good: dict[str, Loaded], folder: dict[str, Loaded]) -> list[str]:
    """Stems that have both a good image and a mask, with equal original sizes."""
    common = sorted(set(good) & set(folder))
    if not common:
        raise DataError(f"{req.masks}: no mask has the stem of a good image in {req.good} "
                        f"(masks {sorted(folder)[:3]}, images {sorted(good)[:3]}); name them alike or pass --pairing random")
    unused = sorted(set(good) - set(common))
    if unused:
        logger.warning(f"{len(unused)} good images have no mask of the same stem and are not used: {unused[:3]}")
    for stem in common:
        if folder[stem].size != good[stem].size:
            (mw, mh), (w, h) = folder[stem].size, good[stem].size
            raise DataError(f"{folder[stem].path}: mask size {mw}x{mh} differs from image {good[stem].path.name} "
                            f"size {w}x{h}")
    return common
