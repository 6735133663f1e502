"""Fine texture and defect area of a set of pairs: the two measured faults of over-smooth samples.

- ``laplacian_magnitude``: |discrete Laplacian| of the grey channel, per pixel (zero on the 1-px border);
- ``fine_texture``: its mean over the interior pixels, how much grain and edge detail a set has (real NEU
  steel about 12, the campaigns' unconditional samples 4-8). It also counts artefacts such as blob patterns
  or lines along the border;
- ``defect_share``: the share of mask pixels that are a defect (ignore pixels count as not a defect).
"""
from __future__ import annotations

import numpy as np

from defectgen.data.classmap import IGNORE_INDEX


def laplacian_magnitude(images: np.ndarray) -> np.ndarray:
    """|4-neighbour Laplacian| of the first (grey) channel of (N,H,W,C) images, zero on the 1-px border."""
    g = np.asarray(images)[..., 0].astype(np.float32)
    out = np.zeros_like(g)
    out[:, 1:-1, 1:-1] = np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:])
    return out


def fine_texture(images: np.ndarray) -> float:
    """Mean |Laplacian| of the grey channel over the interior pixels (the border has no four neighbours)."""
    # a contiguous copy sums in the order the campaigns' tables were computed in (same float32 result)
    return float(np.ascontiguousarray(laplacian_magnitude(images)[:, 1:-1, 1:-1]).mean())


def defect_share(masks: np.ndarray, ignore_index: int = IGNORE_INDEX) -> float:
    """Share of all mask pixels (ignore pixels included, as not a defect) that hold a defect class."""
    masks = np.asarray(masks)
    return float(((masks > 0) & (masks != ignore_index)).mean())
