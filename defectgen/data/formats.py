"""Readers for the three on-disk layouts. Each turns a folder into a ``DefectDataset``.

- ``index``: an image folder and a mask folder matched by file stem, single-channel class-id masks
  (0 background, 255 ignore), optional class-name file (VOC/NEU, mmseg ``img_dir``/``ann_dir``,
  and ``defectgen sample`` output ``images``/``masks`` + ``manifest.json``).
- ``mvtec``: ``test/<defect>/*.png`` with ``ground_truth/<defect>/<stem>_mask.png``; binary masks,
  class = defect folder; ``good`` is skipped.
- ``binary-per-class``: one folder per defect class with images and binary masks matched by stem
  plus a suffix (``X.jpg`` + ``X.png`` or ``X.png`` + ``X_mask.png``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from defectgen.data.classmap import ClassMap, read_labels_file
from defectgen.data.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
INDEX_DIR_PAIRS = (("JPEGImages", "SegmentationClass"), ("images", "masks"), ("img_dir", "ann_dir"))
LABEL_FILES = ("labels.txt", "classes.txt", "class_names.txt")
FORMATS = ("index", "mvtec", "binary-per-class")


@dataclass(frozen=True)
class PairRecord:
    """One real image and its mask on disk. ``binary_class`` is set when the mask is binary."""

    stem: str
    image: Path
    mask: Path
    label: str | None = None
    binary_class: int | None = None


@dataclass
class DefectDataset:
    root: Path
    format: str
    class_map: ClassMap
    records: list[PairRecord]
    splits: dict[str, list[str]] = field(default_factory=dict)

    def by_stem(self, stem: str) -> PairRecord:
        for rec in self.records:
            if rec.stem == stem:
                return rec
        raise DataError(f"{self.root}: no image with stem '{stem}'")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(f"{folder}: duplicate stem '{p.stem}' ({out[p.stem].name} and {p.name})")
        out[p.stem] = p
    return out


def detect_format(root: Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if (root / "manifest.json").is_file() or any((root / a).is_dir() and (root / b).is_dir() for a, b in INDEX_DIR_PAIRS):
        return "index"
    if (root / "test").is_dir() and (root / "ground_truth").is_dir():
        return "mvtec"
    if any(p.is_dir() and _images_in(p) for p in root.iterdir()):
        return "binary-per-class"
    raise DataError(
        f"{root}: cannot tell the data layout (expected JPEGImages/+SegmentationClass/, images/+masks/, "
        "img_dir/+ann_dir/, an MVTec test/+ground_truth/ folder, or one folder per class); name it with --format"
    )


def _read_splits(root: Path) -> dict[str, list[str]]:
    split_dir = root / "ImageSets" / "Segmentation"
    if not split_dir.is_dir():
        return {}
    return {p.stem: [s.strip() for s in p.read_text().split() if s.strip()] for p in sorted(split_dir.glob("*.txt"))}


def _index_class_map(root: Path, masks: list[Path]) -> ClassMap:
    if (root / "manifest.json").is_file():
        try:
            return ClassMap.from_dict(json.loads((root / "manifest.json").read_text())["class_map"])
        except (ValueError, KeyError) as err:
            raise DataError(f"{root / 'manifest.json'}: no readable class_map ({err})") from err
    if (root / "class_map.json").is_file():
        return ClassMap.load(root / "class_map.json")
    for name in LABEL_FILES:
        if (root / name).is_file():
            return read_labels_file(root / name)
    from defectgen.data.loading import read_mask_ids  # derive from the largest id present

    top = max((max(read_mask_ids(m), default=0) for m in masks), default=0)
    return ClassMap(("background",) + tuple(f"class_{i}" for i in range(1, max(top, 1) + 1)))


def read_index(root: Path) -> DefectDataset:
    root = Path(root)
    pair = next(((a, b) for a, b in INDEX_DIR_PAIRS if (root / a).is_dir() and (root / b).is_dir()), None)
    if pair is None:
        raise DataError(f"{root}: index layout needs one of {', '.join(f'{a}/+{b}/' for a, b in INDEX_DIR_PAIRS)}")
    img_root, mask_root = root / pair[0], root / pair[1]
    splits = _read_splits(root)
    subdirs = sorted(p.name for p in img_root.iterdir() if p.is_dir())
    folders = [(img_root / s, mask_root / s) for s in subdirs] if subdirs else [(img_root, mask_root)]
    if subdirs:  # mmseg layout: img_dir/train, img_dir/val ...
        splits = {s: [p.stem for p in _images_in(img_root / s)] for s in subdirs}
    records: list[PairRecord] = []
    all_masks: list[Path] = []
    seen: set[str] = set()
    for img_dir, mask_dir in folders:
        images = _by_stem(_images_in(img_dir), img_dir)
        masks = _by_stem(_images_in(mask_dir), mask_dir) if mask_dir.is_dir() else {}
        for stem, img in images.items():
            if stem not in masks:
                raise DataError(f"{img}: missing mask (expected {mask_dir}/{stem}.png)")
            if stem in seen:
                raise DataError(f"{img}: duplicate stem '{stem}' across split folders")
            seen.add(stem)
            records.append(PairRecord(stem, img, masks[stem]))
            all_masks.append(masks[stem])
    if not records:
        raise DataError(f"{img_root}: no images found")
    return DefectDataset(root, "index", _index_class_map(root, all_masks), records, splits)


def _category_root(root: Path) -> Path:
    if (root / "test").is_dir():
        return root
    raise DataError(f"{root}: MVTec layout needs test/<defect>/ and ground_truth/<defect>/")


def read_mvtec(root: Path) -> DefectDataset:
    root = _category_root(Path(root))
    defects = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name != "good")
    if not defects:
        raise DataError(f"{root / 'test'}: no defect folders (only 'good' or empty)")
    class_map = ClassMap(("background",) + tuple(defects))
    records = []
    for cid, defect in enumerate(defects, start=1):
        images = _images_in(root / "test" / defect)
        if not images:
            raise DataError(f"{root / 'test' / defect}: empty defect folder")
        for img in images:
            mask = root / "ground_truth" / defect / f"{img.stem}_mask.png"
            if not mask.is_file():
                raise DataError(f"{img}: missing mask (expected {mask})")
            records.append(PairRecord(f"{defect}_{img.stem}", img, mask, label=defect, binary_class=cid))
    return DefectDataset(root, "mvtec", class_map, records, {})


def _split_images_masks(files: list[Path], suffix: str | None, folder: Path) -> tuple[list[Path], dict[str, Path]]:
    if suffix is None:
        suffix = "_mask" if any(p.stem.endswith("_mask") for p in files) else ""
    if suffix:
        masks = {p.stem[: -len(suffix)]: p for p in files if p.stem.endswith(suffix)}
        images = [p for p in files if not p.stem.endswith(suffix)]
        return images, masks
    # X.jpg + X.png: the PNG sharing a stem with another image file is the mask
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    images, masks = [], {}
    for stem, group in by_stem.items():
        pngs = [p for p in group if p.suffix.lower() == ".png"]
        others = [p for p in group if p.suffix.lower() != ".png"]
        if len(group) > 2 or len(others) > 1:
            raise DataError(f"{folder}: duplicate stem '{stem}' ({', '.join(p.name for p in group)})")
        if others and pngs:
            images.append(others[0])
            masks[stem] = pngs[0]
        else:
            images.append(group[0])
    return images, masks


def read_binary_per_class(root: Path, mask_suffix: str | None = None) -> DefectDataset:
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "good")
    if not classes:
        raise DataError(f"{root}: no class folders found")
    class_map = ClassMap(("background",) + tuple(classes))
    records = []
    for cid, name in enumerate(classes, start=1):
        folder = root / name
        images, masks = _split_images_masks(_images_in(folder), mask_suffix, folder)
        if not images:
            raise DataError(f"{folder}: no images found")
        for img in images:
            if img.stem not in masks:
                raise DataError(f"{img}: missing mask (suffix '{mask_suffix or '_mask or .png'}')")
            records.append(PairRecord(f"{name}_{img.stem}", img, masks[img.stem], label=name, binary_class=cid))
    return DefectDataset(root, "binary-per-class", class_map, records, {})


def open_dataset(root: str | Path, format: str | None = None, mask_suffix: str | None = None) -> DefectDataset:
    """Open a data folder in any supported layout (auto-detected unless ``format`` is given)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    fmt = format or detect_format(root)
    if fmt == "index":
        return read_index(root)
    if fmt == "mvtec":
        return read_mvtec(root)
    if fmt == "binary-per-class":
        return read_binary_per_class(root, mask_suffix)
    raise DataError(f"unknown data format '{fmt}' (choose from {', '.join(FORMATS)})")
