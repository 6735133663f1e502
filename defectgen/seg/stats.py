"""Mean ± std over seeds and the paired gain over a baseline with a Student-t confidence interval.

The gain of a setting over the baseline (ratio 0) is paired by seed: seed s of the setting and seed
s of the baseline share the model initialisation, the batch order and the augmentation draws, so
the per-seed difference removes most of the seed-to-seed noise.
"""
from __future__ import annotations

import math
from typing import Sequence

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30 (scipy is optional)
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)


def t_quantile(df: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t critical value for ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    try:
        from scipy.stats import t

        return float(t.ppf(0.5 + confidence / 2, df))
    except ImportError:
        pass
    if abs(confidence - 0.95) > 1e-9:
        raise ValueError("without scipy only the 95% interval is available")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # Cornish-Fisher expansion around the normal quantile, accurate to 1e-4 for df > 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def mean_std(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (ddof=1; ``None`` for a single value) of the defined values."""
    vals = _clean(values)
    n = len(vals)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None  # undefined for one value
    return {"mean": mean, "std": std, "n": n}


def paired_gain(
    values: Sequence[float | None], baseline: Sequence[float | None], confidence: float = 0.95
) -> dict[str, float | int | None]:
    """Mean of ``values[i] - baseline[i]`` with a t-interval; pairs with a missing side are dropped."""
    if len(values) != len(baseline):
        raise ValueError(f"paired gain needs equal-length lists, got {len(values)} and {len(baseline)}")
    diffs = [
        float(v) - float(b)
        for v, b in zip(values, baseline)
        if v is not None and b is not None and not math.isnan(float(v)) and not math.isnan(float(b))
    ]
    stats = mean_std(diffs)
    n = stats["n"]
    if n < 2:
        return {"mean": stats["mean"], "std": stats["std"], "n": n, "ci_low": None, "ci_high": None, "confidence": confidence}
    half = t_quantile(n - 1, confidence) * stats["std"] / math.sqrt(n)
    return {
        "mean": stats["mean"], "std": stats["std"], "n": n,
        "ci_low": stats["mean"] - half, "ci_high": stats["mean"] + half, "confidence": confidence,
    }
