"""Guided sampling: known pixels and known mask channels inside the one sampling loop, and the CLI modes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from defectgen.cli import main
from defectgen.data import ClassMap
from defectgen.guided import Condition, known_batch, parse_classes, place_mask
from defectgen.models import UNetConfig, build_unet
from defectgen.pipeline import DefectGenPipeline, soft_region
from defectgen.schedule import sample_seed

CLASSES = ClassMap(("background", "scratch", "spot", "patch"))
C = 1 + CLASSES.num_classes


def _pipeline(switch: float = 0.4) -> DefectGenPipeline:
    torch.manual_seed(0)
    big = build_unet(UNetConfig(8, (1, 2), 1, (1,), 8, norm_num_groups=8), C, 8)
    little = build_unet(UNetConfig(8, (1,), 1, (), 8, False, norm_num_groups=8), C, 8)
    sched = DDPMScheduler(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                          timestep_spacing="trailing")
    return DefectGenPipeline(big, little, sched, switch=switch, image_channels=1)


def _good(n: int, seed: int = 0) -> np.ndarray:
    grey = np.random.default_rng(seed).integers(0, 256, (n, 8, 8)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=3)


def _mask(cid: int = 1) -> np.ndarray:
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 3:6] = cid
    return m


def _gens(n: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(sample_seed(0, offset + i)) for i in range(n)]


def _run(pipe, conds, offset=0, **kw):
    known = known_batch(conds, CLASSES, 1, blend=kw.pop("blend", 1))
    return pipe(_gens(len(conds), offset), progress=False, known=known, **kw)


def test_soft_region_is_one_inside_and_falls_off_over_the_band() -> None:
    region = torch.zeros(1, 9, 9, dtype=torch.bool)
    region[0, 4, 4] = True
    soft = soft_region(region, 2)[0, 0]
    assert soft[4, 4] == 1 and soft[4, 5] == pytest.approx(2 / 3) and soft[4, 6] == pytest.approx(1 / 3)
    assert soft[4, 7] == 0 and soft[0, 0] == 0


@pytest.mark.parametrize("sampler,resample", [("ddpm", 1), ("ddim", 1), ("ddpm", 2)])
def test_onto_keeps_the_good_image_outside_the_band_and_the_mask_exactly(sampler: str, resample: int) -> None:
    good = _good(2)
    conds = [Condition(good[i], _mask(i + 1), np.zeros((8, 8), np.uint8), (i + 1,)) for i in range(2)]
    out = _run(_pipeline(), conds, sampler=sampler, num_inference_steps=6, resample=resample)
    for i, cd in enumerate(conds):
        band = soft_region(torch.from_numpy(cd.mask > 0)[None], 1)[0, 0].numpy() > 0
        assert np.array_equal(out.images[i][~band], good[i][~band])
        assert np.array_equal(out.masks[i], cd.mask)
        assert not np.array_equal(out.images[i][cd.mask > 0], good[i][cd.mask > 0])  # the defect was painted


def test_mask_to_image_returns_the_given_masks_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    masks = rng.integers(0, 4, (3, 8, 8)).astype(np.uint8)
    conds = [Condition(None, m, np.zeros_like(m), (1, 2, 3)) for m in masks]
    out = _run(_pipeline(), conds)
    assert np.array_equal(out.masks, masks)


def test_model_mask_mode_keeps_the_background_and_the_allowed_classes() -> None:
    good = _good(3)
    base = np.zeros((8, 8), np.uint8)
    base[0, 0] = 3  # a kept label (into-training): it must survive
    conds = [Condition(good[i], None, base, (2,)) for i in range(3)]
    out = _run(_pipeline(), conds, blend=0)
    assert out.masks[:, 0, 0].tolist() == [3, 3, 3]
    rest = out.masks.copy()
    rest[:, 0, 0] = 0
    assert set(np.unique(rest)) <= {0, 2}  # only the allowed class is painted
    outside = rest == 0
    outside[:, 0, 0] = False
    assert np.array_equal(out.images[outside], good[outside])


@pytest.mark.parametrize("model_mask", [False, True])
def test_guided_pairs_do_not_depend_on_the_batch_size(model_mask: bool) -> None:
    good = _good(4, seed=3)
    conds = [Condition(good[i], None if model_mask else _mask(1 + i % 3), np.zeros((8, 8), np.uint8), (1, 2, 3))
             for i in range(4)]
    pipe = _pipeline()
    whole = _run(pipe, conds, resample=2)
    single = [_run(pipe, [cd], offset=i, resample=2) for i, cd in enumerate(conds)]
    assert np.array_equal(whole.images, np.concatenate([s.images for s in single]))
    assert np.array_equal(whole.masks, np.concatenate([s.masks for s in single]))


def test_place_mask_keeps_every_defect_pixel_and_only_the_allowed_classes() -> None:
    m = np.zeros((16, 16), np.uint8)
    m[0:3, 10:16] = 1
    m[12, 0] = 2
    for seed in range(20):
        placed = place_mask(m, (1,), np.random.default_rng(seed))
        assert (placed == 1).sum() == 18 and (placed == 2).sum() == 0


def test_class_counts_set_the_plan() -> None:
    plan, num = parse_classes("spot=2,patch=1", CLASSES, None)
    assert num == 3 and plan == [(2,), (2,), (3,)]
    assert parse_classes("scratch,spot", CLASSES, 4) == ([(1, 2)] * 4, 4)


# ---------------------------------------------------------------- through the command line, on a tiny trained run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from defectgen.demo import make_demo_dataset
    from conftest import TINY_CONFIG

    root = tmp_path_factory.mktemp("guided")
    data = make_demo_dataset(root / "data", per_class=2, size=24, seed=0, good=3)
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    run = root / "run"
    assert main(["train", "--config", str(cfg), "--data", str(data), "--out", str(run), "--quiet"]) == 0
    return run, data


def _read(folder: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    m = json.loads((folder / "manifest.json").read_text())
    imgs = np.stack([np.asarray(Image.open(folder / "images" / s["file"])) for s in m["samples"]])
    masks = np.stack([np.asarray(Image.open(folder / "masks" / s["file"])) for s in m["samples"]])
    return m, imgs, masks


def _sample(run: Path, out: Path, *flags: str) -> int:
    return main(["sample", "--run", str(run), "--out", str(out), "--sampler", "ddim", "--steps", "4", "--quiet", *flags])


@pytest.mark.parametrize("flags", [
    ["--onto", "{good}", "--num", "4"],                                   # masks from training pairs
    ["--onto", "{good}", "--mask-source", "model", "--num", "4"],
    ["--into-training", "--num", "4", "--resample", "2"],
    ["--masks", "{data}/masks", "--num", "4"],                              # mask -> image
])
def test_every_mode_is_independent_of_the_batch_size(tiny_run, tmp_path: Path, flags: list[str]) -> None:
    run, data = tiny_run
    flags = [f.format(good=data / "good", data=data) for f in flags]
    assert _sample(run, tmp_path / "b4", *flags, "--batch-size", "4") == 0
    assert _sample(run, tmp_path / "b1", *flags, "--batch-size", "1") == 0
    m4, i4, k4 = _read(tmp_path / "b4")
    _, i1, k1 = _read(tmp_path / "b1")
    assert np.array_equal(i4, i1) and np.array_equal(k4, k1)
    assert m4["mode"] in ("onto", "into-training", "masks") and all("mode" in s for s in m4["samples"])
    assert (tmp_path / "b4" / "grid.png").is_file()


def test_onto_with_a_mask_folder_pairs_by_stem_and_keeps_the_good_image(tiny_run, tmp_path: Path) -> None:
    run, data = tiny_run
    masks = tmp_path / "masks"
    masks.mkdir()
    for k, good in enumerate(sorted((data / "good").iterdir())):
        m = np.zeros((24, 24), np.uint8)
        m[4 + k:12 + k, 6:14] = 1 + k
        Image.fromarray(m).save(masks / good.name)
    assert _sample(run, tmp_path / "out", "--onto", str(data / "good"), "--masks", str(masks), "--num", "3",
                   "--blend", "1") == 0
    m, imgs, out_masks = _read(tmp_path / "out")
    for s, img, mask in zip(m["samples"], imgs, out_masks):
        # both resized to the model size (16 px) the way training data is
        given = np.asarray(Image.open(masks / f"{s['source_image']}.png").resize((16, 16), Image.NEAREST))
        good = np.asarray(Image.open(data / "good" / f"{s['source_image']}.png").convert("RGB").resize((16, 16), Image.BICUBIC))
        assert s["source_mask"] == s["source_image"] and np.array_equal(mask, given)
        band = soft_region(torch.from_numpy(given > 0)[None], 1)[0, 0].numpy() > 0
        assert np.array_equal(img[~band], good[~band]) and not np.array_equal(img[band], good[band])


def test_class_counts_top_up_one_class(tiny_run, tmp_path: Path) -> None:
    run, data = tiny_run
    assert _sample(run, tmp_path / "out", "--into-training", "--classes", "spot=3") == 0
    m, _, masks = _read(tmp_path / "out")
    assert len(m["samples"]) == 3 and all(s["classes"] == ["spot"] for s in m["samples"])
    assert all(s["class_pixels"]["spot"] > 0 for s in m["samples"])


def _bad(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    Image.fromarray(array).save(folder / "good_0000.png")
    return folder


def test_bad_guided_input_is_one_clear_error(tiny_run, tmp_path: Path, capsys) -> None:
    run, data = tiny_run
    colour = np.zeros((24, 24, 3), np.uint8)
    colour[..., 0] = 200
    unknown = np.zeros((24, 24), np.uint8)
    unknown[3, 3] = 9
    small = np.zeros((10, 10), np.uint8)
    small[2, 2] = 1
    cases = [
        (["--onto", str(_bad(tmp_path, "colour", colour)), "--num", "1"], "colour image"),
        (["--masks", str(_bad(tmp_path, "unknown", unknown)), "--num", "1"], "mask ids [9]"),
        (["--masks", str(_bad(tmp_path, "empty", np.zeros((24, 24), np.uint8))), "--num", "1"], "empty mask"),
        (["--onto", str(data / "good"), "--masks", str(data / "masks"), "--num", "1"], "no mask has the stem"),
        (["--onto", str(data / "good"), "--masks", str(_bad(tmp_path, "small", small)), "--num", "1"], "mask size 10x10"),
        (["--onto", str(data / "good"), "--into-training", "--num", "1"], "exclude each other"),
        (["--mask-source", "model", "--num", "1"], "needs a background"),
        (["--into-training", "--classes", "dent=2"], "'dent' is not a defect class"),
        (["--into-training", "--num", "1", "--resample", "0"], "--resample"),
        (["--num", "0"], "--num must be at least 1"),
        (["--into-training", "--num", "1", "--resample", "2", "--sampler", "dpmsolver++"], "--resample 2 repeats"),
    ]
    for k, (flags, expected) in enumerate(cases):
        capsys.readouterr()
        assert _sample(run, tmp_path / f"out{k}", *flags) == 2, flags
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (flags, err)
        assert not (tmp_path / f"out{k}").exists() or not any((tmp_path / f"out{k}").iterdir()), flags


def test_rgb_and_two_classes_keep_the_colour_background() -> None:
    classes = ClassMap(("background", "dent"))
    torch.manual_seed(0)
    unet = build_unet(UNetConfig(8, (1,), 1, (), 8, False, norm_num_groups=8), 3 + 2, 8)
    sched = DDPMScheduler(num_train_timesteps=10, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                          timestep_spacing="trailing")
    pipe = DefectGenPipeline(None, unet, sched, switch=1.0, image_channels=3)
    good = np.random.default_rng(5).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)  # colour
    mask = _mask(1)
    conds = [Condition(g, mask, np.zeros((8, 8), np.uint8), (1,)) for g in good]
    out = pipe(_gens(2), progress=False, known=known_batch(conds, classes, 3, blend=0))
    assert np.array_equal(out.images[:, mask == 0], good[:, mask == 0]) and np.array_equal(out.masks[0], mask)


def test_the_run_folder_reads_alike_from_the_run_and_from_its_pipeline(tiny_run, tmp_path: Path, capsys) -> None:
    import shutil

    from defectgen.errors import DataError
    from defectgen.run import RunFolder

    run, _ = tiny_run
    a, b = RunFolder.find(run), RunFolder.find(run / "pipeline")
    assert a == b and a.pipeline_path == run / "pipeline" and a.config.size == 16 and not a.crop_mode
    assert a.train_stems == json.loads((run / "selection.json").read_text())["stems"]
    assert a.identity() == {"pipeline": str((run / "pipeline").resolve()), "train_stems": a.train_stems}
    images, masks, stems = a.training_pairs(a.class_map, 16)
    assert images.shape == (len(a.train_stems), 16, 16, 3) and stems == a.train_stems
    alone = tmp_path / "alone" / "pipeline"  # a pipeline folder without its run: defaults, no training pairs
    shutil.copytree(run / "pipeline", alone)
    lone = RunFolder.find(alone)
    assert lone.config is None and lone.sample_config.sampler == "ddpm" and lone.train_stems == []
    with pytest.raises(DataError, match="no selection.json"):
        lone.training_records(a.class_map)
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "selection.json").write_text("{not json")
    capsys.readouterr()
    assert _sample(damaged, tmp_path / "out", "--into-training", "--num", "1") == 2
    assert "selection.json: the run's selection cannot be read" in capsys.readouterr().err
