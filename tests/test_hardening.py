"""Nothing runs that a file says, nothing escapes its folder, outputs survive faults and can be read by others."""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from defectgen.cli import main
from defectgen.io import _host

ROOT = Path(__file__).resolve().parents[1]
DEAD = f"{_host()}-999999999"  # this host, a pid above any pid_max: a writer that is gone


class CreatesFile:
    """Unpickling this opens (creates) ``path``: the proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _train(run: Path, data: Path, config: Path, *extra: str) -> int:
    return main(["train", "--config", str(config), "--data", str(data), "--shots", "1", "--out", str(run), "--quiet",
                 "--stage", "large", "--set", "train.sample_every=0", "--set", "train.large_steps=6",
                 "--set", "train.keep_checkpoints=3", *extra])


@pytest.fixture()
def unfinished(tmp_path: Path, demo_data: Path, tiny_config: Path) -> Path:
    """A large stage trained to step 6 with checkpoints 2, 4, 6, then its final model removed (a crash)."""
    run = tmp_path / "run"
    assert _train(run, demo_data, tiny_config) == 0
    shutil.copytree(run / "large" / "final", tmp_path / "final_uninterrupted")
    shutil.rmtree(run / "large" / "final")
    shutil.rmtree(run / "pipeline")
    return run


def _ckpt(run: Path, step: int) -> Path:
    return run / "large" / "checkpoints" / f"step_{step:07d}"


def test_checkpoints_hold_no_pickle(unfinished: Path) -> None:
    for ckpt in (unfinished / "large" / "checkpoints").iterdir():
        assert sorted(p.name for p in ckpt.iterdir()) == ["ema.pt", "model.safetensors", "optimizer.pt", "trainer_state.json"]


def test_a_pickle_in_a_checkpoint_is_refused_not_run(unfinished: Path, demo_data: Path, tiny_config: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    (_ckpt(unfinished, 6) / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(CreatesFile(marker)))
    assert _train(unfinished, demo_data, tiny_config, "--resume", "latest") == 2
    err = capsys.readouterr().err
    assert "custom_checkpoint_0.pkl" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_posing_as_optimizer_state_is_not_run(unfinished: Path, demo_data: Path, tiny_config: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    (_ckpt(unfinished, 6) / "optimizer.pt").write_bytes(pickle.dumps(CreatesFile(marker)))
    assert _train(unfinished, demo_data, tiny_config, "--resume", "latest") == 0
    assert not marker.exists()
    assert f"skipping damaged checkpoint {_ckpt(unfinished, 6)}" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated weights", "empty trainer_state.json"])
def test_resume_skips_a_damaged_newest_checkpoint(damage: str, unfinished: Path, demo_data: Path, tiny_config: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    newest = _ckpt(unfinished, 6)
    if damage == "truncated weights":
        weights = newest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (newest / "trainer_state.json").write_text("")
    stale = [unfinished / "large" / "checkpoints" / f".step_0000006.{DEAD}.abc.tmp",
             unfinished / f".pipeline.{DEAD}.xyz.tmp", unfinished / "large" / f".final.{DEAD}.q.tmp",
             # old-style names (before host and pid), also of a target that is never written again
             unfinished / "large" / "checkpoints" / ".step_0000006.k3j2_a9x.tmp",
             unfinished / "large" / "checkpoints" / ".step_0000002.zz81qq0m.tmp",
             unfinished / ".pipeline.a1b2c3d4.tmp", unfinished / "small" / ".final.qqqqqqqq.tmp",
             unfinished / "large" / "checkpoints" / f".step_0000002.{DEAD}.r.tmp"]
    for folder in stale:  # what a kill -9 during those writes leaves
        folder.mkdir(parents=True)
        (folder / "half.bin").write_bytes(b"x")
    elsewhere = unfinished / ".pipeline.another-machine-1.xyz.tmp"  # a writer on another host sharing the folder
    elsewhere.mkdir()
    assert _train(unfinished, demo_data, tiny_config, "--resume", "latest") == 0
    assert f"skipping damaged checkpoint {newest}" in capsys.readouterr().err
    # resumed from step 4, the result is the uninterrupted run's, bit for bit
    got = load_file(str(unfinished / "large" / "final" / "diffusion_pytorch_model.safetensors"))
    want = load_file(str(tmp_path / "final_uninterrupted" / "diffusion_pytorch_model.safetensors"))
    assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in got)
    assert not any(p.exists() for p in stale)
    assert elsewhere.is_dir()


def test_a_cut_run_is_finalized_from_its_newest_checkpoint(unfinished: Path, tmp_path: Path) -> None:
    """``finalize_run`` (for runs cut by a time limit): the newest checkpoint's EMA weights become ``final/``,
    here bit for bit the weights the uninterrupted run saved at the same step, and the pipeline is assembled."""
    from defectgen.run import FROM_CHECKPOINT, finalize_run, load_generator

    assert finalize_run(unfinished) == {"large": 6, "small": 0}
    final = unfinished / "large" / "final"
    assert json.loads((final / FROM_CHECKPOINT).read_text()) == {"step": 6}
    got = load_file(str(final / "diffusion_pytorch_model.safetensors"))
    want = load_file(str(tmp_path / "final_uninterrupted" / "diffusion_pytorch_model.safetensors"))
    assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in got)
    assert load_generator(unfinished).unet_2 is None


def test_a_pickle_as_inception_weights_is_refused_not_run(tmp_path: Path, demo_data: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """torch-fidelity unpickles its weights file; defectgen reads it as tensors and hands those on."""
    syn, marker, weights = tmp_path / "syn", tmp_path / "pwned", tmp_path / "inception.pth"
    assert main(["copypaste", "--data", str(demo_data), "--shots", "1", "--num", "4", "--size", "16", "--out", str(syn)]) == 0
    weights.write_bytes(pickle.dumps(CreatesFile(marker)))
    for flag in (["--inception-weights", str(weights)], ["--feature-extractor", "inception-v3-compat",
                                                          "--set", f"inception_weights={weights}"]):
        capsys.readouterr()
        assert main(["metrics", "--real", str(demo_data), "--synthetic", str(syn), "--out", str(tmp_path / "m"),
                     "--no-mask-agreement", *flag]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"defectgen: error: {weights}: holds pickled objects other than tensors, which could run code "
                       "when read; not read (give torch-fidelity's Inception weights file or a .safetensors file)"]
        assert not marker.exists() and not (tmp_path / "m").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_every_checkpoint_damaged_is_an_error_not_a_restart(unfinished: Path, demo_data: Path, tiny_config: Path,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    for step in (2, 4, 6):
        (_ckpt(unfinished, step) / "optimizer.pt").write_bytes(pickle.dumps(CreatesFile(marker)))
        (_ckpt(unfinished, step) / "ema.pt").write_bytes(b"not a torch file")
    capsys.readouterr()
    assert _train(unfinished, demo_data, tiny_config, "--resume", "latest") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"defectgen: error: {unfinished / 'large' / 'checkpoints'}: none of the 3 checkpoints can be "
                           "read (newest step_0000006: "), last
    assert "resuming would train this stage again from step 0" in last and "Traceback" not in err
    assert not marker.exists() and not (unfinished / "large" / "final").exists()


def test_a_non_finite_loss_stops_training_before_anything_is_saved(tmp_path: Path, demo_data: Path, tiny_config: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """A finite but absurd learning rate sends the weights to inf within steps: stop there, naming step and loss."""
    run = tmp_path / "run"
    assert _train(run, demo_data, tiny_config, "--set", "train.lr=1e30", "--set", "train.checkpoint_every=1",
                  "--set", "train.sample_every=1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("defectgen: error: large stage: the loss became nan at step ") and "Traceback" not in err
    bad = int(err[-1].split(" at step ")[1].split(";")[0])
    saved = sorted(int(p.name.split("_")[1]) for p in (run / "large" / "checkpoints").iterdir())
    previews = sorted(int(p.stem.split("_")[1]) for p in (run / "large" / "samples").iterdir())
    logged = [json.loads(line)["step"] for line in (run / "large" / "log.jsonl").read_text().splitlines()]
    assert saved and max(saved) < bad and previews == saved and max(logged) < bad  # written up to the last good step
    assert not (run / "large" / "final").exists() and not (run / "pipeline").exists()


def test_a_read_only_out_is_named_not_its_hidden_temporary(tmp_path: Path, demo_data: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """Root ignores permissions, so the refusal of a read-only folder is what the temporary's creation raises."""
    import tempfile

    def read_only(dir: str, prefix: str, suffix: str) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}k3j2{suffix}"))

    out = tmp_path / "ro"
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert main(["copypaste", "--data", str(demo_data), "--shots", "1", "--num", "2", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"defectgen: error: {out}: cannot write (permission denied)"


def test_outputs_respect_the_umask(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    old = os.umask(0o022)
    try:
        run, syn = tmp_path / "run", tmp_path / "syn"
        assert _train(run, demo_data, tiny_config, "--set", "train.large_steps=2") == 0
        stale = [tmp_path / f".syn.{DEAD}.abc.tmp", tmp_path / ".syn.8hq_3kx0.tmp"]  # new- and old-style names
        for folder in stale:
            folder.mkdir()
        assert main(["sample", "--run", str(run), "--num", "2", "--out", str(syn), "--switch", "0", "--quiet"]) == 0
    finally:
        os.umask(old)
    assert not any(p.exists() for p in stale)
    for path in [run / "config.yaml", run / "selection.json", run / "pipeline" / "model_index.json",
                 _ckpt(run, 2) / "model.safetensors", syn / "manifest.json", syn / "images" / "000000.png"]:
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path
    for path in [run, run / "pipeline", run / "large" / "final", _ckpt(run, 2), syn, syn / "images"]:
        assert oct(path.stat().st_mode & 0o777) == oct(0o755), path


def test_a_run_with_no_trained_stage_is_reused_after_the_data_is_fixed(
        tmp_path: Path, demo_data: Path, tiny_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"

    def fails(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EACCES, "Permission denied", str(run / "large"))

    with monkeypatch.context() as m:  # the first attempt dies before any step is trained
        m.setattr("defectgen.run.train_stage", fails)
        assert _train(run, demo_data, tiny_config, "--set", "train.large_steps=2") == 2
    assert (run / "selection.json").is_file()
    other = ["--shots", "2", "--set", "train.large_steps=2"]  # other images and another config
    assert _train(run, demo_data, tiny_config, *other) == 0
    assert len(json.loads((run / "selection.json").read_text())["stems"]) == 6
    # once a stage is trained, the run's data is fixed
    assert _train(run, demo_data, tiny_config, "--set", "train.large_steps=2") == 2


def test_relayout_refuses_manifest_names_that_leave_the_folder(tmp_path: Path, demo_data: Path,
                                                                tiny_config: Path) -> None:
    from defectgen.config import ConfigError
    from defectgen.data.layouts import relayout

    run, syn = tmp_path / "run", tmp_path / "syn"
    assert _train(run, demo_data, tiny_config, "--set", "train.large_steps=2") == 0
    assert main(["sample", "--run", str(run), "--num", "1", "--out", str(syn), "--switch", "0", "--quiet"]) == 0
    manifest = json.loads((syn / "manifest.json").read_text())
    manifest["samples"][0]["file"] = "../../outside.png"
    (syn / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="outside.png"):
        relayout(syn, "voc")
    assert not (tmp_path / "outside.png").exists() and not (tmp_path.parent / "outside.png").exists()


# ---- evaluate / ablate: finished parts are kept, a rerun continues ---------------------------------------------


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_seg_end_to_end import make_dataset

    return make_dataset(tmp_path_factory.mktemp("hardening_seg") / "data")


def _evaluate_argv(data: Path, out: Path) -> list[str]:
    return ["evaluate", "--data", str(data), "--split", "train", "--shots", "3", "--model", "unet-tiny",
            "--seeds", "0,1,2", "--out", str(out), "--set", "seg.size=32", "--set", "seg.steps=60",
            "--set", "seg.batch_size=4", "--set", "seg.threads=1", "--set", "seg.warmup_steps=1"]


def test_evaluate_killed_mid_run_continues_to_the_same_result(seg_data: Path, tmp_path: Path) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "defectgen.cli", *_evaluate_argv(seg_data, killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (killed / "seeds" / "seed_0.json").is_file() and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (killed / "results.json").exists(), "the evaluation finished before it could be killed"
    assert (killed / "seeds" / "seed_0.json").is_file()
    assert main(_evaluate_argv(seg_data, killed)) == 0  # continues: seed 0 is read back, not retrained
    assert main(_evaluate_argv(seg_data, whole)) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (killed, whole))
    assert [r["metrics"] for r in a["per_seed"]] == [r["metrics"] for r in b["per_seed"]]
    assert a["aggregate"] == b["aggregate"]
    assert main(_evaluate_argv(seg_data, killed)) == 2  # finished: not silently redone


def test_unfinished_ablation_report_says_so_first(seg_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from defectgen.seg import ablate

    cfg = tmp_path / "a.yaml"
    cfg.write_text(json.dumps({"data": str(seg_data), "split": "train", "shots": 3, "ratios": [0], "seeds": [0, 1],
                               "models": ["unet-tiny"], "seg": {"size": 32, "steps": 3, "batch_size": 4, "threads": 1}}))
    out = tmp_path / "out"
    real = ablate.train_and_score
    calls = []

    def dies_second(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "cells"))
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(ablate, "train_and_score", dies_second)
        assert main(["ablate", "--config", str(cfg), "--out", str(out)]) == 2
    assert (out / "report.md").read_text().splitlines()[0].startswith("# UNFINISHED: 1 of 2 cells")
    assert main(["ablate", "--config", str(cfg), "--out", str(out)]) == 0
    assert (out / "report.md").read_text().splitlines()[0] == "# Segmentation with synthetic pairs: ablation"


def test_a_mask_without_its_image_is_reported(demo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    shutil.copy(sorted((data / "masks").iterdir())[0], data / "masks" / "lonely.png")
    assert main(["data", "--data", str(data)]) == 0
    assert f"warning: 1 masks have no image and are not used (e.g. {data / 'masks' / 'lonely.png'})" in capsys.readouterr().out
