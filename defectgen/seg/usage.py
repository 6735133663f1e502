"""How synthetic pairs enter segmentation training: the three ways practitioners use them.

- ``mix``: real and synthetic pairs in one pool, batches drawn from it for ``seg.steps`` steps (with
  ratio 1, real pairs get about half the updates).
- ``pretrain``: the first ``pretrain_fraction`` of ``seg.steps`` on synthetic pairs only, then the rest
  on real pairs only (a fresh optimiser and warm-up/cosine schedule: an ordinary fine-tune).
- ``weighted``: ``mix``, with each synthetic pair's loss multiplied by ``synthetic_weight``.

The total number of steps is ``seg.steps`` in every mode, the budget of the real-only baseline, so a
gain cannot come from training longer. With no synthetic pairs (ratio 0) every mode is plain
real-only training: one baseline serves all modes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Literal, Union, get_args

import numpy as np

from defectgen.config import ConfigError
from defectgen.seg.models import Segmenter
from defectgen.seg.train import SegConfig, fit_segmenter

UsageMode = Literal["mix", "pretrain", "weighted"]
Pairs = Union[np.ndarray, list]  # (N,H,W[,3]) uint8 arrays, or lists of images (crop mode)
USAGE_MODES: tuple[str, ...] = get_args(UsageMode)


@dataclass
class UsageConfig:
    """One way of using the synthetic pairs (``mode``) and its parameter."""

    mode: UsageMode = "mix"
    synthetic_weight: float = 1.0  # weighted: loss weight of a synthetic pair (a real pair has 1)
    pretrain_fraction: float = 0.5  # pretrain: share of seg.steps on synthetic pairs before the real fine-tune

    def label(self) -> str:
        """Short name used in cell ids, tables and plots: mix, pretrain-f0.5, weighted-w0.3."""
        if self.mode == "pretrain":
            return f"pretrain-f{self.pretrain_fraction:g}"
        if self.mode == "weighted":
            return f"weighted-w{self.synthetic_weight:g}"
        return "mix"

    def check(self, where: str = "usage") -> None:
        if self.mode not in USAGE_MODES:
            raise ConfigError(f"config key '{where}.mode': {self.mode!r} is not one of {list(USAGE_MODES)}")
        if not self.synthetic_weight >= 0:
            raise ConfigError(f"config key '{where}.synthetic_weight' must be >= 0, got {self.synthetic_weight}")
        if not 0 < self.pretrain_fraction < 1:
            raise ConfigError(f"config key '{where}.pretrain_fraction' must be between 0 and 1, got {self.pretrain_fraction}")


def pretrain_steps(steps: int, fraction: float) -> tuple[int, int]:
    """(synthetic steps, real fine-tune steps) summing to ``steps``; each phase gets at least one step."""
    first = int(round(steps * fraction))
    if not 0 < first < steps:
        raise ConfigError(f"pretrain_fraction {fraction:g} of {steps} steps leaves a phase without steps")
    return first, steps - first


def fit_with_usage(
    real_x: Pairs,
    real_y: Pairs,
    syn_x: Pairs,
    syn_y: Pairs,
    usage: UsageConfig,
    cfg: SegConfig,
    num_classes: int,
    seed: int,
    device: str | None = None,
    ignore_index: int = 255,
    log: Callable[[dict], None] | None = None,
) -> tuple[Segmenter, list[dict]]:
    """Train one segmenter on real pairs plus synthetic pairs as ``usage`` says; also the phases run."""
    usage.check()
    if len(syn_x) == 0:
        model = fit_segmenter(real_x, real_y, cfg, num_classes, seed, device, ignore_index, log)
        return model, [{"data": "real", "steps": cfg.steps}]
    both_x, both_y = _concat(real_x, syn_x), _concat(real_y, syn_y)
    if usage.mode == "mix":
        model = fit_segmenter(both_x, both_y, cfg, num_classes, seed, device, ignore_index, log)
        return model, [{"data": "real+synthetic", "steps": cfg.steps}]
    if usage.mode == "weighted":
        weights = np.concatenate([np.ones(len(real_x)), np.full(len(syn_x), usage.synthetic_weight)])
        model = fit_segmenter(both_x, both_y, cfg, num_classes, seed, device, ignore_index, log, sample_weights=weights)
        return model, [{"data": "real+synthetic", "steps": cfg.steps, "synthetic_weight": usage.synthetic_weight}]
    first, second = pretrain_steps(cfg.steps, usage.pretrain_fraction)
    pre = dataclasses.replace(cfg, steps=first, warmup_steps=min(cfg.warmup_steps, first))
    fine = dataclasses.replace(cfg, steps=second, warmup_steps=min(cfg.warmup_steps, second))
    model = fit_segmenter(syn_x, syn_y, pre, num_classes, seed, device, ignore_index, _tagged(log, "synthetic"))
    model = fit_segmenter(real_x, real_y, fine, num_classes, seed, device, ignore_index, _tagged(log, "real"), init=model)
    return model, [{"data": "synthetic", "steps": first}, {"data": "real", "steps": second}]


def _concat(a: Pairs, b: Pairs) -> Pairs:
    """Arrays, or lists of images of different sizes (crop mode)."""
    return list(a) + list(b) if isinstance(a, list) else np.concatenate([a, b])


def _tagged(log: Callable[[dict], None] | None, phase: str) -> Callable[[dict], None] | None:
    return None if log is None else (lambda rec: log({**rec, "phase": phase}))
