"""The pair representation: ``x = image ⊕ one_hot(mask)``, every channel in [-1, 1].

Image channels come first (1 for grey, 3 for RGB), then one channel per class including
background. Decoding takes the argmax over the mask channels, so every sample is an image
*and* its label. Ignore pixels (255) are encoded as background: the generator has no
"unknown" class to produce.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def encode_pairs(images: np.ndarray, masks: np.ndarray, num_classes: int, image_channels: int = 3) -> torch.Tensor:
    """(N,H,W,3) uint8 images and (N,H,W) uint8 masks -> (N, image_channels + num_classes, H, W) float."""
    img = torch.from_numpy(np.array(images)).float().permute(0, 3, 1, 2) / 127.5 - 1.0  # a copy: inputs may be read-only
    if image_channels == 1:
        img = img.mean(dim=1, keepdim=True)
    elif image_channels != 3:
        raise ValueError(f"image_channels must be 1 or 3, got {image_channels}")
    m = torch.from_numpy(np.array(masks)).long()
    m = torch.where(m >= num_classes, torch.zeros_like(m), m)  # ignore -> background
    onehot = F.one_hot(m, num_classes).permute(0, 3, 1, 2).float() * 2.0 - 1.0
    return torch.cat([img, onehot], dim=1)


def decode_pairs(x: torch.Tensor, image_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``encode_pairs``: (N,H,W,3) uint8 images and (N,H,W) uint8 argmax masks."""
    x = x.detach().float().cpu()
    img = ((x[:, :image_channels].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    if image_channels == 1:
        img = img.expand(-1, 3, -1, -1)
    masks = x[:, image_channels:].argmax(dim=1).to(torch.uint8)
    return img.permute(0, 2, 3, 1).numpy().copy(), masks.numpy()


def flip_turn(x: torch.Tensor, hflip: torch.Tensor | None = None, vflip: torch.Tensor | None = None,
              turns: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetries of the square on a batch ``(B, ..., H, W)``, one per sample, in one batched call.

    Per sample: mirror left-right where ``hflip``, top-bottom where ``vflip`` (``(B,)`` bool), then
    ``turns`` (``(B,)`` in 0..3) quarter turns (square samples, or a batch of one); ``None`` leaves that
    step out. Every flip and turn of pairs (generator and segmenter training, copy-paste, windows)
    goes through here, so image and mask channels always move together.
    """
    def per_sample(flag: torch.Tensor) -> torch.Tensor:
        return flag.to(x.device).bool().view(-1, *[1] * (x.dim() - 1))

    if hflip is not None:
        x = torch.where(per_sample(hflip), x.flip(-1), x)
    if vflip is not None:
        x = torch.where(per_sample(vflip), x.flip(-2), x)
    if turns is not None and len(x) == 1:  # one sample may be any rectangle
        x = torch.rot90(x, int(turns[0]), dims=(-2, -1))
    elif turns is not None:  # square samples: every turn of the batch at once, then each sample's own
        x = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])[turns.to(x.device),
                                                                              torch.arange(len(x), device=x.device)]
    return x


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square (k in 0..7) applied to the first two axes of an image or mask:
    ``k % 4`` quarter turns, then a left-right mirror when ``k >= 4`` (a mirror, then ``-k`` turns)."""
    x = torch.from_numpy(np.array(array)).movedim((0, 1), (-2, -1))[None]
    x = flip_turn(x, hflip=torch.tensor([k >= 4]), turns=torch.tensor([(-k if k >= 4 else k) % 4]))
    return np.ascontiguousarray(x[0].movedim((-2, -1), (0, 1)).numpy())
