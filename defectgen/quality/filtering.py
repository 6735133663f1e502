"""``defectgen filter``: keep the generated pairs whose mask a real-data segmenter agrees with.

Each generated image is segmented by the segmenter that mask agreement uses (trained on the real
training subset); a pair's score is the mean IoU between that prediction and the generated mask over
the defect classes either of them contains (1.0 when both say "no defect"). Pairs scoring at least
``min_agreement`` are copied, with their manifest entries, into a new sample folder that every other
command (``evaluate``, ``metrics``, ``ablate``) reads like ``defectgen sample`` output.

With ``per_class`` N, at most the N best-scoring pairs of each defect class (a pair counts for the
class with most pixels in its mask) are kept among those at or above the threshold: oversample each
class (``sample --classes A=60,B=60``), keep the best 20 of each, and the kept set stays balanced even
where one class passes the threshold far less often than another (the per-class top-up).

The threshold and N are settings chosen on a validation split, never tuned on the test split.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from defectgen.config import ConfigError
from defectgen.data.samples import copy_samples, read_manifest
from defectgen.data.selection import SelectionConfig
from defectgen.io import refuse_existing
from defectgen.quality.mask_agreement import Predictor
from defectgen.seg.metrics import class_iou

logger = logging.getLogger(__name__)


def per_image_agreement(pred: np.ndarray, masks: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """One score per image: mean defect-class IoU of prediction vs mask (1.0 when neither has a defect)."""
    scores = np.ones(len(masks))
    for i, (p, m) in enumerate(zip(np.asarray(pred), np.asarray(masks))):
        defects = class_iou(p, m, num_classes, ignore_index)[1:]
        if not np.isnan(defects).all():
            scores[i] = float(np.mean(defects[~np.isnan(defects)]))
    return scores


def check_threshold(min_agreement: float) -> None:
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"--min-agreement must be within [0, 1], got {min_agreement}")


def dominant_class(mask: np.ndarray, num_classes: int) -> int:
    """The defect class with most pixels in ``mask`` (0 when it has none; ignore pixels never count)."""
    counts = np.bincount(mask[mask < num_classes].ravel(), minlength=num_classes)[1:num_classes]
    return int(np.argmax(counts)) + 1 if counts.any() else 0


def choose_pairs(scores: np.ndarray, masks: np.ndarray, num_classes: int, min_agreement: float,
                 per_class: int | None = None) -> list[int]:
    """Indices of the kept pairs, in their original order: threshold, then the best ``per_class`` per class."""
    passing = [i for i, s in enumerate(scores) if s >= min_agreement]
    if per_class is None:
        return passing
    by_class: dict[int, list[int]] = {}
    for i in passing:
        by_class.setdefault(dominant_class(masks[i], num_classes), []).append(i)
    best = [i for idx in by_class.values() for i in sorted(idx, key=lambda i: (-scores[i], i))[:per_class]]
    return sorted(best)


def check_per_class(per_class: int | None) -> None:
    if per_class is not None and per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {per_class}")


def classes_present(masks: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    """How many masks contain each defect class."""
    return {n: int(sum((m == c).any() for m in masks)) for c, n in enumerate(names) if c > 0}


def filter_samples(
    synthetic: Path,
    out: Path,
    predictor: Predictor,
    min_agreement: float,
    size: int,
    segmenter_info: dict[str, Any] | None = None,
    overwrite: bool = False,
    per_class: int | None = None,
) -> dict[str, Any]:
    """Score every pair of ``synthetic`` with ``predictor``; write the kept ones to ``out``; return the summary."""
    from defectgen.data import load_pairs
    from defectgen.data.samples import open_synthetic

    synthetic, out = Path(synthetic), Path(out)
    check_threshold(min_agreement)
    check_per_class(per_class)
    refuse_existing(out, overwrite)
    manifest = read_manifest(synthetic)
    syn = open_synthetic(synthetic)  # manifest order; a file name that would leave the folder is refused
    images, masks = load_pairs(syn.records, syn.class_map, size)
    scores = per_image_agreement(predictor(images), masks, syn.class_map.num_classes, syn.class_map.ignore_index)
    keep = choose_pairs(scores, masks, syn.class_map.num_classes, min_agreement, per_class)
    by_stem = {Path(e["file"]).stem: e for e in manifest.get("samples", [])}
    names = tuple(syn.class_map.names)
    summary = {
        "source": str(synthetic), "min_agreement": min_agreement, "per_class": per_class,
        "n_in": len(scores), "n_kept": len(keep),
        "score_quantiles": {q: float(np.quantile(scores, float(q))) for q in ("0.1", "0.25", "0.5", "0.75", "0.9")},
        "masks_with_class": {"in": classes_present(masks, names), "kept": classes_present(masks[keep], names)},
        "kept_by_dominant_class": {names[c]: sum(dominant_class(masks[i], len(names)) == c for i in keep)
                                   for c in range(1, len(names))},
        "segmenter": segmenter_info or {},
    }
    kept = [syn.records[i] for i in keep]
    entries = [{**by_stem.get(r.stem, {"file": r.image.name}), "agreement": float(scores[i])} for r, i in zip(kept, keep)]
    copy_samples(out, [(r.image, r.mask) for r in kept], {
        **manifest, "num_samples": len(keep), "samples": entries,
        "filter": {**summary, "scores": {r.stem: float(s) for r, s in zip(syn.records, scores)}},
    }, grid=(images[keep], masks[keep]) if keep else None)
    return summary


def filter_by_real_segmenter(synthetic: Path, out: Path, real: SelectionConfig, seg_config: Any, seg_seed: int,
                             min_agreement: float, per_class: int | None = None, device: str | None = None,
                             overwrite: bool = False,
                             log: Callable[[str], None] | None = logger.info) -> dict[str, Any]:
    """``defectgen filter``: train the real-data segmenter on the real training subset (``real``'s explicit
    selection, else the synthetic manifest's ``train_stems``), then :func:`filter_samples` with it.

    Everything that can be refused (threshold, output folder, manifest, class map) is refused before the
    minutes of segmenter training."""
    from defectgen.data.samples import open_synthetic
    from defectgen.quality.compute import real_records
    from defectgen.quality.mask_agreement import segmenter_for

    check_threshold(min_agreement)
    check_per_class(per_class)
    refuse_existing(out, overwrite)
    syn = open_synthetic(synthetic)
    manifest = read_manifest(synthetic)
    ds = real.open()
    ds.class_map.check_compatible(syn.class_map, f"{synthetic} vs {real.data or ds.root}")
    recs, chosen_by = real_records(ds, manifest, real)
    if log:
        log(f"training the segmenter on {len(recs)} real pairs ({chosen_by})")
    judge = segmenter_for(recs, ds.class_map, seg_config.size, seg_seed, seg_config, device)
    info = {**judge.info, "real_chosen_by": chosen_by, "real_stems": [r.stem for r in recs]}
    return filter_samples(synthetic, out, judge.predict, min_agreement, seg_config.size, info, overwrite, per_class)
