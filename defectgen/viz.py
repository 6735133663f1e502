"""Pictures for people: coloured mask overlays and image|overlay grids."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# background transparent; then distinct colours for defect classes
PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]],
    dtype=np.uint8,
)


def colour_mask(mask: np.ndarray) -> np.ndarray:
    """(H,W) class ids -> (H,W,3) colours (ids beyond the palette wrap around)."""
    ids = mask.astype(np.int64)
    out = PALETTE[np.where(ids == 0, 0, (ids - 1) % (len(PALETTE) - 1) + 1)]
    out[mask == 255] = (128, 128, 128)
    return out


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with defect pixels tinted by class colour."""
    col = colour_mask(mask).astype(np.float32)
    img = image.astype(np.float32)
    defect = (mask > 0)[..., None]
    return np.where(defect, (1 - alpha) * img + alpha * col, img).round().astype(np.uint8)


def class_colours(names: Sequence[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, RGB colour) of every defect class as the overlays draw it (background has none)."""
    ids = np.arange(1, len(names), dtype=np.int64)
    cols = colour_mask(ids[None, :])[0] if len(ids) else np.zeros((0, 3), np.uint8)
    return [(names[i], tuple(int(v) for v in cols[i - 1])) for i in range(1, len(names))]


def legend_strip(names: Sequence[str], width: int) -> Image.Image:
    """A white band naming each defect class beside a swatch of its overlay colour."""
    entries = class_colours(names)
    img = Image.new("RGB", (width, 16), "white")
    draw = ImageDraw.Draw(img)
    x, y = 4, 2
    for name, col in entries:
        w = 16 + int(draw.textlength(name)) + 10
        if x + w > width and x > 4:
            img = _grow(img, 16)
            draw = ImageDraw.Draw(img)
            x, y = 4, y + 16
        draw.rectangle((x, y + 1, x + 11, y + 12), fill=col, outline=(0, 0, 0))
        draw.text((x + 15, y + 1), name, fill=(0, 0, 0))
        x += w
    return img


def with_legend(grid: Image.Image, names: Sequence[str] | None) -> Image.Image:
    """``grid`` with the class colour legend below it (unchanged without ``names``)."""
    if names is None:
        return grid
    legend = legend_strip(names, grid.width)
    out = Image.new("RGB", (grid.width, grid.height + legend.height), "white")
    out.paste(grid, (0, 0))
    out.paste(legend, (0, grid.height))
    return out


def _grow(img: Image.Image, extra: int) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + extra), "white")
    out.paste(img, (0, 0))
    return out


def pair_grid(images: np.ndarray, masks: np.ndarray, ncols: int = 4, scale: int = 1,
              backgrounds: np.ndarray | None = None, names: Sequence[str] | None = None) -> Image.Image:
    """Pairs as tiles of [image | overlay] (or [background | image | overlay]), ``ncols`` pairs per row;
    with ``names``, a colour legend (class colour -> name) below."""
    n, h, w = masks.shape
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    pad = 2
    panels = 2 if backgrounds is None else 3
    tile = panels * w + 2 * pad
    canvas = np.full((nrows * (h + pad) + pad, ncols * tile + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * tile
        row = [images[i], overlay(images[i], masks[i])]
        if backgrounds is not None:
            row.insert(0, backgrounds[i])
        for k, panel in enumerate(row):
            canvas[y : y + h, x + k * w : x + (k + 1) * w] = panel
    grid = Image.fromarray(canvas)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return with_legend(grid, names)


def outline(image: np.ndarray, boxes: Sequence[tuple[int, int, int]], colour: tuple[int, int, int] = (255, 255, 0)) -> np.ndarray:
    """A copy of ``image`` with the square boxes (x, y, side) drawn as 1-px outlines."""
    im = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(im)
    for x, y, side in boxes:
        draw.rectangle((x, y, x + side - 1, y + side - 1), outline=colour)
    return np.asarray(im)


def panel_grid(rows: Sequence[Sequence[np.ndarray]], long_side: int = 256, ncols: int = 2,
               names: Sequence[str] | None = None) -> Image.Image:
    """Rows of RGB panels (e.g. background | generated | overlay), the panels of a row of one size, rows
    of any sizes: every panel is scaled by one factor so the largest has a long side of ``long_side``
    (area-averaged when shrinking, so 1-px defects stay visible; nearest when growing); ``ncols`` rows
    side by side; with ``names``, the class colour legend below."""
    scale = long_side / max(max(p.shape[:2]) for r in rows for p in r)
    sized = [[_scaled(p, scale) for p in r] for r in rows]
    pad = 2
    cell_h = max(p.shape[0] for r in sized for p in r)
    cell_w = max(sum(p.shape[1] + pad for p in r) for r in sized)
    ncols = max(1, min(ncols, len(sized)))
    nrows = (len(sized) + ncols - 1) // ncols
    canvas = np.full((nrows * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(sized):
        y, x = pad + (i // ncols) * (cell_h + pad), pad + (i % ncols) * (cell_w + pad)
        for p in r:
            canvas[y:y + p.shape[0], x:x + p.shape[1]] = p
            x += p.shape[1] + pad
    grid = Image.fromarray(canvas)
    return with_legend(grid, names)


def _scaled(panel: np.ndarray, scale: float) -> np.ndarray:
    size = (max(1, round(panel.shape[1] * scale)), max(1, round(panel.shape[0] * scale)))
    if size == (panel.shape[1], panel.shape[0]):
        return panel
    return np.asarray(Image.fromarray(panel).resize(size, Image.BOX if scale < 1 else Image.NEAREST))
