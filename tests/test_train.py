"""Training, checkpoints and resume, the run folder, sampling export and the CLI, on tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectgen.cli import main
from defectgen.config import load_config
from defectgen.data import load_pairs, open_dataset
from defectgen.generator_config import GeneratorConfig
from defectgen.pairs import encode_pairs
from defectgen.train import latest_checkpoint, train_stage


def _data(demo_data: Path, cfg: GeneratorConfig) -> torch.Tensor:
    ds = open_dataset(demo_data)
    images, masks = load_pairs(ds.records, ds.class_map, cfg.size)
    return encode_pairs(images, masks, ds.class_map.num_classes, cfg.image_channels), ds


def test_resumed_training_equals_uninterrupted(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    cfg = load_config(GeneratorConfig, tiny_config, ["train.large_steps=6", "train.checkpoint_every=2",
                                                     "train.sample_every=0"])
    data, ds = _data(demo_data, cfg)
    whole = train_stage(cfg, data, tmp_path / "a", "large", progress=False)
    train_stage(cfg, data, tmp_path / "b", "large", progress=False, stop_after=3)
    assert latest_checkpoint(tmp_path / "b").name == "step_0000002"  # step 3's work is lost, as in a crash
    resumed = train_stage(cfg, data, tmp_path / "b", "large", resume=True, progress=False)
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the crashed run's step 3 line was replaced, not duplicated
    kept = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert kept == ["step_0000004", "step_0000006"]  # keep_checkpoints = 2, no temporary folders left


def test_training_lowers_the_loss(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    cfg = load_config(GeneratorConfig, tiny_config, ["train.small_steps=40", "train.lr=0.003", "train.log_every=10",
                                                     "train.batch_size=4", "train.sample_every=0",
                                                     "train.checkpoint_every=0"])
    data, ds = _data(demo_data, cfg)
    train_stage(cfg, data, tmp_path, "small", progress=False)
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.7 * losses[0]


def test_cli_train_sample_end_to_end(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    run, syn = tmp_path / "run", tmp_path / "syn"
    common = ["--config", str(tiny_config), "--data", str(demo_data), "--shots", "2", "--out", str(run), "--quiet"]
    assert main(["train", *common]) == 0
    for stage in ("large", "small"):
        assert (run / stage / "final" / "config.json").is_file()
        assert (run / stage / "samples" / "step_0000004.png").is_file()
    stems = json.loads((run / "selection.json").read_text())["stems"]
    assert len(stems) == 6
    assert main(["sample", "--run", str(run), "--num", "5", "--out", str(syn), "--batch-size", "2",
                 "--seed", "3", "--quiet"]) == 0
    assert sorted(p.name for p in (syn / "images").iterdir()) == [f"{i:06d}.png" for i in range(5)]
    manifest = json.loads((syn / "manifest.json").read_text())
    assert manifest["train_stems"] == stems and manifest["switch"] == 0.4
    assert manifest["timesteps"]["large"] == list(range(19, 7, -1))
    assert manifest["timesteps"]["small"] == list(range(7, -1, -1))
    assert manifest["class_map"]["names"] == ["background", "scratch", "spot", "patch"]
    for s in manifest["samples"]:
        mask = np.asarray(Image.open(syn / "masks" / s["file"]))
        assert mask.shape == (16, 16)
        assert sum(s["class_pixels"].values()) == 256
        assert s["class_pixels"]["scratch"] == int((mask == 1).sum())
    assert (syn / "grid.png").is_file()
    # the output is a dataset in its own right: the evaluation reads it like real data
    assert open_dataset(syn).class_map.names == ("background", "scratch", "spot", "patch")
    # same seed and index -> same pair, whatever the batch size
    assert main(["sample", "--run", str(run), "--num", "3", "--out", str(tmp_path / "syn2"), "--batch-size", "3",
                 "--seed", "3", "--quiet"]) == 0
    for i in range(3):
        a = np.asarray(Image.open(syn / "images" / f"{i:06d}.png"))
        b = np.asarray(Image.open(tmp_path / "syn2" / "images" / f"{i:06d}.png"))
        assert np.array_equal(a, b)


def test_existing_outputs_are_not_overwritten(tmp_path: Path, demo_data: Path, tiny_config: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    args = ["train", "--config", str(tiny_config), "--data", str(demo_data), "--out", str(run), "--quiet",
            "--stage", "large"]
    assert main(args) == 0
    # same config and data: the finished stage is skipped, the small stage can be added later
    assert main(args) == 0
    assert main([*args, "--set", "train.lr=0.5"]) == 2
    assert "different config" in capsys.readouterr().err
    syn = tmp_path / "syn"
    syn.mkdir()
    (syn / "keep.txt").write_text("user data")
    assert main(["sample", "--run", str(run), "--num", "1", "--out", str(syn), "--switch", "0", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err and (syn / "keep.txt").read_text() == "user data"
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    assert main(["train", "--config", str(tiny_config), "--data", str(demo_data), "--out", str(other), "--quiet"]) == 2
    assert "not a defectgen run" in capsys.readouterr().err


def test_unfinished_stage_needs_resume(tmp_path: Path, demo_data: Path, tiny_config: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    cfg = load_config(GeneratorConfig, tiny_config, ["train.sample_every=0"])
    data, ds = _data(demo_data, cfg)
    run = tmp_path / "run"
    args = ["train", "--config", str(tiny_config), "--data", str(demo_data), "--out", str(run), "--quiet",
            "--stage", "large", "--set", "train.sample_every=0"]
    assert main(args) == 0
    import shutil
    shutil.rmtree(run / "large" / "final")  # as if the run had died before finishing
    assert main(args) == 2
    assert "--resume latest" in capsys.readouterr().err
    assert main([*args, "--resume", "latest"]) == 0
    assert (run / "large" / "final" / "config.json").is_file()


def test_cli_reports_bad_data_and_config(tmp_path: Path, tiny_config: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--config", str(tiny_config), "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "r")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["inspect", "--config", str(tiny_config), "--set", "large.base=3"]) == 2
    assert "unknown config key 'large.base'" in capsys.readouterr().err
    assert main(["sample", "--run", str(tmp_path), "--num", "1", "--out", str(tmp_path / "s")]) == 2
    assert "no trained generator" in capsys.readouterr().err


def test_inspect_prints_parameters_and_receptive_field(tiny_config: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", "--config", str(tiny_config), "--set", "size=48"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["large"]["receptive_field_px"] == 48 and report["large"]["whole_image"] is True
    assert report["small"]["receptive_field_px"] == 25 and report["small"]["whole_image"] is False
    assert report["large"]["parameters"] > report["small"]["parameters"] > 0


def test_a_run_saved_before_a_config_key_existed_is_reused(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    import yaml

    run = tmp_path / "run"
    args = ["train", "--config", str(tiny_config), "--data", str(demo_data), "--out", str(run), "--quiet",
            "--stage", "large"]
    assert main(args) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["diffusion"]["rescale_betas_zero_snr"]  # as an older version wrote it
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(args) == 0  # the missing key takes its default: same config
    assert main([*args, "--set", "diffusion.rescale_betas_zero_snr=true"]) == 2


def test_gpu_speed_options_keep_the_result(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    """channels_last changes only the memory layout; compile is CUDA-only and ignored on this CPU."""
    base = ["train.large_steps=3", "train.sample_every=0", "train.checkpoint_every=0"]
    cfg = load_config(GeneratorConfig, tiny_config, base)
    fast = load_config(GeneratorConfig, tiny_config, [*base, "train.channels_last=true", "train.compile=true"])
    data, ds = _data(demo_data, cfg)
    a = train_stage(cfg, data, tmp_path / "a", "large", progress=False)
    b = train_stage(fast, data, tmp_path / "b", "large", progress=False)
    x, t = torch.randn(2, 5, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([3, 15])
    with torch.no_grad():
        torch.testing.assert_close(b(x, t).sample, a(x, t).sample, rtol=0, atol=1e-5)


def test_parallel_stages_give_the_same_weights(tmp_path: Path, demo_data: Path, tiny_config: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from diffusers import UNet2DModel

    common = ["--config", str(tiny_config), "--data", str(demo_data), "--quiet", "--set", "train.sample_every=0"]
    assert main(["train", *common, "--out", str(tmp_path / "seq")]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "par"), "--parallel"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("[defectgen] time: train (2 processes) ")
    for stage in ("large", "small"):  # the small stage trained in a second process, seeded the same way
        a = UNet2DModel.from_pretrained(tmp_path / "seq" / stage / "final").state_dict()
        b = UNet2DModel.from_pretrained(tmp_path / "par" / stage / "final").state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), stage
    assert (tmp_path / "par" / "pipeline" / "model_index.json").is_file()


@pytest.fixture()
def fresh_accelerate():
    """accelerate keeps one mixed-precision setting per process: start and leave this test with a clean state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_resumes_exactly(precision: str, tmp_path: Path, demo_data: Path, tiny_config: Path,
                                        fresh_accelerate: None) -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if not Accelerator(mixed_precision=precision).native_amp:
        pytest.skip(f"accelerate runs {precision} on this device ({AcceleratorState().device.type}) as plain fp32, "
                    f"without autocast: there is no {precision} training to resume")
    AcceleratorState._reset_state(reset_partial_state=True)
    cfg = load_config(GeneratorConfig, tiny_config, ["train.large_steps=4", "train.checkpoint_every=2",
                                                     "train.sample_every=0", f"train.mixed_precision={precision}"])
    data, _ = _data(demo_data, cfg)
    whole = train_stage(cfg, data, tmp_path / "a", "large", progress=False)
    train_stage(cfg, data, tmp_path / "b", "large", progress=False, stop_after=3)
    state = json.loads((latest_checkpoint(tmp_path / "b") / "trainer_state.json").read_text())
    assert state["step"] == 2 and "scaler" in state  # fp16 on CUDA: the grad scaler's state rides along
    resumed = train_stage(cfg, data, tmp_path / "b", "large", resume=True, progress=False)
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    plain = load_config(GeneratorConfig, tiny_config, ["train.large_steps=4", "train.checkpoint_every=2",
                                                       "train.sample_every=0"])
    AcceleratorState._reset_state(reset_partial_state=True)
    fp32 = train_stage(plain, data, tmp_path / "c", "large", progress=False)
    assert any(not torch.equal(p, q) for p, q in zip(whole.state_dict().values(), fp32.state_dict().values()))


def test_resume_puts_the_ema_weights_on_the_training_device(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    """A checkpoint is read onto the CPU; on a GPU the EMA's shadow weights must follow the model there (a GPU
    resume once failed at its first EMA step: 'cuda:0 and cpu'). The meta device stands in for the GPU."""
    from types import SimpleNamespace

    from diffusers.training_utils import EMAModel

    from defectgen.models import build_unet
    from defectgen.train import TrainParts, load_checkpoint

    cfg = load_config(GeneratorConfig, tiny_config, ["train.large_steps=2", "train.checkpoint_every=2",
                                                     "train.sample_every=0"])
    data, _ = _data(demo_data, cfg)
    train_stage(cfg, data, tmp_path / "run", "large", progress=False)
    unet = build_unet(cfg.large, data.shape[1], cfg.size)
    optimizer = torch.optim.AdamW(unet.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema = EMAModel(unet.parameters(), decay=0.9)
    device = torch.device("meta")
    ema.to(device)
    accelerator = SimpleNamespace(device=device, unwrap_model=lambda m, keep_torch_compile=False: m, scaler=None)
    assert load_checkpoint(TrainParts(accelerator, unet, optimizer, sched, ema), tmp_path / "run") == 2
    assert {p.device for p in ema.shadow_params} == {device}
