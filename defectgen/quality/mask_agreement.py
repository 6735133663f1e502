"""Mask agreement: does the generated mask say where the generated image shows the defect?

A segmenter trained on the real training subset (the images the generator learned from) predicts
on every generated image; its prediction is compared with the generated mask by IoU per class,
accumulated over the whole generated set (intersection and union summed over images, as in mIoU).
A class absent from both prediction and mask in every image has no IoU (NaN, reported as null).

High agreement means image and mask are consistent in the sense a real-data segmenter sees them.
Low agreement can mean an inconsistent pair *or* a segmenter too weak to recognise the class from a
few shots, so read it next to the segmenter's quality on real data.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from defectgen.config import to_dict
from defectgen.data import ClassMap, PairRecord, load_pairs
from defectgen.seg.metrics import class_iou

Predictor = Callable[[np.ndarray], np.ndarray]


def mask_agreement(
    predict: Predictor,
    images: np.ndarray,
    masks: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int = 255,
) -> dict[str, Any]:
    """IoU between ``predict(images)`` and the generated ``masks``, per class and averaged.

    ``predict`` maps (N,H,W,3) uint8 images to (N,H,W) class ids; any callable works, which is how
    the tests check this without training a network. ``mean_iou_defects`` averages the defect classes
    that occur in the prediction or the mask.
    """
    per_class = class_iou(np.asarray(predict(images)), masks, len(class_names), ignore_index)
    iou = {name: float(per_class[c]) for c, name in enumerate(class_names)}
    defect = [iou[n] for n in class_names[1:] if not np.isnan(iou[n])]
    return {
        "iou": iou,
        "mean_iou_defects": float(np.mean(defect)) if defect else float("nan"),
        "n_images": int(len(images)),
    }


class RealDataSegmenter(NamedTuple):
    """The segmenter trained on the real training subset: the judge of generated pairs in mask agreement
    (``metrics``, compare) and in ``filter``. A tuple ``(predict, info)``; calling it predicts."""

    predict: Predictor  # (N,H,W,3) uint8 images -> (N,H,W) class ids
    info: dict[str, Any]  # its settings, seed and training-set size, for the reports

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)


_SEGMENTER_CACHE: dict[str, RealDataSegmenter] = {}


def real_data_segmenter(
    images: np.ndarray,
    masks: np.ndarray,
    num_classes: int,
    seed: int = 0,
    seg_config: Any = None,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
) -> RealDataSegmenter:
    """Train the project's segmenter (``seg_config``, default ``SegConfig()``) on the real subset.

    The last trained segmenter is kept in memory: a comparison scores many synthetic sets against the
    same real subset, and retraining an identical model (same data, settings, seed) for each is waste.
    """
    from defectgen.seg import train as seg_train  # torch: imported when a segmenter is trained

    cfg = seg_config if seg_config is not None else seg_train.SegConfig()
    info = {"config": to_dict(cfg), "seed": seed, "n_train": int(len(images)), "input_size": int(images.shape[1])}
    key = hashlib.sha1(
        b"".join([images.tobytes(), masks.tobytes(), repr((images.shape, info, num_classes, device)).encode()])
    ).hexdigest()
    if key not in _SEGMENTER_CACHE:
        on_step = (lambda r: log(f"  segmenter step {r['step']}/{cfg.steps} loss {r['loss']:.3f}")) if log else None
        model = seg_train.fit_segmenter(images, masks, cfg, num_classes=num_classes, seed=seed, device=device, log=on_step)
        _SEGMENTER_CACHE.clear()  # one model at a time bounds the memory
        _SEGMENTER_CACHE[key] = RealDataSegmenter(lambda x: seg_train.predict(model, x, cfg.eval_batch_size), info)
    return _SEGMENTER_CACHE[key]


def segmenter_for(records: list[PairRecord], class_map: ClassMap, size: int, seed: int = 0, seg_config: Any = None,
                  device: str | None = None, log: Callable[[str], None] | None = None) -> RealDataSegmenter:
    """:func:`real_data_segmenter` of the real pairs ``records``, read at ``size``² (the size it will judge)."""
    images, masks = load_pairs(records, class_map, size)
    return real_data_segmenter(images, masks, class_map.num_classes, seed, seg_config, device, log)
