"""Opening a data folder: read it in its layout (``formats``), then check every mask (``checks``).

Apart from ``formats`` so that the readers and the checks import each other in one direction only.
"""
from __future__ import annotations

from pathlib import Path

from defectgen.data.checks import check_dataset
from defectgen.data.errors import DataError
from defectgen.data.formats import (FORMATS, detect_format, good_folder_records, is_good_name, read_binary_per_class,
                                     read_index, read_mvtec, read_side_by_side)
from defectgen.data.manifest import is_unfinished
from defectgen.data.records import DefectDataset


def open_dataset(
    root: str | Path | None,
    format: str | None = None,
    mask_suffix: str | None = None,
    *,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    good: str | Path | None = None,
    threshold: int | None = None,
) -> DefectDataset:
    """Open a data folder in any supported layout (auto-detected unless ``format`` is given).

    ``images``/``masks`` name an image/mask folder pair explicitly (index layout); ``good`` adds a
    folder of defect-free images; ``threshold`` binarises binary masks (default 127 for 8-bit).
    Every mask is read once to check it and to find empty ones (see ``DefectDataset.report``).
    """
    if threshold is not None and not 0 <= threshold < 65535:  # -1 would mark every pixel, 65535 none
        raise DataError(f"--threshold: binary masks mark pixels above it as defect, so it must be 0 to 65534, got {threshold}")
    if images is not None or masks is not None:
        root = Path(root) if root is not None else Path(images or masks).parent
        ds = read_index(root, Path(images) if images else None, Path(masks) if masks else None)
    else:
        if root is None:
            raise DataError("no data given: pass --data DIR, or --images DIR --masks DIR")
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found")
        if is_unfinished(root):
            raise DataError(f"{root}: an unfinished `defectgen sample` folder; run that command again to finish it")
        fmt = format or detect_format(root, mask_suffix)
        if fmt == "index":
            ds = read_index(root)
        elif fmt == "mvtec":
            ds = read_mvtec(root)
        elif fmt == "binary-per-class":
            ds = read_binary_per_class(root, mask_suffix, threshold)
        elif fmt == "side-by-side":
            ds = read_side_by_side(root, mask_suffix)
        else:
            raise DataError(f"unknown data format '{fmt}' (choose from {', '.join(FORMATS)})")
    if good is not None:
        ds.good += good_folder_records(Path(good), prefix="good_")
        ds.report.append(f"{good}: defect-free folder (--good)")
    return check_dataset(ds, threshold)


def good_images(source: str | Path | DefectDataset) -> list[Path]:
    """Paths of the defect-free images of a data set, or of every image in a plain folder.

    For guided sampling onto defect-free backgrounds and for segmentation negatives: a data set
    gives its ``good`` images (good folders and empty masks); a folder that is not a data set
    (e.g. ``MT_Free/`` or ``good/``) gives its images.
    """
    if isinstance(source, DefectDataset):
        return [r.image for r in source.good]
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"{folder}: good-image folder not found")
    if not is_good_name(folder.name):
        try:
            return [r.image for r in open_dataset(folder).good]
        except DataError:
            pass  # not a data set: a plain folder of defect-free images
    return [r.image for r in good_folder_records(folder)]
