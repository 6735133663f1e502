"""Image geometry: keep the aspect, scale by the long side, train on crops, predict whole images.

``resize_mode: crop`` (generator and segmentation configs) replaces squashing every image to
``size x size``:

1. each pair is scaled, aspect kept, so that its long side is ``long_side`` px (``None``: native
   size); an image whose short side would fall below ``size`` is scaled up to ``size``;
2. images are resampled bicubically; masks by **class coverage**: an output pixel takes the
   defect class covering the largest part of it when that part is at least ``0.45 / f`` (``f`` =
   the downscale factor), so a 1-px crack stays one connected line instead of the fragments that
   nearest-neighbour leaves (see ``experiments/geometry_crack/geometry_crack.py`` for the numbers);
3. training draws ``size x size`` crops (``CropSet``): with probability ``defect_prob`` the crop
   holds a random defect pixel at a random position, otherwise it is uniform over the image;
4. segmentation predicts the whole scaled image with a sliding window of ``size`` (stride size/2,
   logits averaged), so nothing is cropped away at test time.

A 500x1260 image with ``long_side: 512`` becomes 203x512 (factor 2.46); with ``size: 64`` every
training step sees 64x64 windows of it, and the generator samples 64x64 pairs at that scale.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from defectgen.data.classmap import ClassMap
from defectgen.data.records import PairRecord
from defectgen.data.loading import load_pair


def scaled_size(width: int, height: int, long_side: int | None, min_side: int) -> tuple[int, int]:
    """(W, H) with the aspect kept: long side ``long_side`` (or native), short side at least ``min_side``."""
    scale = 1.0 if long_side is None else long_side / max(width, height)
    scale = max(scale, min_side / min(width, height))
    return max(min_side, round(width * scale)), max(min_side, round(height * scale))


def scale_mask(mask: np.ndarray, size: tuple[int, int], num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Resize a class-id mask to ``size`` (W, H); downscaling keeps thin defects by class coverage."""
    h, w = mask.shape
    factor = max(w / size[0], h / size[1])
    if factor <= 1.0:
        return np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    out = np.zeros((size[1], size[0]), np.uint8)
    best = np.zeros((size[1], size[0]), np.float32)
    ignore = np.asarray(Image.fromarray((mask == ignore_index).astype(np.float32)).resize(size, Image.BOX))
    out[ignore >= 0.5] = ignore_index
    floor = 0.45 / factor
    for cid in range(1, num_classes):
        if not (mask == cid).any():
            continue
        cov = np.asarray(Image.fromarray((mask == cid).astype(np.float32)).resize(size, Image.BOX))
        take = (cov >= floor) & (cov > best)
        out[take], best[take] = cid, cov[take]
    return out


def load_scaled(
    records: list[PairRecord], class_map: ClassMap, long_side: int | None, min_side: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pairs at their scaled size: lists of (H,W,3) uint8 images and (H,W) uint8 masks."""
    images, masks = [], []
    for rec in records:
        img, mask = load_pair(rec, class_map)
        w, h = scaled_size(img.shape[1], img.shape[0], long_side, min_side)
        if (w, h) != (img.shape[1], img.shape[0]):
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))
            mask = scale_mask(mask, (w, h), class_map.num_classes, class_map.ignore_index)
        images.append(img)
        masks.append(mask)
    return images, masks


class CropSet:
    """Pairs of different sizes, drawn as ``size x size`` crops (defect-aware).

    ``items`` are (C,H,W) tensors (any dtype), ``masks`` the matching (H,W) class-id arrays that
    say where the defects are. ``crops(idx, g)`` is reproducible from the generator ``g``.
    """

    def __init__(self, items: list[torch.Tensor], masks: list[np.ndarray], size: int, defect_prob: float = 0.5,
                 num_classes: int = 256):
        if not items:
            raise ValueError("no pairs to crop from")
        small = [tuple(t.shape[1:]) for t in items if min(t.shape[1:]) < size]
        if small:
            raise ValueError(f"pairs smaller than the crop size {size}: {small[:3]}")
        self.items, self.size, self.defect_prob = items, size, defect_prob
        self.defect_yx = [torch.from_numpy(np.argwhere((m > 0) & (m < num_classes))) for m in masks]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.items), self.items[0].shape[0], self.size, self.size)

    def crops(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One crop per index in ``idx``, stacked (B,C,size,size)."""
        out = []
        for i in idx.tolist():
            item, yx, s = self.items[i], self.defect_yx[i], self.size
            h, w = item.shape[1:]
            u = torch.rand(3, generator=g)
            if len(yx) and u[0] < self.defect_prob:
                y, x = yx[int(torch.randint(len(yx), (), generator=g))].tolist()
                top, left = y - int(u[1] * s), x - int(u[2] * s)  # the defect pixel lands anywhere in the crop
            else:
                top, left = int(u[1] * (h - s + 1)), int(u[2] * (w - s + 1))
            top, left = min(max(top, 0), h - s), min(max(left, 0), w - s)
            out.append(item[:, top:top + s, left:left + s])
        return torch.stack(out)


def seg_crop_set(images: list[np.ndarray], masks: list[np.ndarray], size: int, defect_prob: float,
                 num_classes: int) -> CropSet:
    """Segmentation pairs as one uint8 tensor each: 3 image channels then the mask channel."""
    items = [torch.from_numpy(np.concatenate([im, m[..., None]], axis=2)).permute(2, 0, 1).contiguous()
             for im, m in zip(images, masks)]
    return CropSet(items, masks, size, defect_prob, num_classes)


@torch.no_grad()
def sliding_logits(model: torch.nn.Module, image: torch.Tensor, size: int) -> torch.Tensor:
    """Logits (K,H,W) of a whole (3,H,W) image from ``size`` windows at stride size/2, averaged."""
    _, h, w = image.shape
    stride = max(1, size // 2)
    tops = sorted({*range(0, h - size + 1, stride), h - size})
    lefts = sorted({*range(0, w - size + 1, stride), w - size})
    acc = None
    hits = torch.zeros((1, h, w), device=image.device)
    windows = [(t, l) for t in tops for l in lefts]
    for k in range(0, len(windows), 16):
        part = windows[k:k + 16]
        batch = torch.stack([image[:, t:t + size, l:l + size] for t, l in part])
        logits = model(batch)
        if acc is None:
            acc = torch.zeros((logits.shape[1], h, w), device=image.device)
        for (t, l), lg in zip(part, logits):
            acc[:, t:t + size, l:l + size] += lg
            hits[:, t:t + size, l:l + size] += 1
    return acc / hits
