"""The generator's config: data size, the two networks, the noise schedule, training, sampling.

Defaults are the CPU real-data settings (64 px); ``configs/*.yaml`` override them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from defectgen.models import UNetConfig

STAGES = ("large", "small")


@dataclass
class DiffusionConfig:
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # diffusers' name for the cosine schedule
    prediction_type: str = "sample"  # epsilon | sample (x0) | v_prediction
    clip_sample: bool = True
    # Rescale the betas so that alpha_bar at the last timestep is exactly 0 (Lin et al. 2024, diffusers'
    # ``rescale_betas_zero_snr``): training then sees pure noise at t = T, as sampling starts from it.
    # With epsilon prediction the x0 estimate at t = T is undefined (clipped); v_prediction is its usual partner.
    rescale_betas_zero_snr: bool = False


@dataclass
class TrainConfig:
    large_steps: int = 3000
    small_steps: int = 3000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.002
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    mixed_precision: str = "no"  # no | fp16 | bf16
    flip: bool = True
    rot90: bool = True
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int = 500
    sample_count: int = 8
    sample_steps: int = 50  # DDIM steps for the progress grids
    log_every: int = 10
    seed: int = 0


@dataclass
class SampleConfig:
    switch: float = 0.4
    sampler: str = "ddpm"
    steps: int | None = None  # None: every training timestep
    batch_size: int = 16


@dataclass
class GeneratorConfig:
    size: int = 64
    image_channels: int = 3  # 1 trains on grey images
    resize_mode: str = "resize"  # resize (squash to size²) | center-crop | crop (aspect kept, random size² crops)
    long_side: int | None = None  # crop mode: scale images so their long side is this (None: native size)
    crop_defect_prob: float = 0.5  # crop mode: share of crops placed over a defect pixel
    large: UNetConfig = field(
        default_factory=lambda: UNetConfig(
            base_channels=64, channel_mult=(1, 2, 2, 4), layers_per_block=2, attention_levels=(2, 3)
        )
    )
    small: UNetConfig = field(
        default_factory=lambda: UNetConfig(
            base_channels=96, channel_mult=(1,), layers_per_block=2, attention_levels=(), mid_attention=False
        )
    )
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
