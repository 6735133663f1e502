"""``DefectGenPipeline``: two UNets, one scheduler and a switch, sampled as one trajectory.

From pure noise at the top timestep the large model denoises every timestep ``t >= switch * T``;
the small model continues from that same state at the next timestep of the same schedule, down
to 0. ``switch = 1`` is the small model alone, ``switch = 0`` the large model alone (vanilla DDPM).
This fixes two faults of the authors' published code, which restarts the small model's timestep
count and feeds the large model a state at the wrong noise level.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, UNet2DModel

from defectgen.data import ClassMap
from defectgen.pairs import decode_pairs

SAMPLERS = ("ddpm", "ddim")


@dataclass
class PairSamples:
    images: np.ndarray  # (N,H,W,3) uint8
    masks: np.ndarray  # (N,H,W) uint8 class ids
    timesteps: dict[str, list[int]]  # which timesteps each model ran


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``: depends on (seed, index) only, never on batching."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def sampler_scheduler(scheduler: DDPMScheduler, sampler: str) -> DDPMScheduler | DDIMScheduler:
    """A fresh scheduler of kind ``sampler`` sharing the training schedule's config."""
    if sampler == "ddpm":
        return DDPMScheduler.from_config(scheduler.config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(scheduler.config)
    raise ValueError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")


def split_timesteps(timesteps: list[int], switch: float, num_train_timesteps: int) -> tuple[list[int], list[int]]:
    """Timesteps run by the large model (``t >= switch * T``) and by the small one (the rest)."""
    if not 0.0 <= switch <= 1.0:
        raise ValueError(f"switch must be in [0, 1], got {switch}")
    boundary = switch * num_train_timesteps
    return [t for t in timesteps if t >= boundary], [t for t in timesteps if t < boundary]


class DefectGenPipeline(DiffusionPipeline):
    """Large UNet (``unet``) for the noisy steps, small UNet (``unet_2``) after the switch."""

    _optional_components = ["unet", "unet_2"]

    def __init__(
        self,
        unet: UNet2DModel | None,
        unet_2: UNet2DModel | None,
        scheduler: DDPMScheduler,
        switch: float = 0.4,
        image_channels: int = 3,
    ):
        super().__init__()
        self.register_modules(unet=unet, unet_2=unet_2, scheduler=scheduler)
        self.register_to_config(switch=switch, image_channels=image_channels)
        self.class_map: ClassMap | None = None

    # The class map is not a scalar config entry: it travels as class_map.json in the folder.
    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:  # type: ignore[override]
        super().save_pretrained(save_directory, **kwargs)
        if self.class_map is not None:
            self.class_map.save(Path(save_directory) / "class_map.json")

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "DefectGenPipeline":  # type: ignore[override]
        path = Path(path)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path}: not a saved DefectGen pipeline (no model_index.json)")
        pipe = super().from_pretrained(path, **kwargs)
        if (path / "class_map.json").is_file():
            pipe.class_map = ClassMap.load(path / "class_map.json")
        return pipe

    def _model_for(self, large: bool) -> UNet2DModel:
        model = self.unet if large else self.unet_2
        if model is None:
            which = "large (unet)" if large else "small (unet_2)"
            raise ValueError(f"this switch needs the {which} model, which the pipeline does not hold")
        return model

    @torch.no_grad()
    def __call__(
        self,
        generator: list[torch.Generator],
        switch: float | None = None,
        sampler: str = "ddpm",
        num_inference_steps: int | None = None,
        progress: bool = True,
    ) -> PairSamples:
        """Sample one pair per generator (the batch size is ``len(generator)``)."""
        switch = self.config.switch if switch is None else switch
        scheduler = sampler_scheduler(self.scheduler, sampler)
        total = scheduler.config.num_train_timesteps
        scheduler.set_timesteps(num_inference_steps or total)
        timesteps = [int(t) for t in scheduler.timesteps]
        large_ts, small_ts = split_timesteps(timesteps, switch, total)
        ref = self.unet if self.unet is not None else self.unet_2
        shape = (len(generator), ref.config.in_channels, ref.config.sample_size, ref.config.sample_size)
        x = torch.stack([torch.randn(shape[1:], generator=g) for g in generator]).to(self.device, ref.dtype)
        self.set_progress_bar_config(disable=not progress, leave=False)
        for t in self.progress_bar(timesteps):
            model = self._model_for(t in large_ts)
            out = model(x, torch.full((x.shape[0],), t, device=x.device)).sample
            x = scheduler.step(out, t, x, generator=generator).prev_sample
        images, masks = decode_pairs(x, self.config.image_channels)
        return PairSamples(images, masks, {"large": large_ts, "small": small_ts})
