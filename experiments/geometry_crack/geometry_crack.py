"""What a 1-px crack keeps on its way to the model: squashing vs the crop path.

A 500x1260 mask with a 1-px, 8-connected random-walk crack (seeds 0..9) is brought to the model
resolution (a) the old way, squashed to size x size with nearest-neighbour, and (b) the crop path,
aspect kept, long side L, mask by class coverage (``defectgen.data.geometry.scale_mask``), and
for reference (c) aspect kept with nearest-neighbour. Reported: 8-connected fragments, the share
of the crack's columns still marked, the defect pixels, and how much of the crack's image contrast
(bicubic) is left under the scaled mask.

    PYTHONPATH=$PWD python experiments/geometry_crack/geometry_crack.py   # -> experiments/geometry_crack/results/geometry_crack.{json,md}
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from defectgen.data.geometry import scale_mask, scaled_size

H, W = 500, 1260


def crack(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((H, W), np.uint8)
    y = H // 2
    for x in range(60, W - 60):
        y = int(np.clip(y + rng.integers(-1, 2), 5, H - 6))
        m[y, x] = 1
    return m


def measure(small: np.ndarray, orig: np.ndarray, out_w: int, size: tuple[int, int]) -> dict[str, float]:
    cols = np.flatnonzero(orig.any(0))
    want = np.unique((cols * out_w / W).astype(int))  # output columns the crack spans
    kept = np.isin(want, np.flatnonzero(small.any(0))).mean()
    frags = ndimage.label(small > 0, structure=np.ones((3, 3)))[1]
    # the image side: a crack 140 grey levels above a flat background, resampled bicubically
    img = np.where(orig > 0, 240, 100).astype(np.uint8)
    scaled = np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC), dtype=np.float64)
    contrast = float(np.mean(scaled[small > 0] - 100) / 140) if (small > 0).any() else 0.0
    return {"fragments": int(frags), "columns_kept": float(kept), "pixels": int((small > 0).sum()),
            "contrast_kept": contrast}


def main() -> None:
    rows = []
    for name, kind, arg in (("squash 64x64, nearest (old default)", "squash", 64),
                            ("squash 256x256, nearest", "squash", 256),
                            ("aspect kept, long side 512, coverage (crop path)", "cover", 512),
                            ("aspect kept, long side 512, nearest", "near", 512),
                            ("aspect kept, long side 256, coverage (crop path)", "cover", 256),
                            ("aspect kept, long side 256, nearest", "near", 256)):
        per = []
        for seed in range(10):
            m = crack(seed)
            if kind == "squash":
                size = (arg, arg)
            else:
                size = scaled_size(W, H, arg, 64)
            small = (scale_mask(m, size, 2) if kind == "cover"
                     else np.asarray(Image.fromarray(m).resize(size, Image.NEAREST)))
            per.append(measure(small, m, size[0], size))
        rows.append({"method": name, "out_size": f"{size[0]}x{size[1]}",
                     **{k: float(np.mean([p[k] for p in per])) for k in per[0]},
                     "fragments_max": int(max(p["fragments"] for p in per))})
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "geometry_crack.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| method | output | fragments (mean / max of 10) | crack columns kept | defect px | image contrast under the mask |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['out_size']} | {r['fragments']:.1f} / {r['fragments_max']} | {100 * r['columns_kept']:.0f} % "
              f"| {r['pixels']:.0f} | {100 * r['contrast_kept']:.0f} % |" for r in rows]
    (out / "geometry_crack.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
