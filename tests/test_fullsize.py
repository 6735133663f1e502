"""Full-size pairs on crop-mode runs: windows placed by the rules, backgrounds kept byte for byte outside
the painted regions, full-size masks, regions, full-size copy-paste, and the evaluation reading them as real."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_CONFIG
from defectgen.cli import main
from defectgen.data import DataError, open_dataset
from defectgen.pairs import dihedral
from defectgen.pipeline import soft_region
from defectgen.pipelines.defectgen.windows import Window, composite, cover_mask, max_windows, place_windows, window_side
from test_geometry import make_nonsquare

H, W = 40, 100  # make_nonsquare's images


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("seed", range(12))
def test_windows_stay_inside_apart_and_keep_defects_on_allowed_pixels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    blocked = np.zeros((H, W), bool)
    blocked[:, 60:] = True  # e.g. outside a region, or the background's own labels
    defect = np.zeros((16, 16), np.uint8)
    defect[3:12, 7] = 1

    def draw(r: np.random.Generator) -> Window:
        return Window(0, 0, 16, dihedral(defect, int(r.integers(8))))

    wins = place_windows((H, W), 16, 3, rng, blocked, draw)
    assert wins is not None and len(wins) == 3
    for a in wins:
        assert 0 <= a.x <= W - 16 and 0 <= a.y <= H - 16
        canvas = np.zeros((H, W), bool)
        canvas[a.box] = a.new > 0
        assert canvas.sum() == 9 and not (canvas & blocked).any()  # every defect pixel kept, none blocked
        for b in wins:
            if a is not b:
                assert a.x + 16 <= b.x or b.x + 16 <= a.x or a.y + 16 <= b.y or b.y + 16 <= a.y


def test_a_full_grid_of_windows_is_placed_when_random_placement_jams() -> None:
    shape = (64, 64)
    assert max_windows(shape, 16) == 16
    for seed in range(5):
        wins = place_windows(shape, 16, 16, np.random.default_rng(seed))
        assert wins is not None and sorted((w.y, w.x) for w in wins) == [(y, x) for y in range(0, 64, 16) for x in range(0, 64, 16)]
    assert place_windows(shape, 16, 17, np.random.default_rng(0)) is None


def test_window_side_follows_the_runs_scale() -> None:
    assert window_side(480, 320, 64, None) == 64  # native
    assert window_side(480, 320, 64, 240) == 128  # the run halved the image: a window spans 128 image px
    assert window_side(40, 30, 64, None) == 30  # the run scaled a small image up to 64 px; never above the short side


def test_cover_mask_windows_hold_every_drawn_pixel_and_refuse_what_cannot_fit() -> None:
    mask = np.zeros((H, W), np.uint8)
    mask[2:6, 2:6] = 1
    mask[8:10, 8:12] = 2  # close to the first: one window holds both
    mask[30:38, 80:95] = 1
    wins = cover_mask(mask, (1, 2), 16, "m.png")
    assert len(wins) == 2
    back = np.zeros_like(mask)
    for w in wins:
        assert 0 <= w.x <= W - 16 and 0 <= w.y <= H - 16
        back[w.box] = np.maximum(back[w.box], w.new)
    assert np.array_equal(back, mask)
    big = np.zeros((H, W), np.uint8)
    big[5:30, 10:40] = 1
    with pytest.raises(DataError, match="m.png: a defect region of 30x25 px is larger than one window"):
        cover_mask(big, (1,), 16, "m.png")


def test_composite_keeps_the_background_outside_the_band() -> None:
    rng = np.random.default_rng(0)
    bg, gen = (rng.integers(0, 256, (16, 16, 3)).astype(np.uint8) for _ in range(2))
    paint = np.zeros((16, 16), bool)
    paint[6:9, 5:11] = True
    band = soft_region(torch.from_numpy(paint)[None], 2)[0, 0].numpy() > 0
    for resampled in (False, True):
        out = composite(bg, gen, paint, 2, resampled)
        assert np.array_equal(out[~band], bg[~band]) and np.array_equal(out[paint], gen[paint])


# ---------------------------------------------------------------- through the command line


def _train(root: Path, *sets: str) -> Path:
    data = root / "data"
    if not data.exists():
        make_nonsquare(data)
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    run = root / ("run" + "".join(s.replace("=", "") for s in sets))
    assert main(["train", "--config", str(cfg), "--data", str(data), "--split", "train", "--out", str(run),
                 "--set", "resize_mode=crop", "--set", "image_channels=3", "--set", "sample.sampler=ddim",
                 "--set", "sample.steps=3", *[a for s in sets for a in ("--set", s)], "--threads", "1", "--quiet"]) == 0
    return run


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny run on 100x40 images at native scale (16-px windows), its data and a folder of good images."""
    root = tmp_path_factory.mktemp("fullsize")
    run = _train(root)
    good = root / "good"
    good.mkdir()
    for stem in ("k08", "k09", "k10"):  # defect-free images of the data (empty masks)
        shutil.copy(root / "data" / "img" / f"{stem}.png", good / f"{stem}.png")
    return run, root / "data", good


def _sample(run: Path, out: Path, *flags: str) -> int:
    return main(["sample", "--run", str(run), "--out", str(out), "--quiet", *flags])


def _read(folder: Path) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    m = json.loads((folder / "manifest.json").read_text())
    imgs = [np.asarray(Image.open(folder / "images" / s["file"]).convert("RGB")) for s in m["samples"]]
    masks = [np.asarray(Image.open(folder / "masks" / s["file"])) for s in m["samples"]]
    return m, imgs, masks


def _band(paint: np.ndarray, blend: int) -> np.ndarray:
    return soft_region(torch.from_numpy(paint)[None], blend)[0, 0].numpy() > 0


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_onto_good_gives_full_size_pairs_with_the_background_kept_byte_for_byte(crop_run, tmp_path: Path) -> None:
    run, data, good = crop_run
    out = tmp_path / "onto"
    assert _sample(run, out, "--onto", str(good), "--num", "4", "--defects-per-image", "2", "--blend", "1") == 0
    m, imgs, masks = _read(out)
    assert m["full_size"] is True and (out / "windows.png").is_file() and (out / "grid.png").is_file()
    train_masks = {s: np.asarray(Image.open(data / "ann" / f"{s}.png")) for s in m["train_stems"]}
    for s, img, mask in zip(m["samples"], imgs, masks):
        bg = _rgb(good / f"{s['source_image']}.png")
        assert img.shape == bg.shape and mask.shape == bg.shape[:2] and s["image_size"] == [W, H]
        assert len(s["windows"]) == 2
        for w in s["windows"]:
            assert w["side"] == 16 and w["scale"] == 1.0 and 0 <= w["x"] <= W - 16 and 0 <= w["y"] <= H - 16
            # the training mask's crop lands whole: every one of its defect pixels is in the output mask
            src = train_masks[w["source_mask"]][w["source_y"]:w["source_y"] + 16, w["source_x"]:w["source_x"] + 16] > 127
            placed = mask[w["y"]:w["y"] + 16, w["x"]:w["x"] + 16] > 0
            assert np.array_equal(dihedral(src, w["symmetry"]), placed) and w["new_pixels"] == src.sum() > 0
        a, b = s["windows"]
        assert a["x"] + 16 <= b["x"] or b["x"] + 16 <= a["x"] or a["y"] + 16 <= b["y"] or b["y"] + 16 <= a["y"]
        band = _band(mask > 0, 1)
        assert np.array_equal(img[~band], bg[~band]) and not np.array_equal(img[mask > 0], bg[mask > 0])


def test_drawn_full_size_masks_are_written_bit_for_bit(crop_run, tmp_path: Path) -> None:
    run, _, good = crop_run
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    for k, p in enumerate(sorted(good.iterdir())):
        m = np.zeros((H, W), np.uint8)
        m[3 + k:9 + k, 4:12] = 1  # two regions: two windows
        m[20:30, 70 + k:74 + k] = 1
        Image.fromarray(m).save(drawn / p.name)
    out = tmp_path / "out"
    assert _sample(run, out, "--onto", str(good), "--masks", str(drawn), "--num", "3", "--blend", "1") == 0
    m, imgs, masks = _read(out)
    for s, img, mask in zip(m["samples"], imgs, masks):
        given, bg = np.asarray(Image.open(drawn / f"{s['source_image']}.png")), _rgb(good / f"{s['source_image']}.png")
        assert s["source_image"] == s["windows"][0]["source_mask"] and len(s["windows"]) == 2
        assert np.array_equal(mask, given)
        band = _band(given > 0, 1)
        assert np.array_equal(img[~band], bg[~band])


def test_into_training_keeps_the_images_own_labels_and_pixels(crop_run, tmp_path: Path) -> None:
    run, data, _ = crop_run
    for source in ("train", "model"):
        out = tmp_path / source
        assert _sample(run, out, "--into-training", "--mask-source", source, "--num", "3", "--blend", "0") == 0
        m, imgs, masks = _read(out)
        for s, img, mask in zip(m["samples"], imgs, masks):
            bg, own = _rgb(data / "img" / f"{s['source_image']}.png"), np.asarray(Image.open(data / "ann" / f"{s['source_image']}.png"))
            assert np.array_equal(mask[own > 0], np.ones((own > 0).sum(), np.uint8))  # its crack is kept
            new = (mask > 0) & (own == 0)
            assert new.sum() == sum(w["new_pixels"] for w in s["windows"])
            inside = np.zeros_like(new)
            for w in s["windows"]:
                inside[w["y"]:w["y"] + w["side"], w["x"]:w["x"] + w["side"]] = True
            assert not (new & ~inside).any()  # nothing painted outside its window
            assert np.array_equal(img[~new], bg[~new])  # blend 0: every other pixel is the training image's


def test_region_restricts_where_new_defects_go(crop_run, tmp_path: Path) -> None:
    run, _, good = crop_run
    region = tmp_path / "region"
    region.mkdir()
    left = np.zeros((H, W), np.uint8)
    left[:, :50] = 255
    for p in good.iterdir():
        Image.fromarray(left).save(region / p.name)
    for source in ("train", "model"):
        out = tmp_path / source
        assert _sample(run, out, "--onto", str(good), "--mask-source", source, "--region", str(region), "--num", "4") == 0
        m, _, masks = _read(out)
        assert all((mk[:, 50:] == 0).all() for mk in masks)
        assert sum(w["new_pixels"] for s in m["samples"] for w in s["windows"]) > 0


def test_full_size_pairs_do_not_depend_on_the_batch_size(crop_run, tmp_path: Path) -> None:
    run, _, good = crop_run
    flags = ["--onto", str(good), "--num", "3", "--defects-per-image", "2", "--mask-source", "model"]
    assert _sample(run, tmp_path / "b3", *flags, "--batch-size", "3") == 0
    assert _sample(run, tmp_path / "b1", *flags, "--batch-size", "1") == 0
    (_, i3, k3), (_, i1, k1) = _read(tmp_path / "b3"), _read(tmp_path / "b1")
    assert all(np.array_equal(a, b) for a, b in zip(i3 + k3, i1 + k1))


def test_an_interrupted_full_size_job_resumes_to_the_uninterrupted_result(crop_run, tmp_path: Path, monkeypatch) -> None:
    from defectgen.data import samples

    run, _, good = crop_run
    flags = ["--onto", str(good), "--num", "5", "--batch-size", "1", "--defects-per-image", "2"]
    assert _sample(run, tmp_path / "whole", *flags) == 0
    save, calls = samples.save_pair, []

    def dies_on_the_fourth(*a, **kw):  # the process is stopped while writing pair 3
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return save(*a, **kw)

    monkeypatch.setattr(samples, "save_pair", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        _sample(run, tmp_path / "cut", *flags)
    monkeypatch.setattr(samples, "save_pair", save)
    assert not (tmp_path / "cut" / "manifest.json").exists()
    assert _sample(run, tmp_path / "cut", *flags) == 0
    (m1, i1, k1), (m2, i2, k2) = _read(tmp_path / "whole"), _read(tmp_path / "cut")
    assert m2["resumed_pairs"] == 3 and all(np.array_equal(a, b) for a, b in zip(i1 + k1, i2 + k2))
    assert [s["windows"] for s in m1["samples"]] == [s["windows"] for s in m2["samples"]]


def test_a_run_at_a_smaller_scale_paints_resampled_windows(tmp_path: Path) -> None:
    run = _train(tmp_path, "long_side=50")  # 100x40 -> 50x20 at training: a 16-px window spans 32 image px
    good = tmp_path / "data" / "img" / "k09.png"
    (tmp_path / "good").mkdir()
    shutil.copy(good, tmp_path / "good" / "k09.png")
    out = tmp_path / "out"
    assert _sample(run, out, "--onto", str(tmp_path / "good"), "--num", "2") == 0
    m, imgs, masks = _read(out)
    bg = _rgb(good)
    for s, img, mask in zip(m["samples"], imgs, masks):
        (w,) = s["windows"]
        assert w["side"] == 32 and w["scale"] == 0.5 and img.shape == bg.shape
        outside = np.ones((H, W), bool)
        outside[w["y"]:w["y"] + 32, w["x"]:w["x"] + 32] = False
        assert np.array_equal(img[outside], bg[outside]) and (mask[outside] == 0).all() and mask.any()


def test_modes_a_crop_run_cannot_do_in_full_are_one_line(crop_run, tmp_path: Path, capsys) -> None:
    run, data, good = crop_run
    assert _sample(run, tmp_path / "u", "--num", "2") == 0
    assert "are 16x16 windows at its scale; --onto GOOD_DIR or --into-training" in capsys.readouterr().out
    wrong, drawn = tmp_path / "wrong_region", tmp_path / "drawn"
    wrong.mkdir()
    drawn.mkdir()
    for p in good.iterdir():
        Image.fromarray(np.full((10, 10), 255, np.uint8)).save(wrong / p.name)
        m = np.zeros((H, W), np.uint8)
        m[5:9, 5:40] = 1
        Image.fromarray(m).save(drawn / p.name)
    cases = [
        (["--masks", str(drawn), "--num", "1"], "a 100x40 mask; mask -> image on a run trained on crops makes 16x16"),
        (["--onto", str(good), "--masks", str(drawn), "--num", "1"], "a defect region of 35x4 px is larger than one window"),
        (["--onto", str(good), "--num", "1", "--region", str(wrong)], "region mask size 10x10 differs from image"),
        (["--onto", str(good), "--num", "1", "--defects-per-image", "11"], "at most 12 windows"),  # fits: 12 max
        (["--onto", str(good), "--num", "1", "--defects-per-image", "13"], "at most 12 windows of 16x16 px fit"),
        (["--onto", str(good), "--num", "1", "--defects-per-image", "0"], "--defects-per-image must be at least 1"),
        (["--onto", str(good), "--masks", str(drawn), "--num", "1", "--region", str(wrong)], "a mask folder"),
        (["--num", "1", "--region", str(wrong)], "--region needs a guided mode"),
        (["--into-training", "--num", "1", "--region", str(tmp_path / "nowhere")], "nowhere: folder not found"),
    ]
    for k, (flags, expected) in enumerate(cases):
        capsys.readouterr()
        rc = _sample(run, tmp_path / f"out{k}", *flags)
        err = capsys.readouterr().err
        if expected == "at most 12 windows":  # 11 windows on 100x40 are placed on the grid: accepted
            assert rc == 0, err
            continue
        assert rc == 2 and expected in err and "Traceback" not in err, (flags, err)
        assert not (tmp_path / f"out{k}").exists() or not any((tmp_path / f"out{k}").iterdir()), flags


def test_full_size_options_are_refused_on_a_squashing_run(tmp_path: Path, capsys) -> None:
    from defectgen.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", per_class=1, size=24, good=1)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    assert main(["train", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    assert _sample(tmp_path / "run", tmp_path / "out", "--onto", str(data / "good"), "--num", "1",
                   "--defects-per-image", "2") == 2
    assert "needs a run trained with resize_mode: crop" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- baselines and evaluation at full size


def test_full_size_copy_paste_pastes_real_pixels_where_the_rules_allow(crop_run, tmp_path: Path) -> None:
    _, data, _ = crop_run
    out = tmp_path / "cp"
    assert main(["copypaste", "--data", str(data), "--split", "train", "--num", "6", "--size", "16", "--full-size",
                 "--defects-per-image", "2", "--out", str(out)]) == 0
    m, imgs, masks = _read(out)
    assert m["full_size"] is True and (out / "windows.png").is_file()
    for s, img, mask in zip(m["samples"], imgs, masks):
        bg, own = _rgb(data / "img" / f"{s['source_image']}.png"), np.asarray(Image.open(data / "ann" / f"{s['source_image']}.png")) > 0
        pasted = np.zeros((H, W), bool)
        for w in s["windows"]:
            src_img = _rgb(data / "img" / f"{w['source_stem']}.png")
            src_mask = np.asarray(Image.open(data / "ann" / f"{w['source_stem']}.png")) > 0
            box = np.s_[w["source_y"]:w["source_y"] + 16, w["source_x"]:w["source_x"] + 16]
            cut, pix = dihedral(src_mask[box], w["symmetry"]), dihedral(src_img[box], w["symmetry"])
            here = np.s_[w["y"]:w["y"] + 16, w["x"]:w["x"] + 16]
            assert np.array_equal(img[here][cut], pix[cut]) and (mask[here][cut] == 1).all()
            assert not (own[here] & cut).any()  # pasted on the target's background only
            pasted[here] |= cut
        assert np.array_equal(mask > 0, own | pasted) and np.array_equal(img[~pasted], bg[~pasted])


def test_a_full_size_synthetic_pair_is_read_exactly_as_a_real_one(crop_run, tmp_path: Path) -> None:
    """The same files as a real pair and as a full-size synthetic pair give the same training arrays."""
    from defectgen.data.samples import open_synthetic, write_samples
    from defectgen.seg.evaluate import load_for, load_real, mixed_training_set
    from defectgen.seg.train import SegConfig

    _, data, _ = crop_run
    ds = open_dataset(data)
    train = [ds.by_stem(s) for s in ("k00", "k01", "k02")]
    cfg = SegConfig(size=16, resize_mode="crop", long_side=50)  # scaled, so a wrong path would show
    real_x, real_y = load_for(train, ds.class_map, cfg)
    pairs = [(_rgb(r.image), (np.asarray(Image.open(r.mask)) > 127).astype(np.uint8)) for r in train]
    for full in (True, False):
        out = tmp_path / f"syn_{full}"
        write_samples(out, [p[0] for p in pairs], [p[1] for p in pairs], ds.class_map, ["k00", "k01", "k02"],
                      [{} for _ in pairs], {"full_size": full})
        syn = open_synthetic(out)
        real = load_real(ds, train, [ds.by_stem("k06")], cfg)
        x, y, files = mixed_training_set(real, syn, 1.0, 0, True, cfg)
        syn_x = sorted((a.tobytes() for a in x[3:]))
        if full:
            assert len(files) == 3 and syn_x == sorted(a.tobytes() for a in real_x)
            assert sorted(a.tobytes() for a in y[3:]) == sorted(a.tobytes() for a in real_y)
        else:  # windows are taken at the generator's scale: not scaled again
            assert {a.shape for a in x[3:]} == {(H, W, 3)}
