"""Geometry: aspect kept, masks scaled by coverage, defect-aware crops, whole-image prediction, and a
non-square data set end to end (train -> sample -> evaluate) on the crop path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectgen.cli import main
from defectgen.data.geometry import CropSet, scale_mask, scaled_size


def _crack_mask(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A 1-px, 8-connected random-walk crack along the long (horizontal) side."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    y = h // 2
    for x in range(w // 10, w - w // 10):
        y = int(np.clip(y + rng.integers(-1, 2), 2, h - 3))
        m[y, x] = 1
    return m


def test_scaled_size_keeps_aspect() -> None:
    assert scaled_size(1260, 500, 512, 64) == (512, 203)
    assert scaled_size(500, 1260, None, 64) == (500, 1260)
    assert scaled_size(100, 20, 50, 16) == (80, 16)  # short side never below the crop size


def test_coverage_downscale_keeps_a_thin_crack_connected() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")  # installed with torch-fidelity
    crack = _crack_mask(500, 1260)
    small = scale_mask(crack, (512, 203), 2)
    nearest = np.asarray(Image.fromarray(crack).resize((512, 203), Image.NEAREST))
    assert ndimage.label(small > 0, structure=np.ones((3, 3)))[1] == 1
    assert ndimage.label(nearest > 0, structure=np.ones((3, 3)))[1] > 5  # what squashing/nearest did
    cols = np.flatnonzero((small > 0).any(0))
    assert cols[-1] - cols[0] + 1 == len(cols)  # every column of the crack's span is kept


def test_defect_aware_crops_are_seeded_and_hit_defects() -> None:
    mask = np.zeros((40, 100), np.uint8)
    mask[30:33, 90:95] = 1
    item = torch.from_numpy(mask)[None].float()
    crops = CropSet([item], [mask], size=16, defect_prob=1.0, num_classes=2)
    idx = torch.zeros(50, dtype=torch.long)
    a = crops.crops(idx, torch.Generator().manual_seed(0))
    b = crops.crops(idx, torch.Generator().manual_seed(0))
    assert a.shape == (50, 1, 16, 16) and torch.equal(a, b)
    assert bool((a.flatten(1).amax(1) > 0).all())  # every crop holds defect pixels
    uniform = CropSet([item], [mask], size=16, defect_prob=0.0, num_classes=2).crops(idx, torch.Generator().manual_seed(0))
    assert (uniform.flatten(1).amax(1) > 0).float().mean() < 0.5


def make_nonsquare(root: Path, n_defect: int = 8, n_good: int = 4, h: int = 40, w: int = 100) -> Path:
    """img/ + ann/ with thin bright cracks on 40x100 images, 0/255 masks, train/test splits."""
    rng = np.random.default_rng(1)
    stems = []
    for i in range(n_defect + n_good):
        img = rng.integers(80, 120, (h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        if i < n_defect:
            crack = _crack_mask(h, w, seed=i).astype(bool)
            img[crack], mask[crack] = 240, 255
        stem = f"k{i:02d}"
        stems.append(stem)
        for folder, arr in (("img", img), ("ann", mask)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / folder / f"{stem}.png")
    split = root / "ImageSets" / "Segmentation"
    split.mkdir(parents=True)
    test = {"k06", "k07", "k11"}
    (split / "train.txt").write_text("\n".join(s for s in stems if s not in test) + "\n")
    (split / "test.txt").write_text("\n".join(sorted(test)) + "\n")
    return root


@pytest.mark.slow
def test_nonsquare_end_to_end_on_the_crop_path(tmp_path: Path, tiny_config: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_nonsquare(tmp_path / "data")
    run, syn, ev = tmp_path / "run", tmp_path / "syn", tmp_path / "ev"
    assert main(["train", "--config", str(tiny_config), "--data", str(data), "--split", "train", "--out", str(run),
                 "--set", "resize_mode=crop", "--set", "long_side=64", "--set", "sample.sampler=ddim", "--set", "sample.steps=3",
                 "--threads", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "image size 100x40 (all 12), aspect 2.50" in err and "defect-free" in err
    assert main(["sample", "--run", str(run), "--num", "4", "--out", str(syn), "--layout", "mmseg", "--quiet"]) == 0
    m = json.loads((syn / "manifest.json").read_text())
    assert m["layout"] == "mmseg" and (syn / "img_dir" / "train" / "000000.png").is_file()
    assert m["sampler"] == "ddim" and m["steps"] == 3  # the run's own sample: config, not DDPM over every step
    assert main(["evaluate", "--data", str(data), "--split", "train", "--synthetic", str(syn), "--ratio", "0.5",
                 "--model", "unet-tiny", "--seeds", "0", "--negatives", "2", "--out", str(ev),
                 "--set", "seg.size=16", "--set", "seg.steps=3", "--set", "seg.batch_size=2", "--set", "seg.threads=1",
                 "--set", "seg.resize_mode=crop", "--set", "seg.long_side=64"]) == 0
    res = json.loads((ev / "results.json").read_text())
    assert res["config"]["seg"]["resize_mode"] == "crop" and res["config"]["negatives"] == 2
    assert res["per_seed"][0]["num_synthetic"] == 3 and res["per_seed"][0]["num_negatives"] == 2
    assert res["selection"]["test_stems"] == ["k06", "k07", "k11"]


def test_whole_image_prediction_covers_every_pixel() -> None:
    from defectgen.seg.models import build_model
    from defectgen.seg.train import predict_whole

    torch.manual_seed(0)
    model = build_model("unet-tiny", 3)
    images = [np.zeros((24, 56, 3), np.uint8), np.full((16, 16, 3), 200, np.uint8)]
    preds = predict_whole(model, images, 16)
    assert [p.shape for p in preds] == [(24, 56), (16, 16)]
