"""tools/gpu_levers.py on CPU with a stand-in $OUT: variants trained side by side (one cut at a step, as the time
limit cuts it on the GPU, and finished from its checkpoint), their sets sampled, everything returned within the
limits, and unpacked here. Cuts are by steps, never by seconds: a loaded machine gives the same outcome."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from defectgen.run import load_generator

from conftest import REPO, TINY_CONFIG

SCRIPT = REPO / "tools" / "gpu_levers.py"
NO_TIME_LIMIT = ["--train-seconds", "86400", "--sample-seconds", "86400"]  # the cuts here are by steps


def levers(args: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def returned(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("gpu_levers")
    (tmp / "tiny.yaml").write_text(TINY_CONFIG)
    sample = ["--num", "2", "--steps", "3", "--seed", "0"]
    cfg = {
        "generator": str(tmp / "tiny.yaml"), "data": str(demo_data), "select": ["--shots", "2"],
        "common": {"train.sample_every": 0},
        "variants": {
            "x0": {},
            # far more steps than --train-steps allows: stopped, then finished from its newest checkpoint
            "v-zsnr-cut": {"diffusion.prediction_type": "v_prediction", "diffusion.rescale_betas_zero_snr": True,
                           "train.large_steps": 100000, "train.small_steps": 100000, "train.checkpoint_every": 5},
        },
        "sets": {"into-training": {"variants": "all", "args": ["--into-training", *sample]},
                 "vanilla": {"variants": ["x0"], "args": ["--switch", "0", *sample]}},
    }
    (tmp / "levers.yaml").write_text(yaml.safe_dump(cfg))
    out, work = tmp / "out", tmp / "work"
    levers(["run", "--config", str(tmp / "levers.yaml"), "--work", str(work), *NO_TIME_LIMIT, "--train-steps", "5"], out)
    return work, out


def test_run_returns_weights_and_sets_within_the_limits(returned: tuple[Path, Path]) -> None:
    work, out = returned
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert files == ["levers.json", "log.txt", "samples.tar", "weights_v-zsnr-cut.tar", "weights_x0.tar"]
    assert all((out / f).stat().st_size < 16 * 2**20 for f in files)
    record = json.loads((out / "levers.json").read_text())
    assert record["out_problems"] == []
    train = record["phases"]["train"]
    assert train["x0"]["finished"] and train["x0"]["steps_reached"] == {"large": 4, "small": 4}
    cut = train["v-zsnr-cut"]
    assert not cut["finished"] and all(0 < cut["steps_reached"][s] < 100000 for s in ("large", "small"))
    assert all(cut["steps_reached"][s] >= 5 and cut["steps_reached"][s] % 5 == 0 for s in ("large", "small"))
    assert all(r["finished"] for k, r in record["phases"]["sample"].items() if k != "seconds")
    assert set(record["phases"]["pack"]) == {"x0", "v-zsnr-cut"}


def test_unpack_rebuilds_float32_runs_with_their_sets(returned: tuple[Path, Path], tmp_path: Path) -> None:
    work, out = returned
    levers(["unpack", "--from", str(out), "--to", str(tmp_path / "back")], out)
    back = tmp_path / "back"
    for v in ("x0", "v-zsnr-cut"):
        pipe = load_generator(back / v)
        assert pipe.unet.dtype == torch.float32
        trained = load_generator(work / v)
        for (name, a), b in zip(trained.unet.state_dict().items(), pipe.unet.state_dict().values()):
            torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3, msg=name)  # fp16 on the way back
        assert (back / v / "config.yaml").read_text() == (work / v / "config.yaml").read_text()
        manifest = json.loads((back / v / "sets" / "into-training" / "manifest.json").read_text())
        assert len(manifest["samples"]) == 2 and manifest["mode"] == "into-training"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert (back / "x0" / "sets" / "vanilla" / "manifest.json").is_file()
    assert not (back / "v-zsnr-cut" / "sets" / "vanilla").exists()
    # a second unpack keeps what is there
    done = levers(["unpack", "--from", str(out), "--to", str(back)], out)
    assert "already unpacked, kept" in done.stdout


def test_a_second_run_trains_the_cut_variant_on(returned: tuple[Path, Path], tmp_path: Path) -> None:
    work, out = returned
    before = json.loads((out / "levers.json").read_text())["phases"]["train"]
    kept = (work / "x0" / "sets" / "into-training" / "manifest.json").stat().st_mtime_ns
    config = json.loads((out / "levers.json").read_text())["config"]
    (tmp_path / "levers.yaml").write_text(yaml.safe_dump(config))
    further = max(before["v-zsnr-cut"]["steps_reached"].values()) + 10
    levers(["run", "--config", str(tmp_path / "levers.yaml"), "--work", str(work), *NO_TIME_LIMIT,
            "--train-steps", str(further)], tmp_path / "out2")
    record = json.loads((tmp_path / "out2" / "levers.json").read_text())
    assert record["resumed"] == ["v-zsnr-cut"]
    after = record["phases"]["train"]
    assert after["x0"]["steps_reached"] == before["x0"]["steps_reached"]  # finished: not trained again
    assert all(after["v-zsnr-cut"]["steps_reached"][s] >= further for s in ("large", "small"))
    assert list(record["phases"]["sample"]) == ["v-zsnr-cut/into-training", "seconds"]  # x0's sets are kept
    assert (work / "x0" / "sets" / "into-training" / "manifest.json").stat().st_mtime_ns == kept


def test_bad_config_and_empty_fetch_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator: g.yaml\nvariants: {x0: {}}\nsets: {s: {variants: [y], args: []}}\n")
    six = tmp_path / "six.yaml"
    six.write_text("generator: g.yaml\nvariants: {a: {}, b: {}, c: {}, d: {}, e: {}, f: {}}\nsets: {}\n")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHONPATH": str(REPO)}
    for args, message in ((["run", "--config", str(bad), "--work", str(tmp_path / "w")], "names unknown variants ['y']"),
                          (["run", "--config", str(six), "--work", str(tmp_path / "w")], "at most 5 fit the 8 files"),
                          (["run", "--config", str(tmp_path / "none.yaml"), "--work", str(tmp_path / "w")], "cannot read"),
                          (["unpack", "--from", str(tmp_path / "empty"), "--to", str(tmp_path / "b")], "no weights_*.tar")):
        done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=3600)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
