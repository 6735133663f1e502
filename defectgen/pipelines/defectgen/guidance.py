"""Guided sampling inside the pipeline's loop: what is known of each sample, and the replacement step.

A ``Known`` holds known pair-space values and a weight per channel and pixel. After every step the
pipeline replaces the known part of the state by the known values noised to the next timestep
(``impose``, RePaint), optionally with resampling jumps back up the schedule (``renoise``). Known
pixels keep a real background, known mask channels fix the label; in "model mask" mode the model
chooses the defect region itself until the switch, where its mask estimate is frozen (``Known.follow``).

A ``Condition`` is what one sample is asked to be, in arrays (``conditions.py`` and ``full_size.py``
build them from a request); ``known_batch`` and ``init_batch`` turn a batch of them into the
pipeline's ``known`` and ``init`` arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from defectgen.data.classmap import ClassMap
from defectgen.pairs import encode_pairs

Generators = torch.Generator | list[torch.Generator] | None


def soft_region(region: torch.Tensor, blend: int) -> torch.Tensor:
    """(N,H,W) bool -> (N,1,H,W) in [0,1]: 1 on the region, falling linearly to 0 over ``blend`` pixels."""
    r = region.float().unsqueeze(1)
    rings = [r] + [F.max_pool2d(r, 2 * k + 1, stride=1, padding=k) for k in range(1, blend + 1)]
    return torch.stack(rings).mean(dim=0)


@dataclass
class Known:
    """What is known of each sample of a batch, in pair space (as ``encode_pairs`` makes it).

    ``weight`` is 1 where ``values`` are kept, 0 where the model generates, in between in the blend
    band around a painted region. ``free_mask`` (N,H,W) marks the pixels whose label the model
    chooses ("model mask" mode): there the image weight follows the model's own mask estimate,
    dilated by ``blend`` pixels, until the mask is frozen at the switch. ``allowed`` (N, classes)
    lists the classes the model may choose there.
    """

    values: torch.Tensor
    weight: torch.Tensor
    free_mask: torch.Tensor | None = None
    allowed: torch.Tensor | None = None
    blend: int = 2

    def to(self, device: torch.device, dtype: torch.dtype) -> "Known":
        move = lambda t, dt=None: None if t is None else t.to(device, dt or t.dtype)  # noqa: E731
        return replace(self, values=move(self.values, dtype), weight=move(self.weight, dtype),
                       free_mask=move(self.free_mask), allowed=move(self.allowed))

    def follow(self, x0: torch.Tensor, image_channels: int, freeze: bool) -> "Known":
        """In model-mask mode, the image weights follow the mask estimate ``x0``; ``freeze`` fixes the mask."""
        if self.free_mask is None:
            return self
        logits = x0[:, image_channels:].float()
        if self.allowed is not None:
            logits = logits.masked_fill(~self.allowed[:, :, None, None], float("-inf"))
        labels = logits.argmax(dim=1)
        region = (labels != 0) & self.free_mask
        values, weight = self.values.clone(), self.weight.clone()
        weight[:, :image_channels] = 1.0 - soft_region(region, self.blend).to(weight.dtype)
        if not freeze:
            return replace(self, weight=weight)
        onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(values.dtype) * 2 - 1
        free = self.free_mask.unsqueeze(1)
        values[:, image_channels:] = torch.where(free, onehot, values[:, image_channels:])
        weight[:, image_channels:] = 1.0
        return replace(self, values=values, weight=weight, free_mask=None)


def noise_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Fresh noise for ``x``; with a generator list each sample draws from its own (independent of the batch)."""
    return randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32).to(x.dtype)


def alpha_bar(scheduler, t: int) -> float:
    """ᾱ at timestep ``t``; ``t < 0`` is the clean end of the trajectory (ᾱ = 1)."""
    return 1.0 if t < 0 else float(scheduler.alphas_cumprod[t])


def impose(x: torch.Tensor, known: Known, a_bar: float, generator: Generators) -> torch.Tensor:
    """The replacement step: the known part of ``x`` becomes the known values noised to ``x``'s level (RePaint)."""
    noised = a_bar**0.5 * known.values + (1 - a_bar) ** 0.5 * noise_like(x, generator) if a_bar < 1 else known.values
    return known.weight * noised + (1 - known.weight) * x


def renoise(x: torch.Tensor, a_from: float, a_to: float, generator: Generators) -> torch.Tensor:
    """One forward jump q(x_to | x_from) from a less to a more noisy timestep (a resampling jump)."""
    ratio = a_to / a_from
    return ratio**0.5 * x + (1 - ratio) ** 0.5 * noise_like(x, generator)


@dataclass
class Condition:
    """What one sample is asked to be.

    ``image``: background (H,W,3) uint8, or None to generate the whole image. ``mask``: the full
    output mask (kept labels and the new defect), or None when the model chooses the new defect.
    ``base``: labels that are kept (a training image's own defects; zeros for a good image).
    ``allowed``: class ids the new defect may take. ``hold`` (model-chosen masks only): pixels whose
    label is held at ``base`` although it is background there (outside ``--region``, ignore pixels).
    ``start`` (harmonised copy-paste): the image the trajectory starts from, noised part-way down.
    """

    image: np.ndarray | None
    mask: np.ndarray | None
    base: np.ndarray
    allowed: tuple[int, ...]
    info: dict = field(default_factory=dict)
    hold: np.ndarray | None = None
    start: np.ndarray | None = None


def known_batch(conds: Sequence[Condition], class_map: ClassMap, image_channels: int, blend: int) -> Known:
    """The pipeline's ``Known`` for a batch of conditions (all with given masks, or all model-chosen)."""
    model_mode = conds[0].mask is None
    if any((cd.mask is None) != model_mode for cd in conds):
        raise ValueError("a batch mixes model-chosen and given masks")
    n, c = len(conds), class_map.num_classes
    h, w = conds[0].base.shape
    images = np.stack([cd.image if cd.image is not None else np.zeros((h, w, 3), np.uint8) for cd in conds])
    masks = np.stack([cd.base if model_mode else cd.mask for cd in conds])
    values = encode_pairs(images, masks, c, image_channels)
    weight = torch.zeros_like(values)
    free = torch.zeros((n, h, w), dtype=torch.bool)
    allowed = torch.zeros((n, c), dtype=torch.bool)
    for i, cd in enumerate(conds):
        if not model_mode:  # the label is given: every mask channel is known, the image outside the region
            weight[i, image_channels:] = 1.0
            if cd.image is not None:
                region = torch.from_numpy(cd.mask != cd.base)[None]
                weight[i, :image_channels] = 1.0 - soft_region(region, blend)[0]
            continue
        kept = (cd.base > 0) & (cd.base != class_map.ignore_index)
        kept = torch.from_numpy(kept if cd.hold is None else kept | cd.hold)
        free[i] = ~kept
        weight[i, :image_channels] = 1.0
        weight[i, image_channels:, kept] = 1.0
        allowed[i, [0, *cd.allowed]] = True
        for cid in set(class_map.defect_ids) - set(cd.allowed):  # held "off" where the model chooses
            weight[i, image_channels + cid, ~kept] = 1.0
    if not model_mode:
        return Known(values, weight, blend=blend)
    return Known(values, weight, free, allowed, blend)


def init_batch(conds: Sequence[Condition], class_map: ClassMap, image_channels: int) -> torch.Tensor | None:
    """Where each trajectory of the batch starts (pair space), when the conditions give a start image."""
    if all(cd.start is None for cd in conds):
        return None
    if any(cd.start is None or cd.mask is None for cd in conds):
        raise ValueError("a batch mixes conditions with and without a start image")
    return encode_pairs(np.stack([cd.start for cd in conds]), np.stack([cd.mask for cd in conds]),
                        class_map.num_classes, image_channels)
