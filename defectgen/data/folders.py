"""Plain folders a user names for guided sampling: good images (the backgrounds) and class-id masks.

Unlike a data set (``dataset.open_dataset``) these folders pair nothing: each file stands alone and is
known by its stem. They are read with the data set's own readers (file list, image decoding, class-name
files), resized the way training pairs are, and checked against the generator they are meant for.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from defectgen.data.classmap import ClassMap
from defectgen.data.dataset import good_images
from defectgen.data.formats import index_class_map, image_files
from defectgen.data.loading import mask_array, open_image, square, to_rgb
from defectgen.errors import DataError

GREY_MODES = ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "1")


class Loaded(NamedTuple):
    array: np.ndarray  # at the model size (or the file's own size)
    size: tuple[int, int]  # original (width, height)
    path: Path


def _named_images(folder: Path) -> list[Path]:
    """The images of a folder the user named; a missing or empty one is refused, naming it."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder}: no images (.png, .jpg, .bmp, .tif, .webp) in this folder")
    return files


def read_good_images(folder: Path, size: int | None, image_channels: int, resize_mode: str = "resize") -> dict[str, Loaded]:
    """Good images by stem, resized the way training data is (``size`` None: at their own size);
    channel count checked against the model.

    ``folder`` is a plain folder of images, a good folder with masks beside its images (``MT_Free/``)
    or a whole data set, whose defect-free images are used (``defectgen.data.good_images``).
    """
    out: dict[str, Loaded] = {}
    for path in good_images(Path(folder)):
        im = open_image(path)
        rgb = to_rgb(im)
        grey = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        if image_channels == 1 and not grey:
            raise DataError(f"{path}: colour image, but the generator makes grey (1-channel) images")
        if image_channels == 3 and im.mode in GREY_MODES:
            raise DataError(f"{path}: grey ({im.mode}) image, but the generator makes RGB (3-channel) images")
        if path.stem in out:
            raise DataError(f"{path}: duplicate stem '{path.stem}' in {folder}")
        array = rgb if size is None else np.asarray(square(Image.fromarray(rgb), size, resize_mode), dtype=np.uint8)
        out[path.stem] = Loaded(array, im.size, path)
    return out


def read_mask_folder(folder: Path, class_map: ClassMap, size: int | None) -> dict[str, Loaded]:
    """Class-id masks by stem, ids checked against the generator's class map, resized (nearest) to
    ``size`` (None: kept at their own size). A class-name file in the folder or beside it must agree."""
    folder = Path(folder)
    files = _named_images(folder)
    own = index_class_map(folder) or index_class_map(folder.parent)
    if own is not None:
        class_map.check_compatible(own, str(folder))
    return {path.stem: _read_mask(path, class_map, size) for path in files}


def _read_mask(path: Path, class_map: ClassMap, size: int | None) -> Loaded:
    """One mask of a mask folder: only the generator's class ids, and at least one defect pixel."""
    raw = mask_array(open_image(path), path)
    bad = sorted(set(np.unique(raw).tolist()) - set(range(class_map.num_classes)) - {class_map.ignore_index})
    if bad:
        shown = f"{bad[:8]} and {len(bad) - 8} more" if len(bad) > 8 else str(bad)
        raise DataError(f"{path}: mask ids {shown} are not classes of the generator "
                        f"({', '.join(f'{i}={n}' for i, n in enumerate(class_map.names))}, 255 = ignore)")
    if not ((raw > 0) & (raw != class_map.ignore_index)).any():
        raise DataError(f"{path}: empty mask (no defect pixel); every mask must hold a defect")
    im = Image.fromarray(raw.astype(np.uint8))
    array = np.asarray(im if size is None else im.resize((size, size), Image.NEAREST), dtype=np.uint8)
    return Loaded(array, im.size, path)


def read_region_masks(folder: Path, backgrounds: dict[str, tuple[Path, tuple[int, int]]]) -> dict[str, np.ndarray]:
    """``--region``: for each background (stem -> its file and (H, W)) the mask of that stem and size, as a
    boolean array: true where a new defect may go."""
    files = {p.stem: p for p in _named_images(Path(folder))}
    out = {}
    for stem, (image, shape) in backgrounds.items():
        if stem not in files:
            raise DataError(f"{folder}: no region mask for '{stem}' ({image}); --region needs one per background "
                            f"image, named by its stem (found {sorted(files)[:3]})")
        region = mask_array(open_image(files[stem]), files[stem]) > 0
        if region.shape != shape:
            raise DataError(f"{files[stem]}: region mask size {region.shape[1]}x{region.shape[0]} differs from image "
                            f"{image.name} size {shape[1]}x{shape[0]}")
        if not region.any():
            raise DataError(f"{files[stem]}: empty region mask (no non-zero pixel): no defect could be placed")
        out[stem] = region
    return out
