"""Mixing real and synthetic pairs: how many synthetic pairs, which ones, and the leak check.

``ratio`` is the number of synthetic pairs per real training pair: with 30 real pairs, ratio 0.5
adds 15 synthetic pairs and ratio 2 adds 60. Which synthetic pairs are taken is drawn from the
evaluation seed, optionally balanced over the defect classes (each pair counts for the defect
class that covers most of its mask), always without replacement.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

from defectgen.data import DataError
from defectgen.data.samples import MANIFEST, SyntheticSet


class LeakError(DataError):
    """A test image was seen by the generator or is also a training image."""


def check_no_leak(train_stems: Sequence[str], test_stems: Sequence[str], synthetic: SyntheticSet | None = None) -> None:
    """Refuse to run when a test image is a real training image or was seen by the generator."""
    test = set(test_stems)
    both = sorted(test & set(train_stems))
    if both:
        raise LeakError(
            f"found {len(both)} test image(s) in the real training selection, e.g. {both[:5]}; "
            "restrict the selection to the training split (e.g. --split train)"
        )
    if synthetic is not None:
        seen = sorted(test & set(synthetic.train_stems))
        if seen:
            raise LeakError(
                f"{synthetic.root / MANIFEST}: the generator was trained on {len(seen)} test image(s), "
                f"e.g. {seen[:5]}; its samples cannot be used to evaluate on this test split"
            )


def num_synthetic(num_real: int, ratio: float) -> int:
    """Synthetic pairs to add for ``num_real`` real pairs at ``ratio`` (rounded half up)."""
    if ratio < 0:
        raise DataError(f"ratio must be >= 0, got {ratio}")
    return int(math.floor(num_real * ratio + 0.5))


def choose_synthetic(classes: Sequence[int | None], count: int, seed: int, balanced: bool = True) -> list[int]:
    """Indices of ``count`` distinct synthetic pairs, drawn from ``seed``.

    Balanced: the defect classes take turns (in a seeded order), each drawing from its own shuffled
    pool; a class that runs out drops out of the rotation. Pairs without a defect class come last.
    """
    if count > len(classes):
        raise DataError(f"need {count} synthetic pairs but the synthetic set holds only {len(classes)}; sample more or lower the ratio")
    rng = random.Random(seed)
    if not balanced:
        return sorted(rng.sample(range(len(classes)), count))
    pools: dict[int | None, list[int]] = {}
    for i, c in enumerate(classes):
        pools.setdefault(c, []).append(i)
    for pool in pools.values():
        rng.shuffle(pool)
    turn = sorted(c for c in pools if c is not None)
    rng.shuffle(turn)
    chosen: list[int] = []
    while len(chosen) < count and turn:
        for c in list(turn):
            if len(chosen) == count:
                break
            chosen.append(pools[c].pop())
            if not pools[c]:
                turn.remove(c)
    chosen += pools.get(None, [])[: count - len(chosen)]
    return sorted(chosen)
