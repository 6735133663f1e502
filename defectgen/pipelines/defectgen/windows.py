"""Full-size pairs: where the ``size x size`` windows of new defects go in a whole image, and how they go back.

A run trained with ``resize_mode: crop`` saw ``size x size`` crops of images scaled so that their long
side is ``long_side`` px (``None``: native). Guided sampling on such a run keeps every background
image whole, at its own resolution: each new defect gets one window that is ``size x size`` px at the
run's scale, i.e. ``side = size / scale`` px of the image. The two UNets paint the window exactly as
they would a training crop; only the window is resampled (image bicubic, mask by class coverage, as
``data/geometry.py`` scales training masks), and only the painted region and its blend band are
written back. Everything else in the output is the input image, byte for byte.

Placement rules (``place_windows``): a window lies inside the image, windows of one image do not
overlap, and every pixel of a given new defect lands on an allowed pixel (the ``--region`` mask and
the background's own labels block the rest), so a defect is never clipped or merged into another.
The model-chosen mode has no defect to test: there the window's centre must be allowed.

This module is pure array geometry; ``full_size.py`` builds the per-sample requests with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image
from scipy import ndimage, signal

from defectgen.data.geometry import scale_mask, scaled_size
from defectgen.errors import DataError
from defectgen.pairs import dihedral
from defectgen.pipelines.defectgen.guidance import soft_region

RANDOM_TRIES = 8  # new mask crops tried for one window before the image's placement starts again on a grid


@dataclass
class Window:
    """One defect window: its box in the image and the new defect it holds.

    ``new`` (side x side) and ``new_model`` (size x size) hold the new defect's class ids (0 elsewhere)
    at the image's and at the run's scale; both are None when the model chooses the defect.
    ``pixels`` (side x side x 3): the defect's own image pixels, when it is copied rather than painted.
    """

    x: int
    y: int
    side: int
    new: np.ndarray | None = None
    new_model: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    pixels: np.ndarray | None = None

    @property
    def box(self) -> tuple[slice, slice]:
        return np.s_[self.y:self.y + self.side, self.x:self.x + self.side]

    def record(self, size: int) -> dict:
        """The manifest's entry: where the window is, at which scale, and where its mask came from."""
        return {"x": self.x, "y": self.y, "side": self.side, "scale": round(size / self.side, 6), **self.info}


def window_side(width: int, height: int, size: int, long_side: int | None) -> int:
    """Image pixels spanned by a ``size``-px window at the run's scale (what training scaled this image by)."""
    w, h = scaled_size(width, height, long_side, size)
    scale = max(w, h) / max(width, height)
    return max(1, min(width, height, round(size / scale)))


def resize_image(window: np.ndarray, side: int) -> np.ndarray:
    """A square (s,s,3) uint8 window resampled bicubically to ``side`` px (unchanged at the same size)."""
    if window.shape[0] == side:
        return window
    return np.asarray(Image.fromarray(window).resize((side, side), Image.BICUBIC), dtype=np.uint8)


def resize_mask(window: np.ndarray, side: int, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """A square class-id window resampled to ``side`` px: class coverage when shrinking, nearest when growing."""
    if window.shape[0] == side:
        return window
    return scale_mask(np.ascontiguousarray(window), (side, side), num_classes, ignore_index)


# ---------------------------------------------------------------- placement


def free_positions(shape: tuple[int, int], side: int, taken: list[Window], blocked: np.ndarray | None,
                   defect: np.ndarray | None) -> np.ndarray:
    """(H-side+1, W-side+1) bool: top-left corners where a ``side`` window fits.

    Inside the image, off every ``taken`` window and, with ``blocked`` (H,W), with no pixel of
    ``defect`` (side,side bool) on a blocked pixel; without a defect, with its centre pixel free.
    """
    h, w = shape
    ok = np.ones((h - side + 1, w - side + 1), bool)
    for t in taken:
        ok[max(0, t.y - side + 1):t.y + t.side, max(0, t.x - side + 1):t.x + t.side] = False
    if blocked is None or not blocked.any():
        return ok
    if defect is None:
        c = side // 2
        return ok & ~blocked[c:c + ok.shape[0], c:c + ok.shape[1]]
    hits = signal.correlate(blocked.astype(np.float32), defect.astype(np.float32), mode="valid")
    return ok & (hits < 0.5)


def _grid(shape: tuple[int, int], side: int, rng: np.random.Generator) -> np.ndarray:
    """Corners of a shuffled grid of non-overlapping windows covering the image (random offset)."""
    h, w = shape
    ny, nx = h // side, w // side
    oy, ox = int(rng.integers(0, h - ny * side + 1)), int(rng.integers(0, w - nx * side + 1))
    cells = np.array([(oy + j * side, ox + i * side) for j in range(ny) for i in range(nx)])
    return cells[rng.permutation(len(cells))]


def max_windows(shape: tuple[int, int], side: int) -> int:
    """How many windows fit side by side without overlapping (the most ``place_windows`` can place)."""
    return (shape[0] // side) * (shape[1] // side)


Draw = Callable[[np.random.Generator], Window]


def place_windows(shape: tuple[int, int], side: int, count: int, rng: np.random.Generator,
                  blocked: np.ndarray | None = None, draw: Draw | None = None) -> list[Window] | None:
    """``count`` windows placed uniformly at random by the rules above, or None when they do not fit.

    ``draw(rng)`` makes a window's new defect (its ``x``/``y`` are then set here); without it the
    windows are empty (the model chooses). Random sequential placement jams well before the image
    is full, so when it fails the image is placed again on a randomly offset grid of cells.
    """
    for on_grid in (False, True):
        cells = _grid(shape, side, rng) if on_grid else None
        placed: list[Window] = []
        for _ in range(count):
            win = _place_one(shape, side, placed, rng, blocked, draw, cells)
            if win is None:
                break
            placed.append(win)
        if len(placed) == count:
            return placed
    return None


def _place_one(shape: tuple[int, int], side: int, placed: list[Window], rng: np.random.Generator,
               blocked: np.ndarray | None, draw: Draw | None, cells: np.ndarray | None) -> Window | None:
    for _ in range(RANDOM_TRIES if draw is not None else 1):
        win = draw(rng) if draw is not None else Window(0, 0, side)
        ok = free_positions(shape, side, placed, blocked, None if win.new is None else win.new > 0)
        if cells is not None:
            fits = [tuple(c) for c in cells if ok[c[0], c[1]]]
            where = [fits[0]] if fits else []
        else:
            where = [divmod(int(k), ok.shape[1]) for k in rng.choice(np.flatnonzero(ok), 1)] if ok.any() else []
        if where:
            win.y, win.x = (int(v) for v in where[0])
            return win
    return None


# ---------------------------------------------------------------- given masks


def defect_box(mask: np.ndarray, allowed: tuple[int, ...], size: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """A ``size`` square of ``mask`` around a random pixel of an allowed class (jittered by up to a
    quarter window, so the defect is not always centred), inside the mask."""
    ys, xs = np.nonzero(np.isin(mask, allowed))
    j = int(rng.integers(len(ys)))
    h, w = mask.shape
    jitter = rng.integers(-(size // 4), size // 4 + 1, 2)
    top = int(np.clip(ys[j] - size // 2 + jitter[0], 0, h - size))
    left = int(np.clip(xs[j] - size // 2 + jitter[1], 0, w - size))
    return np.s_[top:top + size, left:left + size]


def cut_defect(mask: np.ndarray, allowed: tuple[int, ...], size: int, rng: np.random.Generator,
               image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """A ``size`` window of ``mask`` around one of its allowed-class defects, turned by a random
    symmetry, with only the allowed classes kept; the same window of ``image`` (None without one); and
    where it came from (``source_x``, ``source_y``: its top-left corner; ``symmetry``: ``pairs.dihedral``'s k)."""
    box = defect_box(mask, allowed, size, rng)
    k = int(rng.integers(0, 8))
    crop = dihedral(np.where(np.isin(mask[box], allowed), mask[box], 0).astype(np.uint8), k)
    pixels = None if image is None else dihedral(image[box], k)
    return crop, pixels, {"source_x": box[1].start, "source_y": box[0].start, "symmetry": k}


def cover_mask(mask: np.ndarray, allowed: tuple[int, ...], side: int, where: str) -> list[Window]:
    """Windows covering every allowed defect pixel of a full-size mask (a user's drawn mask).

    Connected defect regions are grouped while the group still fits one window; each window is
    centred on its group and kept inside the image. A region larger than a window, or regions too
    close for separate windows and too far apart for one, are a ``DataError`` naming ``where``.
    """
    defect = np.isin(mask, allowed) & (mask > 0)
    labels, _ = ndimage.label(defect, structure=np.ones((3, 3)))
    groups: list[list[int]] = []  # [y0, x0, y1, x1] boxes, end exclusive
    for sl in ndimage.find_objects(labels):
        box = [sl[0].start, sl[1].start, sl[0].stop, sl[1].stop]
        if box[2] - box[0] > side or box[3] - box[1] > side:
            raise DataError(f"{where}: a defect region of {box[3] - box[1]}x{box[2] - box[0]} px is larger than one "
                            f"window ({side}x{side} px of this image: the run's window at its scale); draw smaller "
                            "regions or train with a smaller long_side")
        _add_to_group(groups, box, side)
    windows = _merge_overlapping(groups, side, mask.shape, where)
    for win in windows:
        win.new = np.where(defect[win.box], mask[win.box], 0).astype(np.uint8)
    return windows


def _union(a: list[int], b: list[int]) -> list[int]:
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def _fits(box: list[int], side: int) -> bool:
    return box[2] - box[0] <= side and box[3] - box[1] <= side


def _add_to_group(groups: list[list[int]], box: list[int], side: int) -> None:
    for g in groups:
        if _fits(_union(g, box), side):
            g[:] = _union(g, box)
            return
    groups.append(box)


def _window_over(box: list[int], side: int, shape: tuple[int, int]) -> Window:
    """The window centred on ``box``, moved inside the image (it still holds the box)."""
    y = int(np.clip((box[0] + box[2] - side) // 2, max(0, box[2] - side), min(box[0], shape[0] - side)))
    x = int(np.clip((box[1] + box[3] - side) // 2, max(0, box[3] - side), min(box[1], shape[1] - side)))
    return Window(x, y, side)


def _merge_overlapping(groups: list[list[int]], side: int, shape: tuple[int, int], where: str) -> list[Window]:
    while True:
        wins = [_window_over(g, side, shape) for g in groups]
        clash = next(((i, j) for i in range(len(wins)) for j in range(i) if _overlap(wins[i], wins[j])), None)
        if clash is None:
            return wins
        i, j = clash
        both = _union(groups[i], groups[j])
        if not _fits(both, side):
            raise DataError(f"{where}: two defect regions (near x={groups[j][1]}, y={groups[j][0]} and x={groups[i][1]}, "
                            f"y={groups[i][0]}) are too close for separate {side}x{side} px windows and too far apart "
                            "for one; move them apart or together")
        groups[j] = both
        del groups[i]


def _overlap(a: Window, b: Window) -> bool:
    return a.x < b.x + b.side and b.x < a.x + a.side and a.y < b.y + b.side and b.y < a.y + a.side


# ---------------------------------------------------------------- back into the image


def composite(background: np.ndarray, generated: np.ndarray, paint: np.ndarray, blend: int,
              resampled: bool) -> np.ndarray:
    """A window of the output image: ``generated`` (already at the window's image size) over ``background``.

    ``paint`` (bool) is the new defect at image scale; its blend band of ``blend`` px is where the two
    mix. At the run's own scale the generated window already holds that mix (the pipeline kept the
    background there), so it is taken as it is; a ``resampled`` window is mixed here by the band's
    weight. Outside the band the background is kept byte for byte.
    """
    weight = soft_region(torch.from_numpy(paint)[None], blend)[0, 0].numpy()[..., None]
    if not resampled:
        return np.where(weight > 0, generated, background)
    mixed = (weight * generated.astype(np.float32) + (1 - weight) * background.astype(np.float32)).round()
    return np.where(weight > 0, mixed.clip(0, 255).astype(np.uint8), background)
