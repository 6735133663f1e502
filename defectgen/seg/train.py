"""Training one segmenter: a fixed number of steps, the same schedule and augmentation for every run.

Nothing here looks at test data, and there is no early stopping or checkpoint picking: the model
after the last step is the model that is scored. So a gain from synthetic pairs cannot come from
training longer or from choosing a lucky checkpoint.

    model = fit_segmenter(images, masks, SegConfig(model="unet-small"), num_classes=4, seed=0)
    pred = predict(model, test_images)
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from defectgen.config import ConfigError, need, need_side
from defectgen.data.geometry import seg_crop_set, sliding_logits
from defectgen.device import resolve_device
from defectgen.pairs import flip_turn
from defectgen.seg.models import Segmenter, build_model
from defectgen.timing import auto_threads


@dataclass
class SegConfig:
    """How one segmentation model is trained (identical for every ratio and source)."""

    model: str = "deeplabv3plus-r18"
    size: int = 64  # images and masks are resized to size x size (crop mode: the crop and window side)
    resize_mode: Literal["resize", "crop"] = "resize"  # resize: squash to size²; crop: aspect kept, train on crops, predict whole images
    long_side: int | None = None  # crop mode: scale images so their long side is this (None: native size)
    crop_defect_prob: float = 0.5  # crop mode: share of training crops placed over a defect pixel
    steps: int = 400  # optimisation steps, fixed: never epochs, never early stopping
    batch_size: int = 16
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4
    warmup_steps: int = 20  # linear warm-up, then cosine decay to zero
    augment: bool = True  # random flips and 90-degree rotations (the 8 symmetries of the square)
    encoder_weights_path: str | None = None  # local ImageNet weights for the encoder; None = from scratch
    threads: int = 0  # CPU threads for torch; 0 = auto: half the cores, 1 to 4 (oversubscribed cores are far slower)
    eval_batch_size: int = 64

    def check(self, key: str = "seg") -> None:
        """Refuse values that cannot train, naming the key."""
        for name in ("steps", "batch_size", "eval_batch_size"):
            need(getattr(self, name) >= 1, f"{key}.{name}", "must be at least 1", getattr(self, name))
        for name in ("warmup_steps", "weight_decay", "threads"):
            need(getattr(self, name) >= 0, f"{key}.{name}", "must not be negative", getattr(self, name))
        need_side(self.size, f"{key}.size")
        if self.long_side is not None:
            need_side(self.long_side, f"{key}.long_side")
        need(self.lr > 0, f"{key}.lr", "must be above 0", self.lr)
        need(self.resize_mode in ("resize", "crop"), f"{key}.resize_mode", "must be one of resize, crop", self.resize_mode)
        need(0.0 <= self.crop_defect_prob <= 1.0, f"{key}.crop_defect_prob", "must be in [0, 1]", self.crop_defect_prob)




def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of ``steps`` batches drawn from back-to-back random permutations of ``n`` items."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        yield order[:batch_size]
        order = order[batch_size:]


def augment_batch(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random symmetry of the square (flip and/or 90-degree turn) per sample, same to image and mask.

    One draw per sample from ``gen``: 4..7 mirror left-right, then ``draw % 4`` quarter turns."""
    draws = torch.randint(0, 8, (x.shape[0],), generator=gen)
    return flip_turn(x, hflip=draws >= 4, turns=draws % 4), flip_turn(y, hflip=draws >= 4, turns=draws % 4)


def _check_inputs(images: np.ndarray, masks: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N,H,W,3), got {images.dtype} {images.shape}")
    if masks.shape != images.shape[:3] or masks.dtype != np.uint8:
        raise ValueError(f"masks must be uint8 (N,H,W) matching the images, got {masks.dtype} {masks.shape}")
    if len(images) == 0:
        raise ValueError("no training images")


def fit_segmenter(
    images: np.ndarray | list[np.ndarray],
    masks: np.ndarray | list[np.ndarray],
    cfg: SegConfig,
    num_classes: int,
    seed: int,
    device: str | None = None,
    ignore_index: int = 255,
    log: Callable[[dict], None] | None = None,
    init: Segmenter | None = None,
    sample_weights: np.ndarray | None = None,
) -> Segmenter:
    """Train ``cfg.model`` from ``seed`` on (N,H,W,3) uint8 images and (N,H,W) uint8 class-id masks.

    The seed fixes the initialisation, the batch order and the augmentation draws. ``log`` (if given)
    receives ``{"step", "loss", "lr"}`` every 50 steps and at the end. Lists of images of different
    sizes are trained on ``cfg.size`` crops (``defectgen.data.geometry.CropSet``). ``init`` continues
    training that model (fine-tuning, with a fresh optimiser and schedule) instead of a fresh one;
    ``sample_weights`` (N,) scales each pair's pixel losses (the loss is still divided by the
    number of valid pixels, so a weight below 1 shrinks that pair's share of the update).
    """
    if sample_weights is not None and len(sample_weights) != len(images):
        raise ValueError(f"sample_weights has {len(sample_weights)} entries for {len(images)} images")
    crops = None
    if isinstance(images, list):
        crops = seg_crop_set(images, masks, cfg.size, cfg.crop_defect_prob, num_classes)
        images, masks = np.zeros((1, cfg.size, cfg.size, 3), np.uint8), np.zeros((1, cfg.size, cfg.size), np.uint8)
    _check_inputs(images, masks)
    if cfg.batch_size < 2:
        raise ConfigError("config key 'seg.batch_size' must be at least 2 (BatchNorm needs more than one sample)")
    torch.set_num_threads(cfg.threads if cfg.threads > 0 else auto_threads())
    dev = resolve_device(device)
    seed_everything(seed)
    model = (init if init is not None else build_model(cfg.model, num_classes, cfg.encoder_weights_path)).to(dev)
    model.check_size(*images.shape[1:3])
    w_all = None if sample_weights is None else torch.as_tensor(sample_weights, dtype=torch.float32).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps))
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(dev)
    y_all = torch.from_numpy(np.ascontiguousarray(masks)).long().to(dev)
    model.train()
    running = torch.zeros((), device=dev)  # on the device: no host sync per step, only when logging
    for step, idx in enumerate(batch_indices(len(crops or images), cfg.batch_size, cfg.steps, gen)):
        if crops is not None:
            xy = crops.crops(idx, gen).to(dev)
            x, y = xy[:, :3].float() / 255.0, xy[:, 3].long()
        else:
            x, y = x_all[idx.to(dev)].float() / 255.0, y_all[idx.to(dev)]
        if cfg.augment:
            x, y = augment_batch(x, y, gen)
        logits = model(x)
        valid = (y != ignore_index).sum().clamp(min=1)
        if w_all is None:
            loss = F.cross_entropy(logits, y, ignore_index=ignore_index, reduction="sum") / valid
        else:
            pixel = F.cross_entropy(logits, y, ignore_index=ignore_index, reduction="none")  # 0 at ignored pixels
            loss = (pixel * w_all[idx.to(dev)].view(-1, 1, 1)).sum() / valid
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.detach() if step == 0 else 0.9 * running + 0.1 * loss.detach()
        if log is not None and ((step + 1) % 50 == 0 or step + 1 == cfg.steps):
            log({"step": step + 1, "loss": running.item(), "lr": sched.get_last_lr()[0]})
    model.eval()
    return model


@torch.no_grad()
def predict(model: Segmenter, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Class ids (N,H,W) uint8 for (N,H,W,3) uint8 images."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N,H,W,3), got {images.shape}")
    model.eval()
    model.check_size(*images.shape[1:3])
    dev = next(model.parameters()).device
    out = np.empty(images.shape[:3], dtype=np.uint8)
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2).to(dev).float() / 255.0
        out[i : i + batch_size] = model(x).argmax(1).to(torch.uint8).cpu().numpy()
    return out


@torch.no_grad()
def predict_whole(model: Segmenter, images: list[np.ndarray], window: int) -> list[np.ndarray]:
    """Class ids of whole images of any size (each side >= ``window``), by a sliding window."""
    model.eval()
    model.check_size(window, window)
    dev = next(model.parameters()).device
    out = []
    for im in images:
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1).to(dev).float() / 255.0
        out.append(sliding_logits(model, x, window).argmax(0).to(torch.uint8).cpu().numpy())
    return out

