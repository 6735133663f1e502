"""How a command uses the CPU, and where its time went: seconds per named phase, one closing line.

    timer = Timer()
    with timer.phase("large", steps=800):
        ...
    print(timer.line())   # [defectgen] time: large 120.3 s (0.150 s/step) · total 121 s

Every command ends with this line, and ``timing.json`` (``Timer.to_dict``) keeps the same numbers
for the HTML report and the demo benchmark.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Iterator


def auto_threads() -> int:
    """Half the CPU cores, between 1 and 4. When another process holds a core, torch's thread barriers
    made a 2-thread step of the demo UNet 3.5-12x slower than a 1-thread one (benchmarks/results/demo/probe_speed.md);
    half the cores leaves room for the other process (or for the demo's second stage)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def set_cpu_threads() -> int:
    """Use ``auto_threads`` unless the user chose a number with ``OMP_NUM_THREADS``; return the count."""
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(auto_threads())
    return torch.get_num_threads()


class Timer:
    """Wall-clock seconds of consecutive phases; a phase may carry a count (steps, pairs) to give a rate."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, dict[str, Any]] = {}

    @contextmanager
    def phase(self, name: str, **counts: int) -> Iterator[dict[str, Any]]:
        """Time the block as phase ``name``; ``counts`` such as ``steps=800`` or ``pair=32`` add a rate."""
        entry: dict[str, Any] = {"seconds": None, **counts}
        t0 = time.perf_counter()
        try:
            yield entry
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            self.phases[name] = entry

    def add(self, name: str, seconds: float, **counts: int) -> None:
        """Record a phase timed elsewhere (e.g. read from a stage's timing.json)."""
        self.phases[name] = {"seconds": round(float(seconds), 2), **counts}

    def skip(self, name: str) -> None:
        """Mark phase ``name`` as not run (its result existed already)."""
        self.phases[name] = {"seconds": None}

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.start, 2)

    def to_dict(self) -> dict[str, Any]:
        return {"phases": self.phases, "total_seconds": self.total}

    def line(self) -> str:
        return summary_line(self.to_dict())


def _rate(entry: dict[str, Any]) -> str:
    for unit in ("steps", "pairs", "seeds", "segmenters", "cells", "images"):
        n = entry.get(unit)
        if n:
            return f" ({entry['seconds'] / n:.3g} s/{unit[:-1]})"
    return ""


def summary_line(timing: dict[str, Any]) -> str:
    """``[defectgen] time: a 1.0 s · b 2.0 s (0.1 s/step) · total 3 s`` from a ``Timer.to_dict``."""
    parts = [f"{name} {e['seconds']:.1f} s{_rate(e)}" if e.get("seconds") is not None else f"{name} skipped"
             for name, e in timing["phases"].items()]
    return "[defectgen] time: " + " · ".join(parts + [f"total {timing['total_seconds']:.0f} s"])
