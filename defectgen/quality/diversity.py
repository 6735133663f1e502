"""Diversity of the generated set, in the offline feature space (cosine distance of EfficientNet-Lite0
features).

- ``mean_pairwise``: mean distance over all pairs of generated samples. A collapsed generator that
  repeats one image scores 0.
- ``intra_cluster`` (IC-LPIPS-style, Ojha et al. 2021): assign every sample to its nearest training
  image, take the mean pairwise distance inside each group of >= 2 samples, average over groups. It
  asks "around each training image, do the samples vary, or are they the same near-copy?", which
  plain pairwise distance misses when a generator copies each training image once.

The original IC-LPIPS uses the LPIPS network, which needs downloaded weights; these features are
the offline stand-in, so the numbers are not comparable with published IC-LPIPS values.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from defectgen.quality.memorisation import pairwise_distances


def mean_pairwise_distance(features: np.ndarray, metric: str = "cosine") -> float:
    """Mean distance over the N(N-1)/2 distinct pairs; NaN with fewer than 2 samples."""
    n = len(features)
    if n < 2:
        return float("nan")
    d = pairwise_distances(features, features, metric)
    return float(d[np.triu_indices(n, k=1)].mean())


def intra_cluster_diversity(
    features: np.ndarray, nn_index: np.ndarray, metric: str = "cosine"
) -> dict[str, Any]:
    """IC-style diversity given each sample's nearest training image (``nn_index``).

    Groups with fewer than two samples carry no within-group distance and are skipped; the value is
    NaN when every group is that small.
    """
    nn_index = np.asarray(nn_index)
    if len(nn_index) != len(features):
        raise ValueError(f"{len(features)} samples but {len(nn_index)} cluster assignments")
    groups = {int(k): np.flatnonzero(nn_index == k) for k in np.unique(nn_index)}
    per_group = {k: mean_pairwise_distance(features[idx], metric) for k, idx in groups.items() if len(idx) >= 2}
    return {
        "value": float(np.mean(list(per_group.values()))) if per_group else float("nan"),
        "n_groups": len(groups),
        "n_groups_used": len(per_group),
        "group_sizes": {str(k): int(len(idx)) for k, idx in sorted(groups.items())},
    }


def diversity(generated_features: np.ndarray, train_features: np.ndarray, metric: str = "cosine") -> dict[str, Any]:
    """Mean pairwise and intra-cluster diversity, with the training set's own pairwise value as reference."""
    nn_index = pairwise_distances(generated_features, train_features, metric).argmin(axis=1)
    return {
        "distance": metric,
        "mean_pairwise": mean_pairwise_distance(generated_features, metric),
        "train_mean_pairwise": mean_pairwise_distance(train_features, metric),
        "intra_cluster": intra_cluster_diversity(generated_features, nn_index, metric),
    }
