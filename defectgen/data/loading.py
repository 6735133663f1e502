"""Decode one image/mask pair from disk into arrays at the model size."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from defectgen.data.classmap import ClassMap
from defectgen.data.records import PairRecord
from defectgen.errors import DataError

RESIZE_MODES = ("resize", "center-crop")


def open_image(path: Path) -> Image.Image:
    """The image file at ``path``, decoded; any reason it cannot be is a ``DataError`` naming the file."""
    if Path(path).is_symlink() and not Path(path).exists():
        raise DataError(f"{path}: {broken_link(Path(path))}")
    try:
        im = Image.open(path)
        im.load()
        return im
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: image too large to open safely (a decompression bomb?): {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from err


def broken_link(path: Path) -> str:
    """Why the symbolic link ``path`` leads to no file."""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return "a symbolic link that loops (it points back to itself)"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link that loops (it points back to itself)"
    return f"a symbolic link to a missing file ({os.readlink(path)})"


def to_rgb(im: Image.Image) -> np.ndarray:
    """(H,W,3) uint8 of any image mode: 16-bit and float greys scaled to 8 bits, transparency onto black."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 or im.mode.startswith("I;16") else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12) * 255.0
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def mask_array(im: Image.Image, path: Path) -> np.ndarray:
    """(H,W) int64 mask values: palette index, grey level or 16-bit value; a colour mask is a ``DataError``."""
    if im.mode in ("RGB", "RGBA"):
        a = np.asarray(im.convert("RGB"))
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            raise DataError(f"{path}: colour mask; masks must be single-channel class ids (or palette PNGs)")
        return a[..., 0].astype(np.int64)
    if im.mode == "LA":
        im = im.convert("L")
    return np.asarray(im).astype(np.int64)  # P: palette index = class id; L/I;16: the value


def binary_threshold(raw: np.ndarray, threshold: int | None = None) -> int:
    """Pixels above this value are defect in a binary mask.

    Default: half the mask's full scale, so anti-aliased edges are split evenly: 127 for 8-bit
    masks (0/255), 32767 for 16-bit ones, 0 for 0/1 masks.
    """
    if threshold is not None:
        return threshold
    top = int(raw.max()) if raw.size else 0
    return 0 if top <= 1 else (127 if top <= 255 else 32767)


def read_mask_array(path: Path) -> np.ndarray:
    """The raw values of a mask file as int64 (H,W)."""
    return mask_array(open_image(path), path)


def read_mask_ids(path: Path) -> set[int]:
    """Distinct values of a mask file (ignore pixels included)."""
    return {int(v) for v in np.unique(mask_array(open_image(path), path))}


def square(im: Image.Image, size: int, mode: str, resample: int = Image.BICUBIC) -> Image.Image:
    """``im`` at ``size``² the way training pairs are made: squashed (``resize``) or its centre square
    (``center-crop``) scaled; masks take ``resample=Image.NEAREST``."""
    if mode == "crop":
        raise DataError("resize_mode 'crop' draws crops of scaled images during training (defectgen.data.geometry); "
                        "loading pairs at one fixed size needs 'resize' or 'center-crop'")
    if mode not in RESIZE_MODES:
        raise DataError(f"unknown resize mode '{mode}' (choose from {', '.join(RESIZE_MODES)}, or crop for training)")
    if mode == "center-crop":
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im.resize((size, size), resample)


def load_pair(
    record: PairRecord, class_map: ClassMap, size: int | None = None, mode: str = "resize"
) -> tuple[np.ndarray, np.ndarray]:
    """Image as uint8 HxWx3 RGB and mask as uint8 HxW class ids (255 = ignore), both ``size``²."""
    img = Image.fromarray(to_rgb(open_image(record.image)))
    if record.mask is None:  # a defect-free image without a mask file
        raw = np.zeros((img.size[1], img.size[0]), np.int64)
    else:
        raw = mask_array(open_image(record.mask), record.mask)
    if raw.shape != (img.size[1], img.size[0]):
        raise DataError(
            f"{record.mask}: mask size {raw.shape[1]}x{raw.shape[0]} differs from image "
            f"{record.image.name} size {img.size[0]}x{img.size[1]}"
        )
    if record.binary_class is not None:
        mask = np.where(raw > binary_threshold(raw, record.threshold), record.binary_class, 0)
    else:
        mask = raw
        bad = sorted(set(np.unique(mask).tolist()) - set(range(class_map.num_classes)) - {class_map.ignore_index})
        if bad:
            raise DataError(
                f"{record.mask}: mask ids {bad} are outside the class map "
                f"(ids 0..{class_map.num_classes - 1} and {class_map.ignore_index} = ignore)"
            )
    mask_im = Image.fromarray(mask.astype(np.uint8))
    if size is not None:
        img, mask_im = square(img, size, mode), square(mask_im, size, mode, Image.NEAREST)
    return np.asarray(img, dtype=np.uint8), np.asarray(mask_im, dtype=np.uint8)


def load_pairs(
    records: list[PairRecord], class_map: ClassMap, size: int | None, mode: str = "resize"
) -> tuple[np.ndarray, np.ndarray]:
    """Stack many pairs: (N,H,W,3) uint8 images and (N,H,W) uint8 masks."""
    if not records:
        raise DataError("no images selected")
    if size is not None:  # refused before the first pair is decoded, not by a MemoryError at the hundredth
        from defectgen.device import need_memory

        need_memory(len(records) * size * size * 4 * 2, f"{len(records)} pairs at {size}x{size} px", "cpu")
    pairs = [load_pair(r, class_map, size, mode) for r in records]
    shapes = {p[0].shape for p in pairs}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)}; pass a model size to resize them")
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def present_classes(record: PairRecord, class_map: ClassMap) -> set[int]:
    """Defect class ids present in the record's mask."""
    if record.mask is None:
        return set()
    if record.binary_class is not None:
        return {record.binary_class}
    ids = read_mask_ids(record.mask)
    return {i for i in ids if 0 < i < class_map.num_classes}
