"""Zero terminal SNR (diffusers' ``rescale_betas_zero_snr``): ᾱ(T) = 0, saved with the pipeline, and every
prediction type trains and samples finite pairs through ``defectgen train`` / ``defectgen sample``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectgen.pipelines.defectgen import pipeline_defectgen as pipeline_mod
from defectgen.cli import main
from defectgen.config import load_config
from defectgen.generator_config import GeneratorConfig
from defectgen.run import load_generator


def test_zero_snr_schedule_ends_at_pure_noise(tiny_config: Path) -> None:
    plain = load_config(GeneratorConfig, tiny_config).diffusion.make_scheduler()
    cfg = load_config(GeneratorConfig, tiny_config, ["diffusion.rescale_betas_zero_snr=true"])
    zero = cfg.diffusion.make_scheduler()
    assert float(plain.alphas_cumprod[-1]) > 0  # the cosine schedule stops short of pure noise
    assert float(zero.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-12)
    assert float(zero.alphas_cumprod[0]) == pytest.approx(float(plain.alphas_cumprod[0]), rel=1e-3)  # same start
    zero.set_timesteps(4)
    assert int(zero.timesteps[0]) == cfg.diffusion.num_train_timesteps - 1  # trailing: sampling starts at t = T


@pytest.mark.parametrize("prediction", ["sample", "epsilon", "v_prediction"])
def test_every_prediction_type_trains_and_samples_with_zero_snr(prediction: str, tmp_path: Path, demo_data: Path,
                                                                 tiny_config: Path, monkeypatch, capsys) -> None:
    finals = []  # the sampled tensors before they are turned into uint8 images

    def spy(x, image_channels):
        finals.append(x.clone())
        return decode(x, image_channels)

    decode = pipeline_mod.decode_pairs
    monkeypatch.setattr(pipeline_mod, "decode_pairs", spy)
    run, syn = tmp_path / "run", tmp_path / "syn"
    sets = ["--set", "diffusion.rescale_betas_zero_snr=true", "--set", f"diffusion.prediction_type={prediction}",
            "--set", "train.sample_every=0", "--set", "train.checkpoint_every=0"]
    assert main(["train", "--config", str(tiny_config), "--data", str(demo_data), "--shots", "2", "--out", str(run),
                 "--quiet", *sets]) == 0
    warned = "warning: epsilon prediction with rescale_betas_zero_snr" in capsys.readouterr().err
    assert warned == (prediction == "epsilon")  # measured on NEU: its samples were noise
    losses = [json.loads(ln)["loss"] for ln in (run / "large" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(losses))
    saved = json.loads((run / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert saved["rescale_betas_zero_snr"] is True and saved["prediction_type"] == prediction
    pipe = load_generator(run)
    assert float(pipe.scheduler.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-12)
    for sampler, steps in (("ddpm", None), ("ddim", 5)):
        out = pipe([torch.Generator().manual_seed(i) for i in range(2)], sampler=sampler,
                   num_inference_steps=steps, progress=False)
        assert out.images.shape[0] == 2 and torch.isfinite(finals[-1]).all(), sampler
    extra = ["--sampler", "ddim", "--steps", "5"]
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(syn), "--quiet", *extra]) == 0
    image = np.asarray(Image.open(syn / "images" / "000000.png"))
    assert image.shape[:2] == (16, 16) and image.std() > 0  # not a blank image
