"""Mixing real and synthetic pairs: how many synthetic pairs, which ones, and the leak check.

``ratio`` is the number of synthetic pairs per real training pair: with 30 real pairs, ratio 0.5
adds 15 synthetic pairs and ratio 2 adds 60. Which synthetic pairs are taken is drawn from the
evaluation seed, optionally balanced over the defect classes (each pair counts for the defect
class that covers most of its mask), always without replacement.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from defectgen.data import ClassMap, DataError, DefectDataset, PairRecord, open_dataset, present_classes


class LeakError(DataError):
    """A test image was seen by the generator or is also a training image."""


@dataclass
class SyntheticSet:
    """A sample folder (``images/``, ``masks/``, ``manifest.json``) as written by ``defectgen sample``."""

    root: Path
    class_map: ClassMap
    records: list[PairRecord]  # manifest order
    classes: list[int | None]  # dominant defect class of each record (None: no defect pixels)
    train_stems: list[str]  # the real images the generator was trained on
    manifest_sha256: str
    generator: str | None

    def identity(self) -> dict[str, Any]:
        return {
            "dir": str(self.root.resolve()), "manifest_sha256": self.manifest_sha256,
            "num_samples": len(self.records), "generator": self.generator, "train_stems": list(self.train_stems),
        }


def _dominant_class(class_pixels: dict[str, int], class_map: ClassMap, where: str) -> int | None:
    best, best_count = None, 0
    for name, count in class_pixels.items():
        if name not in class_map.names:
            raise DataError(f"{where}: class '{name}' is not in the manifest's class map {list(class_map.names)}")
        cid = class_map.id_of(name)
        if cid > 0 and count > best_count:
            best, best_count = cid, count
    return best


def open_synthetic(root: str | Path) -> SyntheticSet:
    """Read a sample folder and its manifest; refuses a manifest without ``train_stems`` (no leak check possible)."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: not found; a synthetic set needs images/, masks/ and manifest.json")
    raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise DataError(f"{manifest_path}: not valid JSON ({err})") from err
    for key in ("class_map", "train_stems", "samples"):
        if key not in manifest:
            raise DataError(f"{manifest_path}: missing key '{key}' (needed for the class map, the leak check and sampling)")
    ds: DefectDataset = open_dataset(root, "index")
    by_stem = {r.stem: r for r in ds.records}
    records, classes = [], []
    for i, sample in enumerate(manifest["samples"]):
        where = f"{manifest_path} samples[{i}]"
        if "file" not in sample:
            raise DataError(f"{where}: missing key 'file'")
        stem = Path(sample["file"]).stem
        if stem not in by_stem:
            raise DataError(f"{where}: file '{sample['file']}' not found in {root / 'images'}")
        rec = by_stem[stem]
        records.append(rec)
        if "class_pixels" in sample:
            classes.append(_dominant_class(sample["class_pixels"], ds.class_map, where))
        else:
            present = sorted(present_classes(rec, ds.class_map))
            classes.append(present[0] if present else None)
    if not records:
        raise DataError(f"{manifest_path}: no samples")
    return SyntheticSet(
        root=root, class_map=ds.class_map, records=records, classes=classes,
        train_stems=[str(s) for s in manifest["train_stems"]],
        manifest_sha256=hashlib.sha256(raw).hexdigest(), generator=manifest.get("generator"),
    )


def check_no_leak(train_stems: Sequence[str], test_stems: Sequence[str], synthetic: SyntheticSet | None = None) -> None:
    """Refuse to run when a test image is a real training image or was seen by the generator."""
    test = set(test_stems)
    both = sorted(test & set(train_stems))
    if both:
        raise LeakError(
            f"found {len(both)} test image(s) in the real training selection, e.g. {both[:5]}; "
            "restrict the selection to the training split (e.g. --split train)"
        )
    if synthetic is not None:
        seen = sorted(test & set(synthetic.train_stems))
        if seen:
            raise LeakError(
                f"{synthetic.root / 'manifest.json'}: the generator was trained on {len(seen)} test image(s), "
                f"e.g. {seen[:5]}; its samples cannot be used to evaluate on this test split"
            )


def num_synthetic(num_real: int, ratio: float) -> int:
    """Synthetic pairs to add for ``num_real`` real pairs at ``ratio`` (rounded half up)."""
    if ratio < 0:
        raise DataError(f"ratio must be >= 0, got {ratio}")
    return int(math.floor(num_real * ratio + 0.5))


def choose_synthetic(classes: Sequence[int | None], count: int, seed: int, balanced: bool = True) -> list[int]:
    """Indices of ``count`` distinct synthetic pairs, drawn from ``seed``.

    Balanced: the defect classes take turns (in a seeded order), each drawing from its own shuffled
    pool; a class that runs out drops out of the rotation. Pairs without a defect class come last.
    """
    if count > len(classes):
        raise DataError(f"need {count} synthetic pairs but the synthetic set holds only {len(classes)}; sample more or lower the ratio")
    rng = random.Random(seed)
    if not balanced:
        return sorted(rng.sample(range(len(classes)), count))
    pools: dict[int | None, list[int]] = {}
    for i, c in enumerate(classes):
        pools.setdefault(c, []).append(i)
    for pool in pools.values():
        rng.shuffle(pool)
    turn = sorted(c for c in pools if c is not None)
    rng.shuffle(turn)
    chosen: list[int] = []
    while len(chosen) < count and turn:
        for c in list(turn):
            if len(chosen) == count:
                break
            chosen.append(pools[c].pop())
            if not pools[c]:
                turn.remove(c)
    chosen += pools.get(None, [])[: count - len(chosen)]
    return sorted(chosen)
