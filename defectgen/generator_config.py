"""The generator's config: data size, the two networks, the noise schedule, training, sampling.

Defaults are the CPU real-data settings (64 px); ``configs/*.yaml`` override them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from diffusers import DDPMScheduler

from defectgen.config import MAX_SIDE, MAX_TIMESTEPS, need, need_side
from defectgen.models import UNetConfig
from defectgen.schedule import BETA_SCHEDULES, PREDICTION_TYPES, SAMPLERS, BetaSchedule, PredictionType, Sampler

Stage = Literal["large", "small"]
STAGES: tuple[str, ...] = get_args(Stage)
MixedPrecision = Literal["no", "fp16", "bf16"]
ResizeMode = Literal["resize", "center-crop", "crop"]  # crop: aspect kept, random size² crops
Precision = Literal["fp32", "bf16"]
MIXED_PRECISION: tuple[str, ...] = get_args(MixedPrecision)
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
PRECISIONS: tuple[str, ...] = get_args(Precision)


def _choice(value: object, key: str, choices: tuple[str, ...]) -> None:
    need(value in choices, key, f"must be one of {', '.join(choices)}", value)


def check_unet(cfg: UNetConfig, key: str, size: int) -> None:
    """A UNet config that ``build_unet`` can build for ``size``² inputs."""
    need(cfg.base_channels >= 1, f"{key}.base_channels", "must be at least 1", cfg.base_channels)
    need(len(cfg.channel_mult) >= 1 and all(m >= 1 for m in cfg.channel_mult), f"{key}.channel_mult",
         "must be a non-empty list of positive integers", list(cfg.channel_mult))
    need(cfg.layers_per_block >= 1, f"{key}.layers_per_block", "must be at least 1", cfg.layers_per_block)
    need(cfg.norm_num_groups >= 1 and all(cfg.base_channels * m % cfg.norm_num_groups == 0 for m in cfg.channel_mult),
         f"{key}.norm_num_groups", "must divide every level's channels", cfg.norm_num_groups)
    need(all(0 <= a < len(cfg.channel_mult) for a in cfg.attention_levels), f"{key}.attention_levels",
         f"levels must lie in 0..{len(cfg.channel_mult) - 1}", list(cfg.attention_levels))
    need(cfg.attention_head_dim >= 1, f"{key}.attention_head_dim", "must be at least 1", cfg.attention_head_dim)
    need(0.0 <= cfg.dropout < 1.0, f"{key}.dropout", "must be in [0, 1)", cfg.dropout)
    factor = 2 ** (len(cfg.channel_mult) - 1)
    need(size % factor == 0, "size", f"must be a multiple of {factor} ({key} downsamples {factor}x)", size)


@dataclass
class DiffusionConfig:
    num_train_timesteps: int = 1000
    beta_schedule: BetaSchedule = "squaredcos_cap_v2"  # diffusers' name for the cosine schedule
    prediction_type: PredictionType = "sample"  # epsilon | sample (x0) | v_prediction
    clip_sample: bool = True
    # Rescale the betas so that alpha_bar at the last timestep is exactly 0 (Lin et al. 2024, diffusers'
    # ``rescale_betas_zero_snr``): training then sees pure noise at t = T, as sampling starts from it.
    # With epsilon prediction the x0 estimate at t = T is undefined (clipped); v_prediction is its usual partner.
    rescale_betas_zero_snr: bool = False

    def check(self, key: str = "diffusion") -> None:
        need(self.num_train_timesteps >= 2, f"{key}.num_train_timesteps", "must be at least 2", self.num_train_timesteps)
        need(self.num_train_timesteps <= MAX_TIMESTEPS, f"{key}.num_train_timesteps", f"must be at most {MAX_TIMESTEPS}",
             self.num_train_timesteps)
        _choice(self.beta_schedule, f"{key}.beta_schedule", BETA_SCHEDULES)
        _choice(self.prediction_type, f"{key}.prediction_type", PREDICTION_TYPES)

    def make_scheduler(self) -> DDPMScheduler:
        """The training schedule; sampling turns it into its sampler (``schedule.sampler_scheduler``)."""
        return DDPMScheduler(
            num_train_timesteps=self.num_train_timesteps,
            beta_schedule=self.beta_schedule,
            prediction_type=self.prediction_type,
            clip_sample=self.clip_sample,
            rescale_betas_zero_snr=self.rescale_betas_zero_snr,
            timestep_spacing="trailing",  # sampling starts from the top timestep, pure noise
        )


@dataclass
class TrainConfig:
    large_steps: int = 3000
    small_steps: int = 3000
    batch_size: int = 8  # the global batch: split between processes under torchrun / accelerate launch
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.002
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    mixed_precision: MixedPrecision = "no"
    channels_last: bool = False  # NHWC memory layout (faster convolutions on recent GPUs)
    compile: bool = False  # torch.compile the UNet; CUDA only, ignored on CPU
    flip: bool = True
    rot90: bool = True
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int = 500
    sample_count: int = 8
    sample_steps: int = 50  # DDIM steps for the progress grids
    log_every: int = 10
    seed: int = 0

    def check(self, key: str = "train") -> None:
        for name in ("large_steps", "small_steps", "batch_size", "grad_accum", "sample_count", "sample_steps", "log_every"):
            need(getattr(self, name) >= 1, f"{key}.{name}", "must be at least 1", getattr(self, name))
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "sample_every", "weight_decay", "max_grad_norm"):
            need(getattr(self, name) >= 0, f"{key}.{name}", "must not be negative", getattr(self, name))
        need(self.lr > 0, f"{key}.lr", "must be above 0", self.lr)
        need(0.0 <= self.ema_decay <= 1.0, f"{key}.ema_decay", "must be in [0, 1]", self.ema_decay)
        _choice(self.mixed_precision, f"{key}.mixed_precision", MIXED_PRECISION)


@dataclass
class SampleConfig:
    switch: float = 0.4
    sampler: Sampler = "ddpm"
    steps: int | None = None  # None: every training timestep
    batch_size: int = 16
    precision: Precision = "fp32"  # bf16 runs the UNets in bf16 on CUDA (ignored elsewhere)

    def check(self, key: str = "sample", flags: bool = False) -> None:
        """``flags=True`` names the ``sample`` command's flags (``--steps``) instead of config keys."""
        name = (lambda k: "--" + k.replace("_", "-")) if flags else (lambda k: f"{key}.{k}")  # noqa: E731
        need(0.0 <= self.switch <= 1.0, name("switch"), "must be in [0, 1]", self.switch)
        _choice(self.sampler, name("sampler"), SAMPLERS)
        _choice(self.precision, name("precision"), PRECISIONS)
        need(self.steps is None or self.steps >= 1, name("steps"), "must be at least 1 (or left out: every timestep)",
             self.steps)
        need(self.batch_size >= 1, name("batch_size"), "must be at least 1", self.batch_size)


@dataclass
class GeneratorConfig:
    size: int = 64
    image_channels: int = 3  # 1 trains on grey images
    resize_mode: ResizeMode = "resize"  # resize (squash to size²) | center-crop | crop (aspect kept, random size² crops)
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

    def check(self) -> None:
        """Refuse values that cannot train or sample, naming the key (``load_config`` calls this)."""
        need_side(self.size, "size")
        need(self.image_channels in (1, 3), "image_channels", "must be 1 (grey) or 3 (RGB)", self.image_channels)
        _choice(self.resize_mode, "resize_mode", RESIZE_MODES)
        need(self.long_side is None or self.size <= self.long_side <= MAX_SIDE, "long_side",
             f"must be null or from size ({self.size}) to {MAX_SIDE}", self.long_side)
        need(0.0 <= self.crop_defect_prob <= 1.0, "crop_defect_prob", "must be in [0, 1]", self.crop_defect_prob)
        check_unet(self.large, "large", self.size)
        check_unet(self.small, "small", self.size)
        self.diffusion.check()
        self.train.check()
        self.sample.check()
        need(self.sample.steps is None or self.sample.steps <= self.diffusion.num_train_timesteps, "sample.steps",
             f"must be at most diffusion.num_train_timesteps ({self.diffusion.num_train_timesteps})", self.sample.steps)
