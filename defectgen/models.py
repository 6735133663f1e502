"""The two denoising networks (diffusers ``UNet2DModel``) and their receptive field.

Defect-Gen's large model has several downsamplings and attention at low resolution, so it sees
the whole image and learns global layout. The small model has few downsamplings and no attention:
it only sees local patches, which it can recombine instead of copying whole training images.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from diffusers import UNet2DModel


@dataclass
class UNetConfig:
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    layers_per_block: int = 2
    attention_levels: tuple[int, ...] = (2, 3)  # level k runs at 1/2**k of the image size
    attention_head_dim: int = 32
    mid_attention: bool = True  # attention in the bottleneck; off for a truly local model
    norm_num_groups: int = 32
    dropout: float = 0.0


def build_unet(cfg: UNetConfig, in_channels: int, sample_size: int) -> UNet2DModel:
    """A ``UNet2DModel`` with ``len(channel_mult) - 1`` downsamplings, attention where configured."""
    channels = tuple(cfg.base_channels * m for m in cfg.channel_mult)
    bad = [c for c in channels if c % cfg.norm_num_groups]
    if bad:
        raise ValueError(f"norm_num_groups={cfg.norm_num_groups} must divide every level's channels {channels}")
    levels = range(len(channels))
    down = tuple("AttnDownBlock2D" if k in cfg.attention_levels else "DownBlock2D" for k in levels)
    up = tuple("AttnUpBlock2D" if k in cfg.attention_levels else "UpBlock2D" for k in reversed(levels))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=min(cfg.attention_head_dim, min(channels)),
        add_attention=cfg.mid_attention,
        norm_num_groups=cfg.norm_num_groups,
        dropout=cfg.dropout,
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextmanager
def _local_norm_gradients(model: torch.nn.Module) -> Iterator[None]:
    """GroupNorm statistics span the whole image and would make every receptive field global.

    While measuring, treat the statistics as constants, so the gradient only flows through the
    local operators (convolutions) and through attention, which genuinely is global.
    """

    def detached_forward(self: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        g = x.reshape(n, self.num_groups, -1)
        mean = g.mean(-1, keepdim=True).detach()
        var = g.var(-1, unbiased=False, keepdim=True).detach()
        y = ((g - mean) / torch.sqrt(var + self.eps)).reshape_as(x)
        if self.affine:
            shape = (1, c) + (1,) * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    for m in norms:
        m.forward = detached_forward.__get__(m)
    try:
        yield
    finally:
        for m in norms:
            del m.forward


def receptive_field(model: UNet2DModel, size: int, timestep: int = 500) -> int:
    """Receptive field in pixels: the side of the input region that moves the centre output pixel."""
    in_ch = model.config.in_channels
    x = torch.randn(1, in_ch, size, size, requires_grad=True)
    with _local_norm_gradients(model):
        out = model(x, torch.tensor([timestep])).sample
        out[0, :, size // 2, size // 2].sum().backward()
    touched = x.grad.abs().sum(dim=(0, 1)) > 0
    rows = torch.nonzero(touched.any(dim=1)).flatten()
    cols = torch.nonzero(touched.any(dim=0)).flatten()
    return int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))


def describe(model: UNet2DModel, size: int) -> dict[str, object]:
    """Parameters and receptive field of one network, as ``defectgen inspect`` prints them."""
    rf = receptive_field(model, size)
    return {
        "parameters": count_parameters(model),
        "block_out_channels": list(model.config.block_out_channels),
        "down_blocks": list(model.config.down_block_types),
        "receptive_field_px": rf,
        "whole_image": rf >= size,
    }
