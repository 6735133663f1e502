"""Two real CPU processes (torchrun, gloo) give the same generator as one process with the same global batch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from defectgen.cli import main
from defectgen.config import ConfigError, load_config
from defectgen.data.geometry import CropSet
from defectgen.generator_config import GeneratorConfig
from defectgen.train import CHECKPOINT_FILES, _check_world, draw_batch

from conftest import torchrun



def _log(stage_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (stage_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_process_training_equals_one_process(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    # warmup 1 of 4 steps: a schedule stepped once per process would reach lr 0 by step 3
    args = ["train", "--config", str(tiny_config), "--data", str(demo_data), "--quiet",
            "--set", "train.batch_size=4", "--set", "train.sample_every=4"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two = torchrun([*args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    for stage in ("large", "small"):
        one_dir, two_dir = tmp_path / "one" / stage, tmp_path / "two" / stage
        assert json.loads((two_dir / "timing.json").read_text())["processes"] == 2
        a, b = _log(one_dir), _log(two_dir)
        assert [r["step"] for r in b] == [1, 2, 3, 4]  # one line per step, not one per process
        for ra, rb in zip(a, b):
            assert ra["batch"] == rb["batch"] == 4  # images per step over all processes: each took its share
            assert rb["lr"] == pytest.approx(ra["lr"]) and rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        for ckpt in ("step_0000002", "step_0000004"):
            assert {p.name for p in (two_dir / "checkpoints" / ckpt).iterdir()} == CHECKPOINT_FILES
        assert not [p for p in (two_dir / "checkpoints").iterdir() if p.name.startswith(".")]
        assert (two_dir / "samples" / "step_0000004.png").is_file()
        ua, ub = UNet2DModel.from_pretrained(one_dir / "final"), UNet2DModel.from_pretrained(two_dir / "final")
        # Adam turns float-noise gradients of parameters the output ignores (a conv bias before a
        # GroupNorm) into steps of up to lr, so weights agree to ~lr and the network's output closely
        for (name, p), q in zip(ua.state_dict().items(), ub.state_dict().values()):
            torch.testing.assert_close(q, p, rtol=0, atol=2e-4, msg=name)
        x, t = torch.randn(2, 5, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 15])
        with torch.no_grad():
            torch.testing.assert_close(ub(x, t).sample, ua(x, t).sample, rtol=0, atol=1e-5)
    assert (tmp_path / "two" / "pipeline" / "model_index.json").is_file()


def test_process_shares_make_up_the_global_batch(tiny_config: Path) -> None:
    cfg = load_config(GeneratorConfig, tiny_config, ["train.batch_size=6"])
    data, sched = torch.randn(5, 3, 8, 8), cfg.diffusion.make_scheduler()
    whole = draw_batch(data, cfg.train, sched, key=7)
    shares = [draw_batch(data, cfg.train, sched, key=7, rank=r, world=3) for r in range(3)]
    for part, joined in zip(whole, (torch.cat(s) for s in zip(*shares))):
        assert torch.equal(part, joined)
    assert not torch.equal(whole[0], draw_batch(data, cfg.train, sched, key=8)[0])
    # crops of pairs of other sizes (resize_mode crop): every process cuts the whole batch, keeps its rows
    items = [torch.randn(3, 12, 10), torch.randn(3, 9, 14)]
    masks = [np.zeros((12, 10), np.uint8), np.ones((9, 14), np.uint8)]
    crops = CropSet(items, masks, 8, 0.5, 4)
    whole = draw_batch(crops, cfg.train, sched, key=3)
    shares = [draw_batch(crops, cfg.train, sched, key=3, rank=r, world=2) for r in range(2)]
    for part, joined in zip(whole, (torch.cat(s) for s in zip(*shares))):
        assert torch.equal(part, joined)
    with pytest.raises(ConfigError, match="train.batch_size=6 .* divisible by the number of processes \\(4\\)"):
        _check_world(cfg.train, 4)


def test_augmentation_is_a_symmetry_of_each_pair(tiny_config: Path) -> None:
    cfg = load_config(GeneratorConfig, tiny_config)
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    from defectgen.train import augment

    out = augment(x, torch.tensor([[1, 0, 1], [0, 1, 3]]), cfg.train)
    assert torch.equal(out[0], torch.rot90(x[0].flip(-1), 1, dims=(-2, -1)))
    assert torch.equal(out[1], torch.rot90(x[1].flip(-2), 3, dims=(-2, -1)))
