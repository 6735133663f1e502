"""``DefectGenPipeline``: two UNets, one scheduler and a switch, sampled as one trajectory.

From pure noise at the top timestep the large model denoises every timestep ``t >= switch * T``;
the small model continues from that same state at the next timestep of the same schedule, down
to 0. ``switch = 1`` is the small model alone, ``switch = 0`` the large model alone (vanilla DDPM).
This fixes two faults of the authors' published code, which restarts the small model's timestep
count and feeds the large model a state at the wrong noise level.

The sampler is the pipeline's scheduler, swapped as in diffusers::

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)

Guided sampling stays inside the same loop (``guidance.py``): with a ``Known``, after every step the
known part of the state is replaced by the known values noised to the next timestep.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from defectgen.data.classmap import IGNORE_INDEX, ClassMap
from defectgen.errors import ConfigError
from defectgen.pairs import decode_pairs
from defectgen.pipelines.defectgen.guidance import Known, alpha_bar, impose, renoise
from defectgen.schedule import from_strength, is_multistep, plan, sampler_name, sampler_scheduler


@dataclass
class DefectGenPipelineOutput(BaseOutput):
    """The sampled pairs and which timesteps each model ran."""

    images: np.ndarray  # (N,H,W,3) uint8
    masks: np.ndarray  # (N,H,W) uint8 class ids
    timesteps: dict[str, list[int]]  # {"large": [...], "small": [...]}


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

    @property
    def sample_size(self) -> int:
        """The side of the pairs the UNets were trained on (and sample)."""
        return int(self._reference_unet().config.sample_size)

    def _reference_unet(self) -> UNet2DModel:
        return self.unet if self.unet is not None else self.unet_2

    def _model_for(self, large: bool) -> UNet2DModel:
        model = self.unet if large else self.unet_2
        if model is None:
            which = "large (unet)" if large else "small (unet_2)"
            raise ConfigError(f"this switch needs the {which} model, which the pipeline does not hold")
        return model

    def plan(self, num_inference_steps: int | None = None, switch: float | None = None, strength: float = 1.0,
             sampler: str | None = None):
        """The scheduler set up for sampling, its timesteps and their split: (scheduler, timesteps, large, small).

        ``self.scheduler`` unless ``sampler`` names a kind (a fresh one from its config); ``strength`` < 1 keeps
        the last share of the steps, a trajectory that starts part-way down (img2img)."""
        scheduler = self.scheduler if sampler is None else sampler_scheduler(self.scheduler, sampler)
        switch = self.config.switch if switch is None else switch
        timesteps, large, small = plan(scheduler, num_inference_steps, switch)
        if strength < 1.0:
            timesteps, large, small = from_strength(timesteps, large, small, strength)
            if hasattr(scheduler, "set_begin_index"):  # multistep solvers count their steps from here
                scheduler.set_begin_index(len(scheduler.timesteps) - len(timesteps))
        for large_model, ts in ((True, large), (False, small)):
            if ts:
                self._model_for(large_model)
        return scheduler, timesteps, large, small

    @torch.no_grad()
    def __call__(
        self,
        generator: torch.Generator | list[torch.Generator] | None = None,
        batch_size: int | None = None,
        num_inference_steps: int | None = None,
        switch: float | None = None,
        known: Known | None = None,
        resample: int = 1,
        init: torch.Tensor | None = None,
        strength: float = 1.0,
        return_dict: bool = True,
        progress: bool = True,
        sampler: str | None = None,
    ) -> DefectGenPipelineOutput | tuple:
        """Sample ``batch_size`` pairs, or one per generator of a list (each sample's noise from its own
        generator, on that generator's device, so a sample does not depend on the batch it is in).

        ``num_inference_steps`` None: every training timestep. ``known``: guided sampling (see
        ``guidance.Known``); ``resample`` > 1 repeats each step with a jump back to its noise level in
        between, so the generated part harmonises with the known part. ``init`` (pair space, like
        ``Known.values``) with ``strength`` < 1: the trajectory starts from ``init`` noised to timestep
        ``strength * T`` instead of from pure noise (img2img, SDEdit). ``sampler`` ("ddpm", "ddim",
        "dpmsolver++"): this call only, a scheduler of that kind instead of ``self.scheduler``.
        Returns a ``DefectGenPipelineOutput``, or with ``return_dict=False`` the tuple (images, masks, timesteps).
        """
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        scheduler, timesteps, large_ts, small_ts = self.plan(num_inference_steps, switch,
                                                             strength if init is not None else 1.0, sampler)
        self._check_resample(resample, scheduler)
        x = self._start(self._batch_size(generator, batch_size), generator, scheduler, timesteps[0],
                        init if strength < 1.0 else None)
        known = self._check_known(known, x)
        switch = self.config.switch if switch is None else switch
        total = scheduler.config.num_train_timesteps
        freeze_at = switch * total if 0 < switch < 1 else 0.5 * total  # model-mask mode: fix the mask here
        self.set_progress_bar_config(disable=not progress, leave=False)
        for i, t in enumerate(self.progress_bar(timesteps)):
            model = self._model_for(t in large_ts)
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            for r in range(resample if known is not None else 1):
                if r > 0:  # jump back to t's noise level and take the step again
                    x = renoise(x_prev, alpha_bar(scheduler, t_next), alpha_bar(scheduler, t), generator)
                out = model(x, torch.full((x.shape[0],), t, device=x.device)).sample
                step = scheduler.step(out, t, x, generator=generator)
                x_prev = step.prev_sample
                if known is not None:
                    x0 = getattr(step, "pred_original_sample", None)
                    x0 = scheduler.model_outputs[-1] if x0 is None else x0  # DPM-Solver++ keeps x0 estimates
                    known = known.follow(x0, self.config.image_channels, freeze=t_next < freeze_at)
                    x_prev = impose(x_prev, known, alpha_bar(scheduler, t_next), generator)
            x = x_prev
        images, masks = decode_pairs(x, self.config.image_channels)
        output = DefectGenPipelineOutput(images, masks, {"large": large_ts, "small": small_ts})
        return output if return_dict else output.to_tuple()

    def _batch_size(self, generator: torch.Generator | list[torch.Generator] | None, batch_size: int | None) -> int:
        """``batch_size``, or the length of a generator list (one sample per generator)."""
        if not isinstance(generator, list):
            return 1 if batch_size is None else batch_size
        if batch_size is not None and batch_size != len(generator):
            raise ValueError(f"batch_size {batch_size} differs from the {len(generator)} generators given")
        return len(generator)

    def _start(self, n: int, generator, scheduler, t_first: int, init: torch.Tensor | None) -> torch.Tensor:
        """Pure noise (generators may live on the GPU: no host work per step), or ``init`` noised to ``t_first``."""
        ref = self._reference_unet()
        shape = (n, ref.config.in_channels, ref.config.sample_size, ref.config.sample_size)
        # drawn in fp32 whatever the UNets' dtype, so a sample does not change with it
        x = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32).to(ref.dtype)
        if init is None:
            return x
        if init.shape != x.shape:
            raise ValueError(f"init has shape {tuple(init.shape)}, samples {tuple(x.shape)}")
        a_bar = alpha_bar(scheduler, t_first)
        return a_bar**0.5 * init.to(x.device, x.dtype) + (1 - a_bar) ** 0.5 * x

    @staticmethod
    def _check_resample(resample: int, scheduler) -> None:
        if resample < 1:
            raise ValueError(f"resample must be at least 1, got {resample}")
        if resample > 1 and is_multistep(scheduler):
            raise ValueError(f"resampling repeats a step, which {sampler_name(scheduler)}'s step history cannot; "
                             "use ddpm or ddim")

    @staticmethod
    def _check_known(known: Known | None, x: torch.Tensor) -> Known | None:
        if known is None:
            return None
        if known.values.shape != x.shape:
            raise ValueError(f"known values have shape {tuple(known.values.shape)}, samples {tuple(x.shape)}")
        return known.to(x.device, x.dtype)


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
