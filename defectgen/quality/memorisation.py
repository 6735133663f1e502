"""Memorisation: is a generated image a near-copy of one training image?

For every generated sample we take the distance to its nearest training image, in two spaces:
pixels (RMSE of [0, 1] RGB values at the compare size) and features (cosine distance of pooled
EfficientNet-Lite0 features).

The yardstick is the training set itself. Each training image's leave-one-out nearest-neighbour
distance (to the closest *other* training image) says how close two distinct real defects get. A
generated sample is counted as memorised when

    d(sample, nearest training image) <= max(percentile_q(train LOO NN distances), exact_tol)

with q = 5 by default. An ideal generator (fresh samples from the training distribution) lands
below that line about q % of the time, so the memorised share is to be read against q: a share
near q is normal, a share far above it means copying. ``exact_tol`` (default: half a grey level
RMSE in pixel space, 1e-6 in feature space) makes exact copies count even when the training set
has duplicates and the percentile is 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PIXEL_EXACT_TOL = 0.5 / 255.0
FEATURE_EXACT_TOL = 1e-6


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """(N,H,W[,C]) uint8 -> (N, H*W*C) float64 in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def pairwise_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """(N,D) x (M,D) -> (N,M) distances. ``rmse``: Euclidean / sqrt(D); ``cosine``: 1 - cos; ``l2``.

    Euclidean distances are computed without the matrix-product shortcut so that identical rows give
    exactly 0.
    """
    a = torch.as_tensor(np.asarray(a, dtype=np.float64))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64))
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N,D) and (M,D) arrays, got {tuple(a.shape)} and {tuple(b.shape)}")
    if metric == "cosine":
        an = torch.nn.functional.normalize(a, dim=1)
        bn = torch.nn.functional.normalize(b, dim=1)
        return (1.0 - an @ bn.T).clamp_min(0.0).numpy()
    d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    if metric == "rmse":
        d = d / np.sqrt(a.shape[1])
    elif metric != "l2":
        raise ValueError(f"unknown distance '{metric}' (rmse, l2, cosine)")
    return d.numpy()


def leave_one_out_nn(train: np.ndarray, metric: str) -> np.ndarray:
    """Each training vector's distance to its nearest *other* training vector."""
    if len(train) < 2:
        raise ValueError("leave-one-out distances need at least 2 training images")
    d = pairwise_distances(train, train, metric)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


@dataclass
class NearestNeighbours:
    """Per generated sample: its nearest training image, the distance, and the memorised verdict."""

    metric: str
    nn_index: np.ndarray  # (N,) index into the training set
    nn_distance: np.ndarray  # (N,)
    train_loo: np.ndarray  # (M,) training leave-one-out NN distances
    percentile: float
    threshold: float
    memorised: np.ndarray  # (N,) bool

    @property
    def share_memorised(self) -> float:
        return float(self.memorised.mean()) if len(self.memorised) else float("nan")

    def summary(self) -> dict[str, float | int | str]:
        return {
            "distance": self.metric,
            "nn_distance_mean": float(self.nn_distance.mean()),
            "nn_distance_min": float(self.nn_distance.min()),
            "nn_distance_median": float(np.median(self.nn_distance)),
            "train_loo_nn_min": float(self.train_loo.min()),
            "train_loo_nn_median": float(np.median(self.train_loo)),
            "threshold_percentile": self.percentile,
            "threshold": self.threshold,
            "n_memorised": int(self.memorised.sum()),
            "share_memorised": self.share_memorised,
        }


def nearest_neighbours(
    generated: np.ndarray,
    train: np.ndarray,
    metric: str,
    percentile: float = 5.0,
    exact_tol: float | None = None,
) -> NearestNeighbours:
    """Nearest training vector of every generated vector and the memorised verdict (see module doc)."""
    if len(generated) == 0:
        raise ValueError("no generated samples")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    if exact_tol is None:
        exact_tol = FEATURE_EXACT_TOL if metric == "cosine" else PIXEL_EXACT_TOL
    d = pairwise_distances(generated, train, metric)
    loo = leave_one_out_nn(train, metric)
    threshold = max(float(np.percentile(loo, percentile)), exact_tol)
    nn_index = d.argmin(axis=1)
    nn_distance = d[np.arange(len(d)), nn_index]
    return NearestNeighbours(metric, nn_index, nn_distance, loo, percentile, threshold, nn_distance <= threshold)


def memorisation(
    generated_pixels: np.ndarray,
    train_pixels: np.ndarray,
    generated_features: np.ndarray,
    train_features: np.ndarray,
    percentile: float = 5.0,
) -> dict[str, NearestNeighbours]:
    """Nearest-neighbour memorisation in pixel space (RMSE) and feature space (cosine)."""
    return {
        "pixel": nearest_neighbours(pixel_vectors(generated_pixels), pixel_vectors(train_pixels), "rmse", percentile),
        "feature": nearest_neighbours(generated_features, train_features, "cosine", percentile),
    }
