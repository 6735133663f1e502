"""The sample folder: the contract between the generator and the evaluation, written and read here only.

    DIR/images/NNNNNN.png   the images
    DIR/masks/NNNNNN.png    class-id masks (same file names)
    DIR/manifest.json       class map, ``train_stems`` (the real images the generator saw: the leak
                            check) and one entry per pair (``file``, ``class_pixels``, ``seed``, ...)
    DIR/grid.png            the first pairs side by side
    DIR/windows.png         full-size pairs only: their painted windows at the windows' own pixels

A folder without ``manifest.json`` is unfinished. The writers are the generator's sampling job
(``defectgen.export``, pair by pair, resumable), copy-paste (``write_samples``) and filter
(``copy_samples``); the readers are evaluation, metrics, mix and compare (``open_synthetic``,
``read_manifest``). ``relayout`` may rewrite a finished folder into mmseg or VOC layout. The folder's
names and the manifest reader are in ``manifest.py`` (the data readers need them without this module).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from defectgen.data.classmap import ClassMap
from defectgen.data.dataset import open_dataset
from defectgen.data.loading import present_classes
from defectgen.data.manifest import (DONE_DIR, IMAGES, JOB_FILE, MANIFEST, MASKS, is_complete, is_unfinished,
                                     read_manifest)
from defectgen.data.records import PairRecord
from defectgen.errors import DataError
from defectgen.io import atomic_dir, atomic_save_image, atomic_write_json

__all__ = ["DONE_DIR", "IMAGES", "JOB_FILE", "MANIFEST", "MASKS", "is_complete", "is_unfinished", "read_manifest",
           "GRID", "WINDOWS_GRID", "GRID_PAIRS", "SyntheticSet", "class_pixels", "copy_samples", "make_folders",
           "open_synthetic", "read_pairs", "save_pair", "write_full_grids", "write_grid", "write_manifest",
           "write_samples"]

GRID = "grid.png"
WINDOWS_GRID = "windows.png"  # full-size pairs: each painted window at its own pixels
GRID_PAIRS = 16


# ---- write ---------------------------------------------------------------------------------

def class_pixels(mask: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    """Pixels of each class in a mask (ignore pixels are not counted)."""
    counts = np.bincount(mask[mask < len(names)].ravel(), minlength=len(names))
    return {name: int(counts[i]) for i, name in enumerate(names)}


def make_folders(folder: Path) -> None:
    for sub in (IMAGES, MASKS):
        (Path(folder) / sub).mkdir(parents=True, exist_ok=True)


def save_pair(folder: Path, index: int, image: np.ndarray, mask: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """Write pair ``index`` into ``folder/images`` and ``folder/masks`` (each file atomically);
    return its manifest entry."""
    name = f"{index:06d}.png"
    atomic_save_image(Path(folder) / IMAGES / name, Image.fromarray(image))
    atomic_save_image(Path(folder) / MASKS / name, Image.fromarray(mask))
    return {"index": index, "file": name, "class_pixels": class_pixels(mask, names)}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """The last file a writer writes: from now on the folder counts as finished."""
    atomic_write_json(Path(folder) / MANIFEST, manifest)


def write_grid(folder: Path, images: np.ndarray, masks: np.ndarray, names: tuple[str, ...],
               backgrounds: np.ndarray | None = None) -> None:
    """``grid.png``: image | mask (| background) of up to 16 pairs, scaled up to about 128 px."""
    from defectgen.viz import pair_grid

    if not len(images):
        return
    images, masks = images[:GRID_PAIRS], masks[:GRID_PAIRS]
    backgrounds = None if backgrounds is None else backgrounds[:GRID_PAIRS]
    scale = max(1, 128 // masks[0].shape[0])
    atomic_save_image(Path(folder) / GRID, pair_grid(images, masks, ncols=4, scale=scale, backgrounds=backgrounds,
                                                     names=names))


def write_full_grids(folder: Path, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                     backgrounds: Sequence[np.ndarray], windows: Sequence[Sequence[dict]], names: tuple[str, ...]) -> None:
    """Full-size pairs: ``grid.png`` (background with its windows outlined | generated | overlay, whole
    images scaled down) and ``windows.png`` (the same three panels of each window at its own pixels, enlarged)."""
    from defectgen.viz import outline, overlay, panel_grid

    images, masks, backgrounds = images[:GRID_PAIRS], masks[:GRID_PAIRS], backgrounds[:GRID_PAIRS]
    if not len(images):
        return
    boxes = [[(w["x"], w["y"], w["side"]) for w in ws] for ws in windows]
    rows = [[outline(bg, bx), img, overlay(img, m)] for bg, img, m, bx in zip(backgrounds, images, masks, boxes)]
    atomic_save_image(Path(folder) / GRID, panel_grid(rows, long_side=320, ncols=2, names=names))
    crops = [[bg[y:y + s, x:x + s], img[y:y + s, x:x + s], overlay(img[y:y + s, x:x + s], m[y:y + s, x:x + s])]
             for bg, img, m, bx in zip(backgrounds, images, masks, boxes) for x, y, s in bx][:GRID_PAIRS]
    atomic_save_image(Path(folder) / WINDOWS_GRID, panel_grid(crops, long_side=128, ncols=4, names=names))


def write_samples(
    out: Path,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    class_map: ClassMap,
    train_stems: Sequence[str],
    samples: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
    grids: Callable[[Path], None] | None = None,
) -> None:
    """Write a whole sample folder (pairs and manifest) in one atomic step; ``samples`` add to each entry;
    ``grids(folder)`` draws its pictures."""
    with atomic_dir(Path(out)) as tmp:
        make_folders(tmp)
        entries = [{**save_pair(tmp, i, img, mask, class_map.names), **sample}
                   for i, (img, mask, sample) in enumerate(zip(images, masks, samples))]
        if grids is not None:
            grids(tmp)
        write_manifest(tmp, {**(extra or {}), "class_map": class_map.to_dict(), "train_stems": list(train_stems),
                             "samples": entries})


def copy_samples(out: Path, pairs: Sequence[tuple[Path, Path]], manifest: dict[str, Any],
                 grid: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """A new sample folder holding the (image, mask) files ``pairs`` as they are, in one atomic step."""
    with atomic_dir(Path(out)) as tmp:
        make_folders(tmp)
        for image, mask in pairs:
            shutil.copyfile(image, tmp / IMAGES / Path(image).name)
            shutil.copyfile(mask, tmp / MASKS / Path(mask).name)
        if grid is not None:
            write_grid(tmp, *grid, names=tuple(manifest["class_map"]["names"]))
        write_manifest(tmp, manifest)


# ---- read ----------------------------------------------------------------------------------

def read_pairs(folder: Path, files: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N,H,W,3) images and (N,H,W) masks of the pairs ``files``, at their stored size."""
    folder = Path(folder)
    images = np.stack([np.asarray(Image.open(folder / IMAGES / f).convert("RGB")) for f in files])
    masks = np.stack([np.asarray(Image.open(folder / MASKS / f)) for f in files])
    return images, masks


@dataclass
class SyntheticSet:
    """A finished sample folder, as evaluation, mix and ablate use it."""

    root: Path
    class_map: ClassMap
    records: list[PairRecord]  # manifest order
    classes: list[int | None]  # dominant defect class of each record (None: no defect pixels)
    train_stems: list[str]  # the real images the generator was trained on
    manifest_sha256: str
    generator: str | None
    full_size: bool = False  # pairs at their real backgrounds' resolution (scaled like real pairs), else windows

    def identity(self) -> dict[str, Any]:
        return {
            "dir": str(self.root.resolve()), "manifest_sha256": self.manifest_sha256,
            "num_samples": len(self.records), "generator": self.generator, "train_stems": list(self.train_stems),
        }


def _dominant_class(counts: dict[str, int], class_map: ClassMap, where: str) -> int | None:
    best, best_count = None, 0
    for name, count in counts.items():
        if name not in class_map.names:
            raise DataError(f"{where}: class '{name}' is not in the manifest's class map {list(class_map.names)}")
        cid = class_map.id_of(name)
        if cid > 0 and count > best_count:
            best, best_count = cid, count
    return best


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _plain_file_name(name: Any, where: str) -> None:
    """A manifest names files inside ``images/`` and ``masks/`` only: a path such as ``../../etc/passwd`` is refused."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise DataError(f"{where}: file {_short(name)} is not a plain file name inside {IMAGES}/ (no '/', '\\', '..')")


def open_synthetic(root: str | Path) -> SyntheticSet:
    """Read a sample folder and its manifest; refuses a manifest without ``train_stems`` (no leak check possible)."""
    root = Path(root)
    manifest_path = root / MANIFEST
    manifest = read_manifest(root)
    for key in ("class_map", "train_stems", "samples"):
        if key not in manifest:
            raise DataError(f"{manifest_path}: missing key '{key}' (needed for the class map, the leak check and sampling)")
    if not isinstance(manifest["train_stems"], list):
        raise DataError(f"{manifest_path}: 'train_stems' must be a list of stems, got {_short(manifest['train_stems'])}")
    if not isinstance(manifest["samples"], list) or not all(isinstance(s, dict) for s in manifest["samples"]):
        raise DataError(f"{manifest_path}: 'samples' must be a list of pair entries, got {_short(manifest['samples'])}")
    ds = open_dataset(root, "index")
    by_stem = {r.stem: r for r in ds.records}
    records, classes = [], []
    for i, sample in enumerate(manifest["samples"]):
        where = f"{manifest_path} samples[{i}]"
        if "file" not in sample:
            raise DataError(f"{where}: missing key 'file'")
        _plain_file_name(sample["file"], where)
        stem = Path(sample["file"]).stem
        if stem not in by_stem:
            raise DataError(f"{where}: file '{sample['file']}' not found in {root / IMAGES}")
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
        manifest_sha256=hashlib.sha256(manifest_path.read_bytes()).hexdigest(), generator=manifest.get("generator"),
        full_size=manifest.get("full_size") is True,
    )
