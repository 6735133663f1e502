"""Harmonised copy-paste (``--mask-source paste``): a real defect pasted with its pixels, then noised part-way
down the schedule and denoised with its mask and the background outside the band held known."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffusers import DDPMScheduler

from defectgen.guided import Condition, init_batch, known_batch
from defectgen.pairs import dihedral, encode_pairs
from defectgen.pipeline import DefectGenPipeline
from test_fullsize import H, W, _band, _read, _rgb, _sample, crop_run  # noqa: F401  (crop_run: a fixture)
from test_guided import CLASSES, _gens, _good, _mask, _pipeline


def _paste_conds(n: int) -> list[Condition]:
    good, donor = _good(n), _good(n, seed=9)
    conds = []
    for i in range(n):
        mask = _mask(1 + i % 3)
        start = good[i].copy()
        start[mask > 0] = donor[i][mask > 0]
        conds.append(Condition(good[i], mask, np.zeros((8, 8), np.uint8), (1, 2, 3), start=start))
    return conds


def _run(pipe, conds, strength: float, offset: int = 0, blend: int = 1):
    return pipe(_gens(len(conds), offset), progress=False, known=known_batch(conds, CLASSES, 1, blend),
                init=init_batch(conds, CLASSES, 1), strength=strength, num_inference_steps=10, sampler="ddim")


def _predicts_no_noise() -> DefectGenPipeline:
    """Both UNets output zero noise: DDIM then returns its start noised to the first step and scaled back,
    so how far a sample lies from ``init`` grows with the noise level it started at."""
    pipe = _pipeline()
    for unet in (pipe.unet, pipe.unet_2):
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type="epsilon")
    return pipe


def test_strength_one_ignores_the_start_and_a_low_strength_stays_near_it() -> None:
    pipe, conds = _pipeline(), _paste_conds(4)
    full = _run(pipe, conds, 1.0)
    plain = pipe(_gens(4), progress=False, known=known_batch(conds, CLASSES, 1, 1), num_inference_steps=10, sampler="ddim")
    assert np.array_equal(full.images, plain.images)
    low = _run(pipe, conds, 0.1)
    assert low.timesteps["large"] == [] and len(low.timesteps["small"]) == 1  # one step: the last tenth of 10
    pipe = _predicts_no_noise()
    region = np.stack([c.mask > 0 for c in conds])
    starts = np.stack([c.start for c in conds]).astype(float)
    dist = {s: np.abs(_run(pipe, conds, s).images.astype(float) - starts)[region].mean() for s in (0.1, 0.4, 0.8)}
    assert dist[0.1] < dist[0.4] < dist[0.8], dist


def test_the_start_keeps_the_mask_and_the_background_and_no_batch_dependence() -> None:
    pipe, conds = _pipeline(), _paste_conds(3)
    whole = _run(pipe, conds, 0.5)
    for i, cd in enumerate(conds):
        band = _band(cd.mask > 0, 1)
        assert np.array_equal(whole.masks[i], cd.mask) and np.array_equal(whole.images[i][~band], cd.image[~band])
        single = _run(pipe, [cd], 0.5, offset=i)
        assert np.array_equal(single.images[0], whole.images[i])


def test_init_batch_encodes_the_pasted_pairs() -> None:
    conds = _paste_conds(2)
    x = init_batch(conds, CLASSES, 1)
    ref = encode_pairs(np.stack([c.start for c in conds]), np.stack([c.mask for c in conds]), CLASSES.num_classes, 1)
    assert torch.equal(x, ref)
    assert init_batch([Condition(c.image, c.mask, c.base, c.allowed) for c in conds], CLASSES, 1) is None


def test_harmonised_pairs_keep_the_pasted_mask_bit_for_bit(crop_run, tmp_path: Path) -> None:  # noqa: F811
    run, data, good = crop_run
    for mode in (["--into-training"], ["--onto", str(good)]):
        out = tmp_path / mode[0].strip("-")
        assert _sample(run, out, *mode, "--mask-source", "paste", "--strength", "0.6", "--num", "4",
                       "--defects-per-image", "2", "--blend", "1") == 0
        m, imgs, masks = _read(out)
        assert m["guided"]["strength"] == 0.6 and m["full_size"] is True
        for s, img, mask in zip(m["samples"], imgs, masks):
            folder = data / "img" if mode[0] == "--into-training" else good
            bg = _rgb(folder / f"{s['source_image']}.png")
            own = np.asarray(Image.open(data / "ann" / f"{s['source_image']}.png")) > 0
            pasted = np.zeros((H, W), bool)
            for w in s["windows"]:
                assert w["mask_source"] == "paste" and w["source_mask"] != s["source_image"]
                src = np.asarray(Image.open(data / "ann" / f"{w['source_mask']}.png")) > 0
                cut = dihedral(src[w["source_y"]:w["source_y"] + 16, w["source_x"]:w["source_x"] + 16], w["symmetry"])
                pasted[w["y"]:w["y"] + 16, w["x"]:w["x"] + 16] |= cut
                assert w["new_pixels"] == cut.sum() > 0
            assert np.array_equal(mask > 0, own | pasted)  # the pasted defects, every pixel, and the image's own
            band = _band(pasted, 1)
            assert np.array_equal(img[~band], bg[~band])


def test_bad_strength_is_one_line_and_leaves_nothing(crop_run, tmp_path: Path, capsys) -> None:  # noqa: F811
    run, data, good = crop_run
    cases = [
        (["--into-training", "--mask-source", "paste", "--strength", "0", "--num", "1"], "--strength must be above 0"),
        (["--into-training", "--mask-source", "paste", "--strength", "1.5", "--num", "1"], "at most 1"),
        (["--into-training", "--strength", "0.5", "--num", "1"], "it needs --mask-source paste"),
        (["--mask-source", "paste", "--num", "1"], "needs a background"),
        (["--num", "1", "--strength", "0.5"], "--strength needs a guided mode"),
    ]
    for k, (flags, expected) in enumerate(cases):
        capsys.readouterr()
        assert _sample(run, tmp_path / f"o{k}", *flags) == 2, flags
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (flags, err)
        assert not (tmp_path / f"o{k}").exists(), flags
