"""Reading every mask once when a data set is opened, so that nothing is trained on silently.

What is settled here and said in ``DefectDataset.report``:

- the class map of an index data set without a class-name file (ids 1..K become ``class_1..K``;
  masks of only 0/255 or grey levels are binary: one class ``defect``; gapped ids are refused);
- binary masks: the threshold used and how many pixels were anti-aliased (neither 0 nor full scale);
- images whose mask holds no defect pixel become defect-free ("good") images, never class examples;
- masks with only ignore pixels (255) are left out; ids outside the class map are refused; data
  without any defect pixel is refused;
- image sizes and aspect ratios (non-square images are squashed by ``resize_mode: resize``).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from dataclasses import replace

import numpy as np
from PIL import Image

from defectgen.data.classmap import ClassMap
from defectgen.data.formats import index_class_map
from defectgen.data.loading import binary_threshold, broken_link, read_mask_array
from defectgen.data.manifest import is_complete
from defectgen.data.records import DefectDataset, PairRecord
from defectgen.errors import DataError

SQUASH_NOTE = " (non-square: 'resize_mode: resize' squashes them to size x size; 'resize_mode: crop' keeps the aspect)"
MAX_DERIVED_CLASSES = 20  # ids 1..K without a names file are classes only up to this K


def _values(rec: PairRecord) -> dict[int, int]:
    vals, counts = np.unique(read_mask_array(rec.mask), return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, counts)}


def _settle_index_classes(ds: DefectDataset, hists: list[dict[int, int]]) -> bool:
    """Set the class map of an index data set; True when its masks are to be read as binary."""
    named = index_class_map(ds.root)
    present = sorted(set().union(*hists) - {0})
    if named is not None:
        ds.class_map = named
        allowed = set(range(named.num_classes)) | {named.ignore_index}
        bad = [(r, sorted(set(h) - allowed)) for r, h in zip(ds.records, hists) if set(h) - allowed]
        if bad:
            rec, ids = bad[0]
            raise DataError(f"{rec.mask}: mask ids {ids} are outside the class map {list(named.names)} "
                            f"({len(bad)} masks have such ids; ids 0..{named.num_classes - 1}, {named.ignore_index} = ignore)")
        return False
    ids = [v for v in present if v != 255]
    if ids == list(range(1, len(ids) + 1)) and 0 < len(ids) <= MAX_DERIVED_CLASSES:
        ds.class_map = ClassMap(("background",) + tuple(f"class_{i}" for i in ids))
        ds.report.append(f"warning: no class-name file (labels.txt, classes.txt, class_map.json): mask ids 1..{len(ids)} "
                         f"are named class_1..class_{len(ids)}" + ("; 255 = ignore" if 255 in present else ""))
        return False
    if 255 in present or 65535 in present:  # full scale of an 8- or 16-bit binary mask (0/255, 0/65535, maybe anti-aliased)
        ds.class_map = ClassMap(("background", "defect"))
        ds.report.append(f"no class-name file and mask values {_short(present)}: masks read as binary, one class 'defect'")
        return True
    if not present:
        return False  # no defect pixel at all: refused below with the counts
    raise DataError(f"{ds.records[0].mask.parent}: mask ids {_short(present)} are not class ids 1..K (K <= {MAX_DERIVED_CLASSES}) "
                    "and there is no class-name file; add labels.txt (one name per id, background first) so the ids "
                    "mean classes, or give binary masks as 0/255")


def _short(values: list[int]) -> str:
    return str(values) if len(values) <= 8 else f"[{values[0]}, {values[1]}, ..., {values[-1]}] ({len(values)} values)"


def _binary_stats(ds: DefectDataset, hists: list[dict[int, int]], threshold: int | None) -> list[int]:
    """Defect pixels per record after thresholding; reports the anti-aliased pixels."""
    defect, above_zero, aa, aa_masks, thresholds = [], 0, 0, 0, Counter()
    for h in hists:
        top = max(h)
        thr = binary_threshold(np.array([top]), threshold)
        full = 1 if top <= 1 else (255 if top <= 255 else 65535)
        defect.append(sum(c for v, c in h.items() if v > thr))
        above_zero += sum(c for v, c in h.items() if v > 0)
        n_aa = sum(c for v, c in h.items() if 0 < v < full)
        aa += n_aa
        aa_masks += n_aa > 0
        if top > 0:  # an all-zero mask has no scale to speak of
            thresholds[thr] += 1
    thresholds = thresholds or Counter({binary_threshold(np.array([255]), threshold): 1})
    thr_text = ", ".join(f"{t} ({n} masks)" for t, n in sorted(thresholds.items())) if len(thresholds) > 1 else str(next(iter(thresholds)))
    kept = sum(defect)
    line = (f"binary masks: pixels above {thr_text} are defect ({'--threshold' if threshold is not None else 'default: half the full scale'}); "
            f"{aa} anti-aliased pixels (neither 0 nor full scale) in {aa_masks} of {len(hists)} masks")
    if aa and kept:
        line += f"; '> 0' would mark {above_zero / kept:.2f}x the defect pixels"
    ds.report.append(line)
    return defect


def _sizes_line(records: list[PairRecord]) -> tuple[str, list[Path]]:
    """The report's line on image sizes, and the images that cannot be opened (an error once selected)."""
    sizes, unreadable = Counter(), []
    for rec in records:
        try:
            with Image.open(rec.image) as im:
                sizes[im.size] += 1
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            unreadable.append(rec.image)  # named by load_pair when it is selected
    if unreadable:
        why = f": {broken_link(unreadable[0])}" if unreadable[0].is_symlink() and not unreadable[0].exists() else ""
        return f"warning: {len(unreadable)} images cannot be opened (e.g. {unreadable[0]}{why})", unreadable
    if len(sizes) == 1:
        (w, h), = sizes
        aspect = max(w, h) / min(w, h)
        return f"image size {w}x{h} (all {len(records)}), aspect {aspect:.2f}" + (SQUASH_NOTE if aspect > 1.05 else ""), []
    aspects = [max(w, h) / min(w, h) for w, h in sizes]
    longs = [max(w, h) for w, h in sizes]
    return (f"image sizes vary: {len(sizes)} sizes, long side {min(longs)}-{max(longs)} px, aspect {min(aspects):.2f}-{max(aspects):.2f}"
            + (SQUASH_NOTE if max(aspects) > 1.05 else "")), []


def check_dataset(ds: DefectDataset, threshold: int | None = None) -> DefectDataset:
    """Read every mask once: settle the class map, find empty and all-ignore masks, report (see module doc)."""
    hists = [_values(r) for r in ds.records]
    if ds.format in ("index", "side-by-side") and _settle_index_classes(ds, hists):
        ds.records = [replace(r, binary_class=1) for r in ds.records]
    if threshold is not None:  # every binary mask, whichever reader made the record
        ds.records = [replace(r, threshold=threshold) if r.binary_class is not None else r for r in ds.records]
    binary = [r.binary_class is not None for r in ds.records]
    if any(binary):
        defect = _binary_stats(ds, hists, threshold)
        ignore = [0] * len(hists)
    else:
        ids = set(ds.class_map.defect_ids)
        defect = [sum(c for v, c in h.items() if v in ids) for h in hists]
        ignore = [h.get(ds.class_map.ignore_index, 0) for h in hists]
    if is_complete(ds.root):  # a written sample set: every pair stays a pair
        n_empty = sum(d == 0 for d in defect)
        ds.report.append(f"sample set: {len(ds.records)} pairs" + (f", {n_empty} without a defect pixel" if n_empty else ""))
        return ds
    keep = [r for r, d in zip(ds.records, defect) if d > 0]
    empty = [r for r, d, i in zip(ds.records, defect, ignore) if d == 0 and i == 0]
    all_ignore = [r for r, d, i in zip(ds.records, defect, ignore) if d == 0 and i > 0]
    if empty:
        where = Counter(ds.class_map.names[r.binary_class] if r.binary_class is not None else r.mask.parent.name
                        for r in empty)
        ds.report.append(f"warning: {len(empty)} masks hold no defect pixel ({dict(where)}; e.g. {empty[0].mask}): "
                         "used as defect-free images, not as class examples")
    if all_ignore:
        ds.report.append(f"warning: {len(all_ignore)} masks hold only ignore pixels ({ds.class_map.ignore_index}) and no defect "
                         f"pixel (e.g. {all_ignore[0].mask}): left out (neither class examples nor defect-free)")
    if not keep:
        raise DataError(f"{ds.root}: no defect pixel in any of the {len(ds.records)} masks "
                        f"({len(empty)} empty, {len(all_ignore)} only ignore); nothing to learn defects from"
                        + ("; binary masks may need a lower --threshold" if any(binary) else ""))
    ds.records = keep
    ds.good = ds.good + empty
    ds.report.append(_classes_line(ds, hists, defect))
    line, ds.unreadable = _sizes_line(ds.records + ds.good)
    ds.report.append(line)
    return ds


def _classes_line(ds: DefectDataset, hists: list[dict[int, int]], defect: list[int]) -> str:
    counts: Counter = Counter()
    for rec, h in zip(ds.records, [h for h, d in zip(hists, defect) if d > 0]):
        for cid in ([rec.binary_class] if rec.binary_class is not None else [v for v in h if 0 < v < ds.class_map.num_classes]):
            counts[ds.class_map.names[cid]] += 1
    per_class = ", ".join(f"{n} {counts[n]}" for n in ds.class_map.names[1:])
    return (f"{len(ds.records)} defect images (images per class: {per_class}); "
            f"{len(ds.good)} defect-free images (never a class, never a shot)")
