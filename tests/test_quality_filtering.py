"""Sample filtering by mask agreement: per-image scores with known answers, the kept folder, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defectgen.cli import main
from defectgen.config import ConfigError
from defectgen.data import ClassMap, load_pairs, open_dataset
from defectgen.io import OutputExistsError
from defectgen.quality.filtering import choose_pairs, dominant_class, filter_samples, per_image_agreement
from defectgen.data.samples import write_samples

NAMES = ("background", "spot", "line")


def test_per_image_agreement_known_values():
    mask = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(mask)
    mask[0, :2, :2] = 1; pred[0, :2, :2] = 1          # identical: 1
    mask[1, :2, :2] = 1; pred[1, 2:, 2:] = 1          # disjoint: 0
    mask[2, 0, :4] = 1; pred[2, 0, :2] = 1            # 2 of 4 pixels: 0.5
    mask[3] = 0                                       # neither has a defect: 1
    scores = per_image_agreement(pred, mask, 3)
    assert scores.tolist() == [1.0, 0.0, 0.5, 1.0]


def test_per_image_agreement_averages_classes_and_skips_ignore():
    mask = np.zeros((1, 4, 4), np.uint8)
    pred = np.zeros_like(mask)
    mask[0, 0, :2] = 1; pred[0, 0, :2] = 1            # class 1 right
    mask[0, 3, :2] = 2; pred[0, 3, :2] = 1            # class 2 missed, predicted as 1
    mask[0, 2, :] = 255; pred[0, 2, :] = 2            # ignored pixels predicted as class 2 do not count
    # class 1: inter 2, union 4 -> 0.5; class 2: inter 0, union 2 -> 0; mean 0.25
    assert per_image_agreement(pred, mask, 3)[0] == pytest.approx(0.25)


def bright_spot_samples(folder: Path) -> list[bool]:
    """Six pairs whose image shows a bright square; the mask is right for some and elsewhere for others."""
    good = [True, False, True, False, True, True]
    images = np.full((6, 16, 16, 3), 40, np.uint8)
    masks = np.zeros((6, 16, 16), np.uint8)
    for i, ok in enumerate(good):
        images[i, 2:6, 2:6] = 230
        if ok:
            masks[i, 2:6, 2:6] = 1
        else:
            masks[i, 10:14, 10:14] = 1
    write_samples(folder, images, masks, ClassMap(NAMES), ["a", "b"], [{"seed": i} for i in range(6)],
                        {"generator": "test"})
    return good


def threshold_predictor(images: np.ndarray) -> np.ndarray:
    return (images[..., 0] > 128).astype(np.uint8)


def test_filter_keeps_exactly_the_pairs_whose_mask_matches_the_image(tmp_path):
    good = bright_spot_samples(tmp_path / "syn")
    summary = filter_samples(tmp_path / "syn", tmp_path / "kept", threshold_predictor, 0.5, size=16)
    assert (summary["n_in"], summary["n_kept"]) == (6, sum(good))
    manifest = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    assert [s["seed"] for s in manifest["samples"]] == [i for i, ok in enumerate(good) if ok]
    assert manifest["num_samples"] == sum(good) and manifest["train_stems"] == ["a", "b"]
    assert all(s["agreement"] == 1.0 for s in manifest["samples"])
    assert sorted(manifest["filter"]["scores"].values()) == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    kept = open_dataset(tmp_path / "kept", "index")
    images, masks = load_pairs(kept.records, kept.class_map, 16)
    assert len(kept.records) == sum(good) and (masks[:, 2:6, 2:6] == 1).all() and (images[:, 2:6, 2:6] == 230).all()
    assert (tmp_path / "kept" / "grid.png").is_file()
    with pytest.raises(OutputExistsError):
        filter_samples(tmp_path / "syn", tmp_path / "kept", threshold_predictor, 0.5, size=16)
    with pytest.raises(ConfigError, match="min-agreement"):
        filter_samples(tmp_path / "syn", tmp_path / "other", threshold_predictor, 1.5, size=16)


def copypaste_pairs(demo_data: Path, out: Path, num: int) -> list:
    """``num`` copy-paste pairs of the demo data's 2-shot selection in ``out``; the selected records."""
    from defectgen.data import select_records
    from defectgen.seg.copypaste import run_copypaste

    ds = open_dataset(demo_data)
    recs = select_records(ds, shots=2, seed=0)
    images, masks = load_pairs(recs, ds.class_map, 24)
    run_copypaste(images, masks, [r.stem for r in recs], ds.class_map, out, num)
    return recs


def test_filter_command_trains_the_segmenter_and_writes_a_readable_folder(tmp_path, demo_data, capsys):
    recs = copypaste_pairs(demo_data, tmp_path / "cp", 8)
    args = ["filter", "--real", str(demo_data), "--synthetic", str(tmp_path / "cp"), "--out", str(tmp_path / "kept"),
            "--min-agreement", "0.0", "--seg-set", "steps=2", "--seg-set", "size=32", "--seg-set", "batch_size=4"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    assert manifest["num_samples"] == 8  # threshold 0 keeps everything
    assert manifest["filter"]["segmenter"]["real_stems"] == [r.stem for r in recs]  # the manifest's train_stems
    assert "kept 8/8" in capsys.readouterr().out
    assert main(args) == 2  # an existing output is never overwritten
    assert main([*args[:6], str(tmp_path / "new"), "--min-agreement", "2"]) == 2
    assert "within [0, 1]" in capsys.readouterr().err


def test_per_class_keeps_the_best_of_each_class_above_the_threshold():
    masks = np.zeros((7, 4, 4), np.uint8)
    masks[0:3, 0, :2] = 1                        # class 1: pairs 0, 1, 2
    masks[3:6, 0, :2] = 2                        # class 2: pairs 3, 4, 5 ...
    masks[5, 1:, :] = 1                          # ... except pair 5, mostly class 1 now
    masks[6, :, :] = 255                         # pair 6: only ignore pixels -> no class
    scores = np.array([0.2, 0.9, 0.6, 0.1, 0.4, 0.95, 1.0])
    assert [dominant_class(m, 3) for m in masks] == [1, 1, 1, 2, 2, 1, 0]
    assert choose_pairs(scores, masks, 3, 0.3) == [1, 2, 4, 5, 6]            # threshold only
    assert choose_pairs(scores, masks, 3, 0.0, per_class=1) == [4, 5, 6]     # best of class 1 is pair 5
    assert choose_pairs(scores, masks, 3, 0.5, per_class=2) == [1, 5, 6]     # class 2 has none above 0.5


def test_filter_command_per_class_through_the_cli(tmp_path, demo_data, capsys):
    copypaste_pairs(demo_data, tmp_path / "cp", 12)
    args = ["filter", "--real", str(demo_data), "--synthetic", str(tmp_path / "cp"), "--out", str(tmp_path / "kept"),
            "--min-agreement", "0.0", "--per-class", "2", "--seg-set", "steps=2", "--seg-set", "size=32",
            "--seg-set", "batch_size=4"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    kept_by = manifest["filter"]["kept_by_dominant_class"]
    assert manifest["num_samples"] == sum(kept_by.values()) and max(kept_by.values()) <= 2
    scores = manifest["filter"]["scores"]
    kept = {Path(s["file"]).stem for s in manifest["samples"]}
    cp = open_dataset(tmp_path / "cp", "index")
    _, cp_masks = load_pairs(cp.records, cp.class_map, 24)
    for c in range(1, cp.class_map.num_classes):  # no dropped pair of a class beats a kept one of that class
        members = [r.stem for r, m in zip(cp.records, cp_masks) if dominant_class(m, cp.class_map.num_classes) == c]
        if members:
            lo_kept = min(scores[s] for s in members if s in kept)
            assert all(scores[s] <= lo_kept for s in members if s not in kept)
    assert main([*args[:6], str(tmp_path / "new"), "--per-class", "0"]) == 2
    assert "--per-class" in capsys.readouterr().err
