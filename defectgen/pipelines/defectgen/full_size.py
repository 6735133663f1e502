"""Full-size pairs on a run trained on crops (``resize_mode: crop``): every background stays whole.

Each new defect gets one window of the run's scale (``windows.py``); the pipeline paints the windows
of a batch in one call, and ``FullCondition.compose`` writes only their painted regions back into
the image. Every sample's background and windows are chosen when the request is built, from the
sample's own seed, so a request that cannot be met fails before the first pair is sampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from defectgen.data import ClassMap, load_pair
from defectgen.data.folders import Loaded, read_good_images, read_mask_folder, read_region_masks
from defectgen.data.geometry import load_scaled
from defectgen.errors import DataError
from defectgen.generator_config import GeneratorConfig
from defectgen.pipelines.defectgen.guidance import Condition
from defectgen.pipelines.defectgen.request import GuidedRequest, pick_mask, stem_pairs
from defectgen.pipelines.defectgen.windows import (Window, composite, cover_mask, cut_defect, max_windows,
                                                   place_windows, resize_image, resize_mask, window_side)
from defectgen.run import RunFolder
from defectgen.schedule import sample_seed


@dataclass
class FullCondition:
    """What one full-size sample is asked to be: a whole background and the windows of its new defects."""

    image: np.ndarray  # (H,W,3) uint8, the background at its own resolution
    base: np.ndarray  # (H,W) labels that are kept (zeros for a good image)
    region: np.ndarray | None  # (H,W) bool: where new defect pixels may go (None: anywhere)
    windows: list[Window]
    allowed: tuple[int, ...]
    info: dict

    def window_conditions(self, size: int, class_map: ClassMap) -> list[Condition]:
        """One ``size x size`` request per window, at the run's scale: what the UNets saw in training."""
        out = []
        for w in self.windows:
            image = resize_image(self.image[w.box], size)
            base = resize_mask(self.base[w.box], size, class_map.num_classes, class_map.ignore_index)
            if w.new_model is None:
                hold = base == class_map.ignore_index
                if self.region is not None:
                    hold |= resize_mask(self.region[w.box].astype(np.uint8), size, 2) == 0
                out.append(Condition(image, None, base, self.allowed, hold=hold))
                continue
            mask = base.copy()
            put = (w.new_model > 0) & (w.new_model != class_map.ignore_index) & (base == 0)
            mask[put] = w.new_model[put]
            out.append(Condition(image, mask, base, self.allowed, start=self._pasted(w, size)))
        return out

    def _pasted(self, w: Window, size: int) -> np.ndarray | None:
        """The window with its copied defect pixels pasted in, at the run's scale (None: nothing copied)."""
        if w.pixels is None:
            return None
        window = self.image[w.box].copy()
        put = (w.new > 0) & (self.base[w.box] == 0)
        window[put] = w.pixels[put]
        return resize_image(window, size)

    def compose(self, outputs: Sequence[tuple[np.ndarray, np.ndarray, Condition]], size: int, blend: int,
                class_map: ClassMap) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """The full-size image and mask from each window's (image, mask, request), and each window's record.

        The new defect goes where the background is unlabelled (and inside the region); only it and
        its blend band are written into the image. ``blend`` is in pixels at the run's scale.
        """
        image, mask, records = self.image.copy(), self.base.copy(), []
        for w, (win_image, win_mask, cond) in zip(self.windows, outputs):
            new = w.new
            if new is None:  # the model's own label on the pixels it was free to paint, back at image scale
                free = (cond.base == 0) & ~cond.hold
                new = resize_mask(np.where(free, win_mask, 0).astype(np.uint8), w.side, class_map.num_classes,
                                  class_map.ignore_index)
                if self.region is not None:
                    new = np.where(self.region[w.box], new, 0)
            paint = (new > 0) & (new != class_map.ignore_index) & (self.base[w.box] == 0)
            resampled = w.side != size
            band = round(blend * w.side / size) if resampled else blend
            image[w.box] = composite(self.image[w.box], resize_image(win_image, w.side), paint, band, resampled)
            mask[w.box][paint] = new[paint]
            names = [class_map.names[c] for c in np.unique(new[paint]).tolist()]
            records.append({**w.record(size), "new_pixels": int(paint.sum()), "new_classes": names})
        return image, mask, records


@dataclass
class _Background:
    path: Path
    image: np.ndarray
    base: np.ndarray | None  # kept labels (training images); None for a good image
    region: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

    def loaded(self) -> Loaded:
        return Loaded(self.image, (self.shape[1], self.shape[0]), self.path)

    def blocked(self, class_map: ClassMap) -> np.ndarray | None:
        """Pixels a new defect must not cover: the image's own labels and what lies outside its region."""
        parts = [p for p in (None if self.base is None else self.base > 0,
                             None if self.region is None else ~self.region) if p is not None]
        return None if not parts else np.logical_or.reduce(parts)


@dataclass
class _Layout:
    background: str
    windows: list[Window]
    allowed: tuple[int, ...]
    info: dict


class FullSizeConditions:
    """``condition(i)`` of a full-size request: every sample's background and windows are chosen when
    the request is built (from the sample's own seed), so a window that does not fit is an error
    before the first pair is sampled; the arrays are cut when a sample is asked for."""

    full_size = True

    def __init__(self, backgrounds: dict[str, _Background], layouts: list[_Layout], size: int, long_side: int | None):
        self.backgrounds, self.layouts, self.size, self.long_side = backgrounds, layouts, size, long_side

    def __call__(self, i: int) -> FullCondition:
        lay = self.layouts[i]
        bg = self.backgrounds[lay.background]
        base = bg.base if bg.base is not None else np.zeros(bg.shape, np.uint8)
        return FullCondition(bg.image, base, bg.region, lay.windows, lay.allowed, lay.info)

    @classmethod
    def build(cls, req: GuidedRequest, run: RunFolder, class_map: ClassMap, image_channels: int,
              plan: list[tuple[int, ...]], seed: int) -> "FullSizeConditions":
        cfg = run.config
        backgrounds = _full_backgrounds(req, run, class_map, image_channels)
        if req.region is not None:
            regions = read_region_masks(req.region, {k: (b.path, b.shape) for k, b in backgrounds.items()})
            for stem, region in regions.items():
                backgrounds[stem].region = region
        masks = _full_masks(req, run, cfg, class_map)
        count = req.defects_per_image or 1
        for stem, bg in backgrounds.items():
            side = window_side(bg.shape[1], bg.shape[0], cfg.size, cfg.long_side)
            if req.mask_source != "folder" and count > max_windows(bg.shape, side):
                raise DataError(f"{bg.path}: --defects-per-image {count}: at most {max_windows(bg.shape, side)} windows "
                                f"of {side}x{side} px fit side by side in this {bg.shape[1]}x{bg.shape[0]} image")
        by_stem = req.mode == "onto" and req.mask_source == "folder" and req.pairing == "stem"
        pairs = stem_pairs(req, {k: b.loaded() for k, b in backgrounds.items()}, masks) if by_stem else None
        sources = _paste_sources(run, class_map, backgrounds) if req.mask_source == "paste" else {}
        layouts = [_layout(i, req, cfg, class_map, backgrounds, masks, pairs, plan[i], count, seed, sources)
                   for i in range(len(plan))]
        return cls(backgrounds, layouts, cfg.size, cfg.long_side)


def _full_backgrounds(req: GuidedRequest, run: RunFolder, class_map: ClassMap, image_channels: int) -> dict[str, _Background]:
    """The backgrounds at their own size: good images (onto) or the generator's training pairs (into-training)."""
    if req.mode == "onto":
        return {k: _Background(v.path, v.array, None) for k, v in read_good_images(req.good, None, image_channels).items()}
    out = {}
    for rec in run.training_records(class_map):
        image, mask = load_pair(rec, class_map)
        out[rec.stem] = _Background(rec.image, image, mask)
    return out


def _full_masks(req: GuidedRequest, run: RunFolder, cfg: GeneratorConfig, class_map: ClassMap) -> dict[str, Loaded]:
    """Masks by stem: the user's at their own size, or the training masks at the run's scale (model, paste: none)."""
    if req.mask_source == "folder":
        return read_mask_folder(req.masks, class_map, None)
    if req.mask_source in ("model", "paste"):
        return {}
    records = run.training_records(class_map)
    _, scaled = load_scaled(records, class_map, cfg.long_side, cfg.size)
    return {r.stem: Loaded(m, (m.shape[1], m.shape[0]), r.mask or r.image) for r, m in zip(records, scaled)}


def _layout(i: int, req: GuidedRequest, cfg: GeneratorConfig, class_map: ClassMap, backgrounds: dict[str, _Background],
            masks: dict[str, Loaded], pairs: list[str] | None, allowed: tuple[int, ...], count: int, seed: int,
            sources: dict[str, tuple[np.ndarray, np.ndarray]]) -> _Layout:
    """Sample i's background and windows, drawn from its own seed (``sources``: the pairs paste cuts from)."""
    rng = np.random.default_rng(sample_seed(seed, i))
    stems = sorted(backgrounds)
    stem = pairs[i % len(pairs)] if pairs else stems[int(rng.integers(len(stems)))]
    bg = backgrounds[stem]
    side = window_side(bg.shape[1], bg.shape[0], cfg.size, cfg.long_side)
    info = {"mode": req.mode, "mask_source": req.mask_source, "classes": [class_map.names[c] for c in allowed],
            "source_image": stem, "image_size": [bg.shape[1], bg.shape[0]]}
    if req.mask_source == "folder":
        ms = stem if pairs else _same_size_mask(masks, bg, allowed, rng, req.masks)
        windows = cover_mask(masks[ms].array, allowed, side, str(masks[ms].path))
        if not windows:
            raise DataError(f"{masks[ms].path}: no defect pixel of the classes {info['classes']} in this mask")
        for w in windows:
            w.new_model = resize_mask(w.new, cfg.size, class_map.num_classes, class_map.ignore_index)
            w.info = {"mask_source": "folder", "source_mask": ms}
        return _Layout(stem, windows, allowed, info)
    draw = None
    if req.mask_source == "train":
        names, scaled = sorted(masks), [masks[s].array for s in sorted(masks)]
        draw = lambda r: _train_window(names, scaled, allowed, cfg.size, side, r, class_map)  # noqa: E731
    if req.mask_source == "paste":  # a defect of another training image, with its pixels
        others = {k: v for k, v in sources.items() if k != stem} or sources
        draw = lambda r: _paste_window(others, allowed, cfg, side, r, class_map)  # noqa: E731
    windows = place_windows(bg.shape, side, count, rng, bg.blocked(class_map), draw)
    if windows is None:
        where = " inside --region" if bg.region is not None else ""
        own = " off its own defects" if bg.base is not None else ""
        raise DataError(f"{bg.path}: {count} defect window(s) of {side}x{side} px do not fit without overlapping{where}{own} "
                        f"(sample {i}); lower --defects-per-image" + (" or widen the region" if where else ""))
    for w in windows:
        w.info.setdefault("mask_source", req.mask_source)
    return _Layout(stem, windows, allowed, info)


def _train_window(stems: list[str], masks: list[np.ndarray], allowed: tuple[int, ...], size: int, side: int,
                  rng: np.random.Generator, class_map: ClassMap) -> Window:
    """A new defect cut from a training mask at the run's scale (a window around one of its defects)."""
    k = pick_mask(masks, allowed, rng)
    crop, _, where = cut_defect(masks[k], allowed, size, rng)
    new = resize_mask(crop, side, class_map.num_classes, class_map.ignore_index)
    return Window(0, 0, side, new, crop, {"mask_source": "train", "source_mask": stems[k], **where})


def _paste_sources(run: RunFolder, class_map: ClassMap, backgrounds: dict[str, _Background]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The training pairs at their own size, by stem (already read when they are the backgrounds)."""
    if all(b.base is not None for b in backgrounds.values()):
        return {k: (b.image, b.base) for k, b in backgrounds.items()}
    return {r.stem: load_pair(r, class_map) for r in run.training_records(class_map)}


def _paste_window(pairs: dict[str, tuple[np.ndarray, np.ndarray]], allowed: tuple[int, ...], cfg: GeneratorConfig,
                  side: int, rng: np.random.Generator, class_map: ClassMap) -> Window:
    """A real defect cut with its pixels from another training image (a window of the run's scale around
    it, randomly flipped or turned), at the target's ``side``: copy-paste, before the model harmonises it."""
    stems = sorted(pairs)
    k = pick_mask([pairs[s][1] for s in stems], allowed, rng)
    image, mask = pairs[stems[k]]
    src_side = window_side(mask.shape[1], mask.shape[0], cfg.size, cfg.long_side)
    cut, pixels, where = cut_defect(mask, allowed, src_side, rng, image)
    nc, ig = class_map.num_classes, class_map.ignore_index
    return Window(0, 0, side, resize_mask(cut, side, nc, ig), resize_mask(cut, cfg.size, nc, ig),
                  {"mask_source": "paste", "source_mask": stems[k], **where}, pixels=resize_image(pixels, side))


def _same_size_mask(masks: dict[str, Loaded], bg: _Background, allowed: tuple[int, ...], rng: np.random.Generator,
                    folder: Path | None) -> str:
    """--pairing random: a mask of the background's size holding an allowed class."""
    fits = sorted(k for k, m in masks.items() if m.array.shape == bg.shape and np.isin(m.array, allowed).any())
    if not fits:
        raise DataError(f"{folder}: no mask of {bg.path.name}'s size {bg.shape[1]}x{bg.shape[0]} holds the classes "
                        f"{list(allowed)}; full-size masks are drawn where they are, so sizes must match")
    return fits[int(rng.integers(len(fits)))]


def window_masks(req: GuidedRequest, run: RunFolder, class_map: ClassMap, plan: list[tuple[int, ...]],
                 seed: int) -> Callable[[int], Condition]:
    """mask -> image on a crop-mode run: ``size x size`` windows, since a full-size mask has no image to go
    with. A mask folder must hold window-sized masks; training masks give a window around one of their defects."""
    cfg = run.config
    size = cfg.size
    masks = _full_masks(req, run, cfg, class_map)
    if req.mask_source == "folder":
        for m in masks.values():
            if max(m.size) > size:
                raise DataError(f"{m.path}: a {m.size[0]}x{m.size[1]} mask; mask -> image on a run trained on crops "
                                f"makes {size}x{size} windows, so masks may be at most that size; to paint full-size "
                                "masks, give their backgrounds: --onto GOOD_DIR --masks DIR")
    stems = sorted(masks)
    arrays = [masks[s].array for s in stems]
    empty = np.zeros((size, size), np.uint8)

    def condition(i: int) -> Condition:
        rng = np.random.default_rng(sample_seed(seed, i))
        allowed = plan[i]
        k = pick_mask(arrays, allowed, rng)
        info = {"mode": "masks", "mask_source": req.mask_source, "classes": [class_map.names[c] for c in allowed],
                "source_mask": stems[k]}
        if req.mask_source == "train":
            new, _, where = cut_defect(arrays[k], allowed, size, rng)
            info.update(where)
        else:
            kept = np.where(np.isin(arrays[k], (0, class_map.ignore_index, *allowed)), arrays[k], 0).astype(np.uint8)
            new = np.asarray(Image.fromarray(kept).resize((size, size), Image.NEAREST))
        return Condition(None, new, empty, allowed, info)

    return condition
