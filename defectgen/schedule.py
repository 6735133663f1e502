"""The noise schedule and the samplers: one home for everything about timesteps and noise.

The generator config builds the training schedule (``DiffusionConfig.make_scheduler``); training
regresses ``target_for`` (the config's prediction target). Sampling runs the pipeline's scheduler: the
same schedule as a ``ddpm``, ``ddim`` or ``dpmsolver++`` scheduler (``sampler_scheduler``, what
``--sampler`` sets) or any diffusers scheduler a user swaps in; ``plan`` sets its timesteps and splits
them at the switch between the large and the small UNet. Every sample draws its noise from its own generator seeded by
``(seed, index)`` (``sample_seed``, ``sample_generators``), EDM-style, so output never depends on
the batch size or the number of processes.
"""
from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

Sampler = Literal["ddpm", "ddim", "dpmsolver++"]
PredictionType = Literal["epsilon", "sample", "v_prediction"]
BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)
BETA_SCHEDULES: tuple[str, ...] = get_args(BetaSchedule)

AnyScheduler = DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler


def target_for(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses at timestep ``t``: the noise, the clean pair or the velocity."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"unknown prediction_type '{kind}'")


def sampler_scheduler(scheduler: DDPMScheduler, sampler: str) -> AnyScheduler:
    """A fresh scheduler of kind ``sampler`` sharing the training schedule's config.

    DPM-Solver++ (2nd order, multistep) reaches DDPM's quality in 20-25 steps. It has no
    ``clip_sample``; thresholding with ``sample_max_value = 1`` is the same clip of the x0 estimate
    to [-1, 1].
    """
    if sampler == "ddpm":
        return DDPMScheduler.from_config(scheduler.config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(scheduler.config)
    if sampler == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(
            scheduler.config, algorithm_type="dpmsolver++", solver_order=2,
            thresholding=bool(scheduler.config.get("clip_sample", False)), sample_max_value=1.0)
    raise ValueError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")


def sampler_name(scheduler: AnyScheduler) -> str:
    """The name a sample folder's manifest records for ``scheduler`` (a ``SAMPLERS`` name where it is one)."""
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        return str(scheduler.config.algorithm_type)
    names = {DDPMScheduler: "ddpm", DDIMScheduler: "ddim"}
    return names.get(type(scheduler), type(scheduler).__name__)


def is_multistep(scheduler: AnyScheduler) -> bool:
    """Whether ``scheduler`` keeps a history of model outputs between steps (so a step cannot be repeated)."""
    return hasattr(scheduler, "model_outputs")


def split_timesteps(timesteps: list[int], switch: float, num_train_timesteps: int) -> tuple[list[int], list[int]]:
    """Timesteps run by the large model (``t >= switch * T``) and by the small one (the rest)."""
    if not 0.0 <= switch <= 1.0:
        raise ValueError(f"switch must be in [0, 1], got {switch}")
    boundary = switch * num_train_timesteps
    return [t for t in timesteps if t >= boundary], [t for t in timesteps if t < boundary]


def plan(scheduler: AnyScheduler, num_inference_steps: int | None, switch: float) -> tuple[list[int], list[int], list[int]]:
    """Set ``scheduler`` up for ``num_inference_steps`` (None: every training timestep); its timesteps and their
    split at ``switch``: (timesteps, large, small)."""
    total = scheduler.config.num_train_timesteps
    scheduler.set_timesteps(num_inference_steps or total)
    timesteps = [int(t) for t in scheduler.timesteps]
    return timesteps, *split_timesteps(timesteps, switch, total)


def from_strength(timesteps: list[int], large: list[int], small: list[int],
                  strength: float) -> tuple[list[int], list[int], list[int]]:
    """The last ``strength`` share of the steps (at least one), as diffusers' img2img pipelines take them:
    a trajectory that starts part-way down, near timestep ``strength * T``; and their split."""
    keep = timesteps[len(timesteps) - max(1, round(len(timesteps) * strength)):]
    return keep, [t for t in large if t in keep], [t for t in small if t in keep]


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``: depends on (seed, index) only, never on batching."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def window_seed(seed: int, index: int, window: int) -> int:
    """The seed of window ``window`` of full-size sample ``index``; the first window is seeded like sample ``index``."""
    if window == 0:
        return sample_seed(seed, index)
    return int(np.random.SeedSequence([seed, index, window]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def sample_generators(seed: int, indices: list[int] | range, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded by ``sample_seed(seed, i)``; on a GPU the noise then needs no host draws."""
    return [torch.Generator(device).manual_seed(sample_seed(seed, i)) for i in indices]
