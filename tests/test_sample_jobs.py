"""Sampling as a job: sharded over processes, resumable after kill -9, DPM-Solver++ across the switch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectgen.cli import main
from defectgen.data import DataError, open_dataset

from conftest import REPO, TINY_CONFIG, torchrun


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    tmp = tmp_path_factory.mktemp("jobs")
    (tmp / "tiny.yaml").write_text(TINY_CONFIG)
    assert main(["train", "--config", str(tmp / "tiny.yaml"), "--data", str(demo_data), "--out", str(tmp / "run"),
                 "--quiet", "--set", "train.sample_every=0"]) == 0
    return tmp / "run"


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a sample folder by relative path (hidden bookkeeping must be gone)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_pairs(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(a / name)), np.asarray(Image.open(b / name))), name
    ma, mb = json.loads(fa["manifest.json"]), json.loads(fb["manifest.json"])
    assert ma["samples"] == mb["samples"] and ma["timesteps"] == mb["timesteps"]


@pytest.mark.slow
def test_two_processes_write_the_same_pairs_as_one(run: Path, tmp_path: Path) -> None:
    args = ["sample", "--run", str(run), "--num", "7", "--batch-size", "2", "--seed", "5", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two = torchrun([*args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("[defectgen] 7 pairs") == 1  # the main process reports once
    _same_pairs(tmp_path / "one", tmp_path / "two")
    assert not any(n.startswith(".") for n in _files(tmp_path / "two"))
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert [s["index"] for s in manifest["samples"]] == list(range(7))


@pytest.mark.slow
def test_killed_sampling_resumes_to_the_uninterrupted_result(run: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    out, num = tmp_path / "killed", 40
    args = ["sample", "--run", str(run), "--num", str(num), "--batch-size", "1", "--seed", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "defectgen.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list((out / ".done").glob("*.json"))) < 5 and proc.poll() is None:  # killed after 5 pairs, however slow
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "finished before the kill: make the job longer"
    done = sorted(int(p.stem) for p in (out / ".done").glob("*.json"))
    assert 5 <= len(done) < num
    # a torn write of the next pair: a truncated image and a temporary file, neither recorded as done
    nxt = max(done) + 1
    (out / "images" / f"{nxt:06d}.png").write_bytes(b"\x89PNG half")
    (out / "images" / f".{nxt:06d}.tmp123.png").write_bytes(b"\x89PNG")
    before = {i: (out / "images" / f"{i:06d}.png").stat().st_mtime_ns for i in done}
    with pytest.raises(DataError, match="unfinished `defectgen sample` folder"):
        open_dataset(out)  # a partial set is never read as data
    # other arguments are refused, the folder is kept
    assert main([*args[:-1], "--seed", "3", "--quiet", "--out", str(out)]) == 2
    assert "unfinished sample run with other arguments (seed)" in capsys.readouterr().err
    assert main([*args, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_pairs"] == len(done)
    assert {i: (out / "images" / f"{i:06d}.png").stat().st_mtime_ns for i in done} == before  # not redone
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    _same_pairs(out, tmp_path / "whole")
    assert not any(n.startswith(".") or "/." in n for n in _files(out))


def test_bf16_request_on_cpu_samples_in_fp32(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["sample", "--run", str(run), "--num", "2", "--seed", "1", "--quiet", "--sampler", "dpmsolver++",
            "--steps", "6"]
    assert main([*args, "--out", str(tmp_path / "a"), "--precision", "bf16"]) == 0
    assert "bf16 sampling needs CUDA" in capsys.readouterr().err  # a logged warning: stderr
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["precision"] == "fp32" and manifest["sampler"] == "dpmsolver++" and manifest["steps"] == 6
    _same_pairs(tmp_path / "a", tmp_path / "b")
