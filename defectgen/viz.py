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
    if names is None:
        return grid
    legend = legend_strip(names, grid.width)
    out = Image.new("RGB", (grid.width, grid.height + legend.height), "white")
    out.paste(grid, (0, 0))
    out.paste(legend, (0, grid.height))
    return out
