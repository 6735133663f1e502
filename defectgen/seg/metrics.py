"""Segmentation metrics from one dataset-level confusion matrix (mmseg-style).

IoU and Dice of a class are computed from pixel counts summed over the whole test set, then
averaged over classes ("macro" average). A class that occurs neither in the ground truth nor in the
prediction has an undefined IoU (NaN) and is left out of the mean, as mmseg's ``IoUMetric`` does; a
class absent from the ground truth but predicted somewhere gets IoU 0. Pixels labelled
``ignore_index`` count nowhere.

Two mIoUs are reported: ``miou_all`` over every class including background (the number that
matches the paper and mmseg's ``mIoU``) and ``miou_defect`` over the defect classes only (the number
that moves when defects are found better; background IoU is high and dilutes the mean).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """``cm[t, p]`` = number of pixels with ground truth ``t`` predicted as ``p`` (ignore pixels dropped)."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} pixels but ground truth has {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.size and (target.max() >= num_classes or target.min() < 0):
        raise ValueError(f"ground-truth ids outside 0..{num_classes - 1}: {sorted(set(np.unique(target)) - set(range(num_classes)))}")
    if pred.size and (pred.max() >= num_classes or pred.min() < 0):
        raise ValueError(f"predicted ids outside 0..{num_classes - 1}")
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def intersection_union(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection (true positives) and union (ground truth + prediction - intersection).

    ``cm`` may have one more column than rows: pixels predicted as no class, a miss for every class."""
    cm = np.asarray(cm)
    tp = np.diag(cm)
    return tp, cm.sum(axis=1) + cm.sum(axis=0)[: len(tp)] - tp


def iou_dice(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU and Dice from a confusion matrix; NaN where the class is in neither GT nor prediction."""
    tp, union = intersection_union(np.asarray(cm, dtype=np.float64))
    both = union + tp  # ground-truth pixels + predicted pixels
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(both > 0, 2 * tp / both, np.nan)
    return iou, dice


def _label_confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """``confusion_matrix`` of class-id maps from any predictor, with a last column for the pixels it labels
    as no class (``ignore_index`` or an unknown id)."""
    pred = np.asarray(pred).astype(np.int64)
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    return confusion_matrix(pred, target, num_classes + 1, ignore_index)[:num_classes]


def iou_per_class(pred: np.ndarray, target: np.ndarray, num_classes: int,
                  ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union pixel counts per class, summed over class-id maps (ignore pixels skipped)."""
    return intersection_union(_label_confusion(pred, target, num_classes, ignore_index))


def class_iou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """IoU per class of class-id maps, pixels summed over all maps; NaN for a class in neither."""
    return iou_dice(_label_confusion(pred, target, num_classes, ignore_index))[0]


def nanmean(values: Sequence[float]) -> float | None:
    """Mean of the defined values; ``None`` when none is defined (JSON-friendly)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else None


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def _json_float(v: float) -> float | None:
    return None if v is None or math.isnan(float(v)) else float(v)


class SegMetrics:
    """Accumulates a confusion matrix and per-image defect areas over batches, then reports.

    ``detect_min_area`` is the fraction of an image's valid pixels that must be predicted as defect
    for the image to be flagged as defective (image-level detection).
    """

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255, detect_min_area: float = 0.005):
        self.names = list(class_names)
        self.num_classes = len(self.names)
        self.ignore_index = ignore_index
        self.detect_min_area = detect_min_area
        self.cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.gt_defective: list[bool] = []
        self.flagged: list[bool] = []

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add a batch: ``pred`` and ``target`` are (N,H,W) or (H,W) class-id arrays."""
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.ndim == 2:
            pred, target = pred[None], target[None]
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground truth {target.shape}")
        for p, t in zip(pred, target):
            self.cm += confusion_matrix(p, t, self.num_classes, self.ignore_index)
            valid = t != self.ignore_index
            n_valid = int(valid.sum())
            self.gt_defective.append(bool(((t > 0) & valid).any()))
            pred_area = int(((p > 0) & valid).sum())
            self.flagged.append(n_valid > 0 and pred_area > self.detect_min_area * n_valid)

    def compute(self) -> dict[str, Any]:
        """All metrics as a JSON-ready dict (``None`` for undefined values)."""
        iou, dice = iou_dice(self.cm)
        gt_bg = self.cm[0, :].sum()
        gt_defect = self.cm[1:, :].sum()
        fp_pixels = self.cm[0, 1:].sum()  # background predicted as any defect
        fn_pixels = self.cm[1:, 0].sum()  # defect predicted as background
        gt_def = np.array(self.gt_defective, dtype=bool)
        flag = np.array(self.flagged, dtype=bool)
        return {
            "miou_all": nanmean(iou),
            "miou_defect": nanmean(iou[1:]),
            "mdice_all": nanmean(dice),
            "mdice_defect": nanmean(dice[1:]),
            "pixel_accuracy": _ratio(np.trace(self.cm), self.cm.sum()),
            "per_class": {
                name: {"iou": _json_float(iou[i]), "dice": _json_float(dice[i]), "gt_pixels": int(self.cm[i].sum())}
                for i, name in enumerate(self.names)
            },
            "pixel_fp_rate": _ratio(fp_pixels, gt_bg),
            "pixel_fn_rate": _ratio(fn_pixels, gt_defect),
            "image_recall": _ratio((flag & gt_def).sum(), gt_def.sum()),
            "image_fp_rate": _ratio((flag & ~gt_def).sum(), (~gt_def).sum()),
            "num_images": int(len(flag)),
            "num_defective_images": int(gt_def.sum()),
            "detect_min_area": self.detect_min_area,
            "confusion_matrix": self.cm.tolist(),
        }


def segmentation_metrics(
    pred: np.ndarray, target: np.ndarray, class_names: Sequence[str], ignore_index: int = 255, detect_min_area: float = 0.005
) -> dict[str, Any]:
    """Metrics of predicted vs ground-truth class-id masks, both (N,H,W)."""
    acc = SegMetrics(class_names, ignore_index, detect_min_area)
    acc.update(pred, target)
    return acc.compute()


SCALAR_METRICS = (
    "miou_all", "miou_defect", "mdice_all", "mdice_defect", "pixel_accuracy",
    "pixel_fp_rate", "pixel_fn_rate", "image_recall", "image_fp_rate",
)
