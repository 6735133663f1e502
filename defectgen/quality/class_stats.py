"""Class statistics of masks: does the generator produce the defect classes, and defect sizes, of
the training masks?

Per defect class, over a set of class-id masks:

- ``image_frequency``: share of masks that contain the class at all;
- ``pixel_share``: share of all labelled (non-ignore) pixels that belong to it;
- ``area_fractions``: for every mask that contains the class, the fraction of the (non-ignore)
  image it covers: the defect-area distribution.

Real and generated sets are compared with the total-variation distance between their class
frequency vectors and, per class, the 1-D Wasserstein distance between their area distributions
(in units of image fraction). Both are 0 for identical statistics.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def class_statistics(masks: np.ndarray, class_names: Sequence[str], ignore_index: int = 255) -> dict[str, Any]:
    """Per-class frequency, pixel share and area fractions of (N,H,W) class-id masks."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected masks as N x H x W, got {masks.shape}")
    valid = masks != ignore_index
    n_valid = valid.reshape(len(masks), -1).sum(axis=1)
    total_valid = max(int(n_valid.sum()), 1)
    per_class = {}
    for cid, name in enumerate(class_names):
        if cid == 0:
            continue
        counts = (masks == cid).reshape(len(masks), -1).sum(axis=1)
        present = counts > 0
        per_class[name] = {
            "image_frequency": float(present.mean()) if len(masks) else float("nan"),
            "pixel_share": float(counts.sum() / total_valid),
            "area_fractions": (counts[present] / np.maximum(n_valid[present], 1)).tolist(),
        }
    return {"n_masks": int(len(masks)), "classes": per_class}


def wasserstein_1d(a: Sequence[float], b: Sequence[float]) -> float:
    """W1 between two empirical 1-D distributions (area between their quantile functions)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    grid = np.union1d(np.arange(len(a) + 1) / len(a), np.arange(len(b) + 1) / len(b))
    mids = (grid[:-1] + grid[1:]) / 2
    qa = a[np.minimum((mids * len(a)).astype(int), len(a) - 1)]
    qb = b[np.minimum((mids * len(b)).astype(int), len(b) - 1)]
    return float(np.sum(np.diff(grid) * np.abs(qa - qb)))


def compare_class_statistics(real: dict[str, Any], generated: dict[str, Any]) -> dict[str, Any]:
    """Side-by-side summary of two :func:`class_statistics` results, with distances between them."""
    names = list(real["classes"])
    freq_r = np.array([real["classes"][n]["image_frequency"] for n in names])
    freq_g = np.array([generated["classes"][n]["image_frequency"] for n in names])
    # class mix: how the class occurrences split among classes (a distribution over classes)
    mix_r = freq_r / freq_r.sum() if freq_r.sum() > 0 else freq_r
    mix_g = freq_g / freq_g.sum() if freq_g.sum() > 0 else freq_g
    per_class = {}
    for n in names:
        r, g = real["classes"][n], generated["classes"][n]
        per_class[n] = {
            "image_frequency_real": r["image_frequency"],
            "image_frequency_generated": g["image_frequency"],
            "pixel_share_real": r["pixel_share"],
            "pixel_share_generated": g["pixel_share"],
            "mean_area_real": float(np.mean(r["area_fractions"])) if r["area_fractions"] else float("nan"),
            "mean_area_generated": float(np.mean(g["area_fractions"])) if g["area_fractions"] else float("nan"),
            "area_wasserstein": wasserstein_1d(r["area_fractions"], g["area_fractions"]),
        }
    return {
        "n_real_masks": real["n_masks"],
        "n_generated_masks": generated["n_masks"],
        "class_mix_total_variation": float(0.5 * np.abs(mix_r - mix_g).sum()),
        "classes": per_class,
    }
