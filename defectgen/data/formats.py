"""Readers for the on-disk layouts. Each turns a folder into a ``DefectDataset``.

- ``index``: an image folder and a mask folder matched by file stem (VOC/NEU ``JPEGImages`` +
  ``SegmentationClass``, ``images``/``masks``, ``img``/``ann``, ``images``/``labels``, mmseg
  ``img_dir``/``ann_dir``, ``defectgen sample`` output, ... or any pair named with
  ``images=``/``masks=``). Masks are class ids (0 background, 255 ignore) named by a class-name
  file; without one, masks holding only 0/255 (or grey levels up to 255) are read as binary.
- ``mvtec``: ``test/<defect>/*.png`` with ``ground_truth/<defect>/<stem>_mask.png``; binary masks,
  class = defect folder; ``good`` folders hold the defect-free images.
- ``binary-per-class``: one folder per defect class with images and binary masks matched by stem
  (``X.jpg`` + ``X.png`` or ``X.png`` + ``X_mask.png``), directly or one level down
  (``Class/Imgs/``, ``Class/images/`` + ``Class/masks/``).
- ``side-by-side``: folders at any depth holding images with their masks beside them, paired by a
  mask suffix (``X.jpg`` + ``X_label.bmp`` as KolektorSDD ships, ``X.png`` + ``X_GT.png`` as
  KolektorSDD2, ``X_mask``, or ``mask_suffix``). Masks are read as in ``index`` (one class ``defect``
  for 0/255 masks unless a class-name file says otherwise); top folders named train/val/test are splits.

Defect-free ("good") images are kept apart in ``DefectDataset.good``: folders named ``good``,
``*Free*``, ``OK``, ``normal`` (or given with ``good=``), and images whose mask holds no defect
pixel. They are never a class and never a few-shot example. ``open_dataset`` (``dataset.py``) checks every
mask once (see ``checks.py``) and says what it found in ``DefectDataset.report``.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from typing import Literal, get_args
from pathlib import Path

from defectgen.data.classmap import ClassMap, read_labels_file
from defectgen.data.errors import DataError, read_text
from defectgen.data.manifest import MANIFEST, is_complete, read_manifest
from defectgen.data.records import DefectDataset, PairRecord

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Recognised image/mask folder names (case-insensitive). Pairs are tried in this order.
IMAGE_DIR_NAMES = ("JPEGImages", "img_dir", "images", "image", "imgs", "img")
MASK_DIR_NAMES = ("SegmentationClass", "ann_dir", "masks", "mask", "labels", "label", "annotations", "ann",
                  "anns", "gt", "groundtruth")
INDEX_DIR_PAIRS = tuple((a, b) for a in IMAGE_DIR_NAMES for b in MASK_DIR_NAMES)
LABEL_FILES = ("labels.txt", "classes.txt", "class_names.txt")
NOT_CLASS_DIRS = ("ImageSets", "splits")  # split-file folders next to data folders
DataFormat = Literal["index", "mvtec", "binary-per-class", "side-by-side"]
FORMATS: tuple[str, ...] = get_args(DataFormat)
MASK_SUFFIXES = ("_label", "_GT", "_mask")  # side-by-side masks: KolektorSDD, KolektorSDD2, common use (any case)
SPLIT_DIRS = ("train", "val", "valid", "validation", "test")  # folder names that are splits, never classes
# A folder whose name holds one of these words (split at _ - . space) holds defect-free images.
GOOD_WORDS = ("good", "free", "ok", "normal", "defectfree", "nodefect", "clean")


def image_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` (by ``IMAGE_EXTS``, hidden files left out). A broken symbolic link with an image
    name counts too, so that it is named as an image that cannot be opened rather than skipped (its mask would
    then be blamed for lacking an image)."""
    return sorted(p for p in folder.iterdir() if (p.is_file() or (p.is_symlink() and not p.exists()))
                  and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(f"{folder}: duplicate stem '{p.stem}' ({out[p.stem].name} and {p.name})")
        out[p.stem] = p
    return out


def _folder_text(folder: Path) -> str:
    """``name/``, and where a symbolic link leads."""
    return f"{folder.name}/" + (f" (a symbolic link to {os.readlink(folder)})" if folder.is_symlink() else "")


def is_good_name(name: str) -> bool:
    """True for folder names that mean defect-free: ``good``, ``MT_Free``, ``OK``, ``normal`` ..."""
    words = [w for w in re.split(r"[_\-. ]+", name.lower()) if w]
    return any(w in GOOD_WORDS for w in words) or name.lower().replace("_", "").replace("-", "") in GOOD_WORDS


def find_dir_pair(root: Path) -> tuple[Path, Path] | None:
    """The first recognised image/mask folder pair directly under ``root`` (names case-insensitive)."""
    children = {p.name.lower(): p for p in _subdirs(root)}
    for a, b in INDEX_DIR_PAIRS:
        if a.lower() in children and b.lower() in children:
            return children[a.lower()], children[b.lower()]
    return None


# ---- layout detection: every layout says why it does not fit ----

def _why_not_index(root: Path) -> str | None:
    if is_complete(root) and find_dir_pair(root):
        return None
    pair = find_dir_pair(root)
    if pair is None:
        names = [p.name for p in _subdirs(root)]
        return f"no image/mask folder pair (e.g. images/+masks/, img/+ann/; found {names[:6] or 'no folders'})"
    return None


def _why_not_mvtec(root: Path) -> str | None:
    if (root / "test").is_dir() and (root / "ground_truth").is_dir():
        return None
    return "no test/ + ground_truth/ folders"


def _class_folder_files(folder: Path) -> tuple[list[Path], dict[str, Path]] | str:
    """Images and their masks (by stem) of one class folder, or why none could be matched."""
    files = image_files(folder)
    subs = _subdirs(folder)
    if not files:
        pair = find_dir_pair(folder)
        if pair is not None:  # Class/images/ + Class/masks/
            images = image_files(pair[0])
            masks = _by_stem(image_files(pair[1]), pair[1])
            if not images:
                return f"{pair[0]}: no images"
            return images, masks
        with_images = [s for s in subs if image_files(s)]
        if len(with_images) == 1:  # Class/Imgs/X.jpg + X.png
            files, folder = image_files(with_images[0]), with_images[0]
        elif with_images:
            return f"{folder.name}/ has several image subfolders ({', '.join(s.name for s in with_images)}) and no image/mask pair among them"
        else:
            return f"{folder.name}/ holds no images"
    return _split_images_masks(files, None, folder)


def _why_not_binary(root: Path) -> str | None:
    classes = [p for p in _subdirs(root) if not is_good_name(p.name) and p.name not in NOT_CLASS_DIRS]
    if not classes:
        return "no class folders"
    splits = [p.name for p in classes if p.name.lower() in SPLIT_DIRS]
    if splits:
        return f"{', '.join(s + '/' for s in splits)} are split folders, not defect classes"
    reasons = []
    for folder in classes:
        got = _class_folder_files(folder)
        if isinstance(got, str):
            reasons.append(got)
        elif not got[1]:
            reasons.append(f"{folder.name}/: {len(got[0])} images, none with a mask beside it (X.jpg + X.png or X_mask.png)")
    if not reasons:
        return None
    hint = _stem_sharing_hint(root)
    return "; ".join(reasons[:2]) + (f"; {hint}" if hint else "")


def _stem_sharing_hint(root: Path) -> str:
    """Two folders whose files share stems look like an image/mask pair under unusual names, when one of
    them holds masks (KolektorSDD's kos01/ and kos02/ share stems, but both hold photos)."""
    subs = [s for s in _subdirs(root) if image_files(s)]
    stems = {s: {p.stem for p in image_files(s)} for s in subs}
    for i, a in enumerate(subs):
        for b in subs[i + 1:]:
            if len(stems[a] & stems[b]) >= max(1, min(len(stems[a]), len(stems[b])) // 2):
                masks = [f for f in (a, b) if _looks_like_masks(f)]
                if len(masks) == 1:
                    img = b if masks[0] == a else a
                    return f"{a.name}/ and {b.name}/ share file stems: an image/mask pair? pass --images {img} --masks {masks[0]}"
    return ""


MASK_MAX_VALUES = 32  # a mask's first file holds few distinct values (class ids, or 0/255 with some anti-aliasing)


def _looks_like_masks(folder: Path) -> bool:
    """Whether the folder's first image is single-channel with few distinct values, as masks are and photos are not."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(image_files(folder)[0]) as im:
            return im.mode in ("1", "L", "P", "I", "I;16") and len(np.unique(np.asarray(im))) <= MASK_MAX_VALUES
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def detect_format(root: Path, mask_suffix: str | None = None) -> str:
    """The layout of ``root``; when none fits, one error saying why each was refused."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    reasons = {}
    for fmt, why_not in (("index", _why_not_index), ("mvtec", _why_not_mvtec), ("binary-per-class", _why_not_binary),
                         ("side-by-side", lambda r: _why_not_side_by_side(r, mask_suffix))):
        reason = why_not(root)
        if reason is None:
            return fmt
        reasons[fmt] = reason
    tried = "; ".join(f"{fmt}: {why}" for fmt, why in reasons.items())
    raise DataError(f"{root}: cannot tell the data layout. Tried {tried}. Name the layout with --format, "
                    "or the folders with --images DIR --masks DIR")


# ---- index ----

def _read_splits(root: Path) -> dict[str, list[str]]:
    split_dir = root / "ImageSets" / "Segmentation"
    if not split_dir.is_dir():
        return {}
    return {p.stem: [s.strip() for s in read_text(p).split() if s.strip()] for p in sorted(split_dir.glob("*.txt"))}


def index_class_map(root: Path) -> ClassMap | None:
    """The class map named by ``root``'s manifest, class_map.json or class-name file; None if none."""
    if is_complete(root):
        try:
            return ClassMap.from_dict(read_manifest(root)["class_map"])
        except (KeyError, TypeError) as err:
            raise DataError(f"{root / MANIFEST}: no readable class_map ({err})") from err
    if (root / "class_map.json").is_file():
        return ClassMap.load(root / "class_map.json")
    for name in LABEL_FILES:
        if (root / name).is_file():
            return read_labels_file(root / name)
    return None


def read_index(root: Path, images: Path | None = None, masks: Path | None = None) -> DefectDataset:
    """Read an image/mask folder pair; the class map is settled by ``checks.settle_class_map``."""
    root = Path(root)
    if images is not None or masks is not None:
        if images is None or masks is None:
            raise DataError("--images and --masks go together: name both folders")
        img_root, mask_root = Path(images), Path(masks)
        for flag, d in (("--images", img_root), ("--masks", mask_root)):
            if not d.is_dir():
                raise DataError(f"{flag} {d}: folder not found")
    else:
        pair = find_dir_pair(root)
        if pair is None:
            raise DataError(f"{root}: index layout needs an image/mask folder pair ({_why_not_index(root)}); "
                            "or name them with --images DIR --masks DIR")
        img_root, mask_root = pair
    if not image_files(mask_root) and not _subdirs(mask_root) and any(mask_root.glob("*.txt")):
        raise DataError(f"{mask_root}: holds text files, not mask images (YOLO-style boxes?); masks must be images")
    splits = _read_splits(root)
    subdirs = [p.name for p in _subdirs(img_root)]
    if subdirs and image_files(img_root):
        shown = ", ".join(_folder_text(img_root / s) for s in subdirs[:3])
        raise DataError(f"{img_root}: holds {len(image_files(img_root))} images and also the folder(s) {shown}; an image "
                        "folder holds either images or split subfolders (img_dir/train/), not both")
    folders = [(img_root / s, mask_root / s) for s in subdirs] if subdirs else [(img_root, mask_root)]
    if subdirs:  # mmseg layout: img_dir/train, img_dir/val ...
        splits = {s: [p.stem for p in image_files(img_root / s)] for s in subdirs}
    records: list[PairRecord] = []
    seen: set[str] = set()
    orphans: list[Path] = []
    for img_dir, mask_dir in folders:
        imgs = _by_stem(image_files(img_dir), img_dir)
        masks_by = _by_stem(image_files(mask_dir), mask_dir) if mask_dir.is_dir() else {}
        orphans += [m for stem, m in sorted(masks_by.items()) if stem not in imgs]
        for stem, img in imgs.items():
            if stem not in masks_by:
                raise DataError(f"{img}: missing mask (expected {mask_dir}/{stem}.png)")
            if stem in seen:
                raise DataError(f"{img}: duplicate stem '{stem}' across split folders")
            seen.add(stem)
            records.append(PairRecord(stem, img, masks_by[stem]))
    if not records:
        inside = f" (nor in its subfolders {', '.join(_folder_text(img_root / s) for s in subdirs[:3])})" if subdirs else ""
        raise DataError(f"{img_root}: no images found{inside}")
    names = index_class_map(root) or ClassMap(("background", "defect"))  # placeholder until the masks are read
    ds = DefectDataset(root, "index", names, records, splits)
    ds.report.append(f"index layout: images {img_root}, masks {mask_root}: {len(records)} pairs")
    if orphans:
        ds.report.append(f"warning: {len(orphans)} masks have no image and are not used (e.g. {orphans[0]})")
    for g in _subdirs(root) if root.is_dir() else []:
        if is_good_name(g.name) and g not in (img_root, mask_root):
            ds.good += good_folder_records(g, prefix=f"{g.name}_")
            ds.report.append(f"{g.name}/: defect-free folder (by its name)")
    return ds


# ---- mvtec ----

def read_mvtec(root: Path) -> DefectDataset:
    root = Path(root)
    if not (root / "test").is_dir():
        raise DataError(f"{root}: MVTec layout needs test/<defect>/ and ground_truth/<defect>/")
    defects = sorted(p.name for p in _subdirs(root / "test") if p.name != "good")
    if not defects:
        raise DataError(f"{root / 'test'}: no defect folders (only 'good' or empty)")
    class_map = ClassMap(("background",) + tuple(defects))
    records = []
    for cid, defect in enumerate(defects, start=1):
        images = image_files(root / "test" / defect)
        if not images:
            raise DataError(f"{root / 'test' / defect}: empty defect folder")
        for img in images:
            mask = root / "ground_truth" / defect / f"{img.stem}_mask.png"
            if not mask.is_file():
                raise DataError(f"{img}: missing mask (expected {mask})")
            records.append(PairRecord(f"{defect}_{img.stem}", img, mask, binary_class=cid))
    good = [PairRecord(f"{part}_good_{p.stem}", p, None) for part in ("train", "test")
            if (root / part / "good").is_dir() for p in image_files(root / part / "good")]
    ds = DefectDataset(root, "mvtec", class_map, records, {}, good)
    ds.report.append(f"mvtec layout: {len(defects)} defect folders, {len(records)} pairs")
    return ds


# ---- binary-per-class ----

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


def _class_pairs(folder: Path, mask_suffix: str | None) -> tuple[list[Path], dict[str, Path]]:
    if mask_suffix is not None and image_files(folder):
        return _split_images_masks(image_files(folder), mask_suffix, folder)
    if mask_suffix is not None:
        inner = [s for s in _subdirs(folder) if image_files(s)]
        if len(inner) == 1:
            return _split_images_masks(image_files(inner[0]), mask_suffix, inner[0])
    got = _class_folder_files(folder)
    if isinstance(got, str):
        raise DataError(f"{folder}: cannot read this class folder: {got}")
    return got


def read_binary_per_class(root: Path, mask_suffix: str | None = None, threshold: int | None = None) -> DefectDataset:
    root = Path(root)
    folders = _subdirs(root)
    good_dirs = [p for p in folders if is_good_name(p.name)]
    classes = [p.name for p in folders if p not in good_dirs and p.name not in NOT_CLASS_DIRS]
    if not classes:
        raise DataError(f"{root}: no class folders found" + (f" (only defect-free: {[p.name for p in good_dirs]})" if good_dirs else ""))
    class_map = ClassMap(("background",) + tuple(classes))
    records = []
    for cid, name in enumerate(classes, start=1):
        images, masks = _class_pairs(root / name, mask_suffix)
        if not images:
            raise DataError(f"{root / name}: no images found")
        for img in images:
            if img.stem not in masks:
                raise DataError(f"{img}: missing mask (X.jpg + X.png beside it, or suffix '{mask_suffix or '_mask'}')")
            records.append(PairRecord(f"{name}_{img.stem}", img, masks[img.stem], binary_class=cid,
                                      threshold=threshold))
    ds = DefectDataset(root, "binary-per-class", class_map, records, {})
    ds.report.append(f"binary-per-class layout: classes {classes}, {len(records)} pairs")
    for g in good_dirs:
        ds.good += good_folder_records(g, prefix=f"{g.name}_")
        ds.report.append(f"{g.name}/: defect-free folder (by its name), not a class")
    return ds


# ---- side-by-side ----

def _tree_images(root: Path) -> dict[Path, list[Path]]:
    """The image files of every folder under ``root`` (any depth; hidden and split-file folders left out)."""
    tree = {}
    for folder, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_CLASS_DIRS)
        files = image_files(Path(folder))
        if files:
            tree[Path(folder)] = files
    return tree


def _suffix_pairs(files: list[Path], suffix: str) -> dict[Path, Path]:
    """image -> mask among the files of one folder: ``X.any`` and ``X<suffix>.any`` (the suffix in any case)."""
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem.lower(), []).append(p)
    pairs = {}
    for p in files:
        if len(p.stem) > len(suffix) and p.stem.lower().endswith(suffix.lower()):
            base = by_stem.get(p.stem[: -len(suffix)].lower(), [])
            if len(base) == 1:
                pairs[base[0]] = p
    return pairs


def _pairing_suffix(tree: dict[Path, list[Path]], mask_suffix: str | None) -> str | None:
    """``mask_suffix``, or the known suffix that pairs most files; None when none pairs any."""
    counts = {s: sum(len(_suffix_pairs(f, s)) for f in tree.values()) for s in ([mask_suffix] if mask_suffix else MASK_SUFFIXES)}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def _seen_suffix(tree: dict[Path, list[Path]]) -> tuple[str, int] | None:
    """The commonest ``_word`` by which files of one folder pair up (``X.png`` + ``X_word.png``), and how often."""
    seen: Counter = Counter()
    for files in tree.values():
        stems = {p.stem.lower() for p in files}
        for p in files:
            base, sep, word = p.stem.rpartition("_")
            if sep and base and word and base.lower() in stems:
                seen[f"_{word}"] += 1
    return seen.most_common(1)[0] if seen else None


def _why_not_side_by_side(root: Path, mask_suffix: str | None = None) -> str | None:
    tree = _tree_images(root)
    if _pairing_suffix(tree, mask_suffix) is not None:
        return None
    seen = _seen_suffix(tree)
    hint = f"; files pair as X + X{seen[0]} ({seen[1]} pairs): pass --mask-suffix {seen[0]}" if seen else ""
    tried = f"'{mask_suffix}'" if mask_suffix else "/".join(MASK_SUFFIXES)
    return f"no image with its mask beside it (X.jpg + X{MASK_SUFFIXES[0]}.png; mask suffix {tried}){hint}"


def read_side_by_side(root: Path, mask_suffix: str | None = None) -> DefectDataset:
    """Images and their masks side by side in folders at any depth, paired by a mask suffix; stems are the
    relative path (``kos01/Part0.jpg`` -> ``kos01_Part0``); the class map is settled from the masks (checks.py)."""
    root = Path(root)
    tree = _tree_images(root)
    suffix = _pairing_suffix(tree, mask_suffix)
    if suffix is None:
        raise DataError(f"{root}: side-by-side layout: {_why_not_side_by_side(root, mask_suffix)}")
    records, good, splits, seen = [], [], _read_splits(root), {}
    for folder, files in tree.items():
        pairs, rel = _suffix_pairs(files, suffix), folder.relative_to(root).parts
        masks = set(pairs.values())
        for img in (p for p in files if p not in masks):
            stem = "_".join((*rel, img.stem))
            if stem in seen:
                raise DataError(f"{img}: duplicate stem '{stem}' ({seen[stem].name} and {img.name})")
            seen[stem] = img
            if img in pairs:
                records.append(PairRecord(stem, img, pairs[img]))
            elif any(is_good_name(part) for part in rel):
                good.append(PairRecord(stem, img, None))
            else:
                raise DataError(f"{img}: missing mask (expected {img.stem}{suffix} with an image extension beside it)")
            if rel and rel[0].lower() in SPLIT_DIRS:
                splits.setdefault(rel[0], []).append(stem)
    if not records:
        raise DataError(f"{root}: no image with a mask beside it (mask suffix '{suffix}')")
    ds = DefectDataset(root, "side-by-side", ClassMap(("background", "defect")), records, splits, good)
    ds.report.append(f"side-by-side layout: {len(records)} images with their masks beside them (mask suffix '{suffix}') "
                     f"in {len(tree)} folders" + (f"; splits {', '.join(sorted(splits))}" if splits else ""))
    if good:
        ds.report.append(f"{len(good)} images without masks in defect-free folders (by their names)")
    return ds


def good_folder_records(folder: Path, prefix: str = "") -> list[PairRecord]:
    """Defect-free images of a folder (one level of nesting allowed); mask files beside them are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: good-image folder not found")
    files = image_files(folder)
    if not files:
        inner = [s for s in _subdirs(folder) if image_files(s)]
        pair = find_dir_pair(folder)
        src = pair[0] if pair else (inner[0] if len(inner) == 1 else None)
        files = image_files(src) if src else []
    if not files:
        raise DataError(f"{folder}: no images in this good-image folder")
    images, _ = _split_images_masks(files, None, folder)
    return [PairRecord(f"{prefix}{p.stem}", p, None) for p in sorted(images)]
