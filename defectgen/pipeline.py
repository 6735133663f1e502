"""``DefectGenPipeline``: two UNets, one scheduler and a switch, sampled as one trajectory.

From pure noise at the top timestep the large model denoises every timestep ``t >= switch * T``;
the small model continues from that same state at the next timestep of the same schedule, down
to 0. ``switch = 1`` is the small model alone, ``switch = 0`` the large model alone (vanilla DDPM).
This fixes two faults of the authors' published code, which restarts the small model's timestep
count and feeds the large model a state at the wrong noise level.

Guided sampling stays inside the same loop: with a ``Known`` (known pair-space values and a weight
per channel and pixel), after every step the known part of the state is replaced by the known
values noised to the next timestep (RePaint), optionally with resampling jumps. Known pixels keep a
real background, known mask channels fix the label; in "model mask" mode the model chooses the
defect region itself until the switch, where its mask estimate is frozen.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel

from defectgen.data import IGNORE_INDEX, ClassMap
from defectgen.pairs import decode_pairs
from defectgen.schedule import MULTISTEP, from_strength, plan


@dataclass
class PairSamples:
    images: np.ndarray  # (N,H,W,3) uint8
    masks: np.ndarray  # (N,H,W) uint8 class ids
    timesteps: dict[str, list[int]]  # which timesteps each model ran


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


def soft_region(region: torch.Tensor, blend: int) -> torch.Tensor:
    """(N,H,W) bool -> (N,1,H,W) in [0,1]: 1 on the region, falling linearly to 0 over ``blend`` pixels."""
    r = region.float().unsqueeze(1)
    rings = [r] + [F.max_pool2d(r, 2 * k + 1, stride=1, padding=k) for k in range(1, blend + 1)]
    return torch.stack(rings).mean(dim=0)


def check_channels(unets: list[UNet2DModel | None], image_channels: int, num_classes: int) -> None:
    """A pair is image channels followed by one channel per class: every UNet must take exactly that."""
    for unet in (u for u in unets if u is not None):
        if unet.config.in_channels != image_channels + num_classes or unet.config.out_channels != unet.config.in_channels:
            raise ValueError(f"the UNet takes {unet.config.in_channels} channels in and {unet.config.out_channels} out, "
                             f"but a pair has {image_channels} image channels + {num_classes} classes = "
                             f"{image_channels + num_classes}")


class DefectGenPipeline(DiffusionPipeline):
    """Large UNet (``unet``) for the noisy steps, small UNet (``unet_2``) after the switch.

    The config (``model_index.json``) holds the switch, the image channels and the class names, so
    ``save_pretrained`` / ``from_pretrained`` round-trip the whole generator.
    """

    _optional_components = ["unet", "unet_2"]

    def __init__(
        self,
        unet: UNet2DModel | None,
        unet_2: UNet2DModel | None,
        scheduler: DDPMScheduler,
        switch: float = 0.4,
        image_channels: int = 3,
        class_names: list[str] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ):
        super().__init__()
        self.register_modules(unet=unet, unet_2=unet_2, scheduler=scheduler)
        names = None if class_names is None else list(class_names)
        self.register_to_config(switch=switch, image_channels=image_channels, class_names=names,
                                ignore_index=ignore_index)
        if names is not None:
            check_channels([unet, unet_2], image_channels, len(names))

    @property
    def class_map(self) -> ClassMap | None:
        """Class id <-> name of the generated masks (None: a pipeline built without class names)."""
        names = self.config.class_names
        return None if names is None else ClassMap(tuple(names), self.config.ignore_index)

    def _model_for(self, large: bool) -> UNet2DModel:
        model = self.unet if large else self.unet_2
        if model is None:
            which = "large (unet)" if large else "small (unet_2)"
            raise ValueError(f"this switch needs the {which} model, which the pipeline does not hold")
        return model

    def plan(self, sampler: str = "ddpm", num_inference_steps: int | None = None, switch: float | None = None):
        """The scheduler set up for sampling, its timesteps, and the split: (scheduler, timesteps, large, small)."""
        return plan(self.scheduler, sampler, num_inference_steps, self.config.switch if switch is None else switch)

    def _alpha_bar(self, scheduler, t: int) -> float:
        """ᾱ at timestep ``t``; ``t < 0`` is the clean end of the trajectory (ᾱ = 1)."""
        return 1.0 if t < 0 else float(scheduler.alphas_cumprod[t])

    def _noise(self, like: torch.Tensor, generator: list[torch.Generator]) -> torch.Tensor:
        """Fresh noise drawn from each sample's own generator (independent of the batch)."""
        return torch.stack([torch.randn(like.shape[1:], generator=g, device=g.device) for g in generator]).to(like.device, like.dtype)

    def _impose(self, x: torch.Tensor, known: Known, a_bar: float, generator: list[torch.Generator]) -> torch.Tensor:
        """Replace the known part of ``x`` by the known values noised to the same level (RePaint)."""
        noised = a_bar**0.5 * known.values + (1 - a_bar) ** 0.5 * self._noise(x, generator) if a_bar < 1 else known.values
        return known.weight * noised + (1 - known.weight) * x

    def _renoise(self, x: torch.Tensor, a_from: float, a_to: float, generator: list[torch.Generator]) -> torch.Tensor:
        """One forward jump q(x_to | x_from) from a less to a more noisy timestep (a resampling jump)."""
        ratio = a_to / a_from
        return ratio**0.5 * x + (1 - ratio) ** 0.5 * self._noise(x, generator)

    @torch.no_grad()
    def __call__(
        self,
        generator: list[torch.Generator],
        switch: float | None = None,
        sampler: str = "ddpm",
        num_inference_steps: int | None = None,
        progress: bool = True,
        known: Known | None = None,
        resample: int = 1,
        init: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> PairSamples:
        """Sample one pair per generator (the batch size is ``len(generator)``), noise from each one's device.

        ``known``: guided sampling (see ``Known``); ``resample`` > 1 repeats each step with a jump
        back to its noise level in between, so the generated part harmonises with the known part.
        ``init`` (pair space, like ``Known.values``) with ``strength`` < 1: the trajectory starts from
        ``init`` noised to timestep ``strength * T`` instead of from pure noise (img2img, SDEdit), so the
        samples stay near ``init``; ``strength = 1`` ignores it.
        """
        switch = self.config.switch if switch is None else switch
        if resample < 1:
            raise ValueError(f"resample must be at least 1, got {resample}")
        if resample > 1 and sampler in MULTISTEP:
            raise ValueError(f"resampling repeats a step, which {sampler}'s step history cannot; use ddpm or ddim")
        # One scheduler for the whole trajectory: a multistep solver's history of model outputs
        # runs on across the switch, exactly as with a single model.
        scheduler, timesteps, large_ts, small_ts = self.plan(sampler, num_inference_steps, switch)
        total = scheduler.config.num_train_timesteps
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if init is not None and strength < 1.0:
            timesteps, large_ts, small_ts = from_strength(timesteps, large_ts, small_ts, strength)
            if hasattr(scheduler, "set_begin_index"):  # multistep solvers count their steps from here
                scheduler.set_begin_index(len(scheduler.timesteps) - len(timesteps))
        freeze_at = switch * total if 0 < switch < 1 else 0.5 * total  # model-mask mode: fix the mask here
        ref = self.unet if self.unet is not None else self.unet_2
        shape = (len(generator), ref.config.in_channels, ref.config.sample_size, ref.config.sample_size)
        # each sample's generator may live on the GPU (no host work per step) or the CPU
        x = torch.stack([torch.randn(shape[1:], generator=g, device=g.device) for g in generator]).to(self.device, ref.dtype)
        if init is not None and strength < 1.0:
            if init.shape != x.shape:
                raise ValueError(f"init has shape {tuple(init.shape)}, samples {tuple(x.shape)}")
            a_bar = self._alpha_bar(scheduler, timesteps[0])
            x = a_bar**0.5 * init.to(x.device, x.dtype) + (1 - a_bar) ** 0.5 * x
        if known is not None:
            if known.values.shape != x.shape:
                raise ValueError(f"known values have shape {tuple(known.values.shape)}, samples {tuple(x.shape)}")
            known = known.to(x.device, x.dtype)
        self.set_progress_bar_config(disable=not progress, leave=False)
        for i, t in enumerate(self.progress_bar(timesteps)):
            model = self._model_for(t in large_ts)
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            for r in range(resample if known is not None else 1):
                if r > 0:
                    x = self._renoise(prev, self._alpha_bar(scheduler, t_next), self._alpha_bar(scheduler, t), generator)
                out = model(x, torch.full((x.shape[0],), t, device=x.device)).sample
                step = scheduler.step(out, t, x, generator=generator)
                prev = step.prev_sample
                if known is not None:
                    x0 = getattr(step, "pred_original_sample", None)
                    x0 = scheduler.model_outputs[-1] if x0 is None else x0  # DPM-Solver++ keeps x0 estimates
                    known = known.follow(x0, self.config.image_channels, freeze=t_next < freeze_at)
                    prev = self._impose(prev, known, self._alpha_bar(scheduler, t_next), generator)
            x = prev
        images, masks = decode_pairs(x, self.config.image_channels)
        return PairSamples(images, masks, {"large": large_ts, "small": small_ts})


# Pipelines saved before the class names moved into model_index.json kept them in this file.
LEGACY_CLASS_MAP = "class_map.json"


def load_pipeline(path: str | Path, **kwargs) -> DefectGenPipeline:
    """``DefectGenPipeline.from_pretrained``, also for folders whose class names are in ``class_map.json``."""
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    if index.get("class_names") is None and (path / LEGACY_CLASS_MAP).is_file():
        old = ClassMap.load(path / LEGACY_CLASS_MAP)
        kwargs = {"class_names": list(old.names), "ignore_index": old.ignore_index, **kwargs}
    return DefectGenPipeline.from_pretrained(path, **kwargs)
