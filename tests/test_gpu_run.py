"""tools/gpu_run.py on CPU with a stand-in $OUT: what the GPU machine would return, and the way back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectgen.pipeline import DefectGenPipeline

from conftest import REPO, TINY_CONFIG

SCRIPT = REPO / "tools" / "gpu_run.py"


def gpu_run(args: list[str], out: Path) -> None:
    env = {**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]


def check_returnable(out: Path) -> list[Path]:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8
    for p in files:
        assert p.stat().st_size < 16 * 2**20 and len(p.relative_to(out).parts) <= 3
    return files


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> tuple[Path, Path]:
    """The train phase of a tiny generator: (work folder, returned files)."""
    tmp = tmp_path_factory.mktemp("gpu_run")
    (tmp / "tiny.yaml").write_text(TINY_CONFIG)
    out, work = tmp / "out", tmp / "work"
    gpu_run(["train", "--config", str(tmp / "tiny.yaml"), "--data", str(demo_data), "--work", str(work),
             "--seconds", "86400", "--shard-mb", "0.05"], out)  # no time limit: the tiny run finishes
    return work, out


def test_train_phase_returns_fp16_shards_that_rebuild_the_pipeline(trained: tuple[Path, Path], tmp_path: Path) -> None:
    work, out = trained
    check_returnable(out)
    phase = json.loads((out / "phase_train.json").read_text())
    assert phase["finished"] and phase["out_problems"] == []
    shards = sorted(p.name for p in out.glob("weights-*.safetensors"))
    assert shards == sorted(phase["weights"]) and any("-00002-of-" in s for s in shards)  # the 0.05 MB cap split unet
    assert all((out / s).stat().st_size < 0.05e6 + 2e4 for s in shards)
    # back on the developer's machine: a run folder whose pipeline equals the trained one to fp16 precision
    gpu_run(["unpack-weights", "--from", str(out), "--to", str(tmp_path / "back")], out)
    back = tmp_path / "back"
    assert (back / "config.yaml").read_text() == (work / "run" / "config.yaml").read_text()
    assert (back / "large" / "log.jsonl").read_text() == (work / "run" / "large" / "log.jsonl").read_text()
    a = DefectGenPipeline.from_pretrained(work / "run" / "pipeline")
    b = DefectGenPipeline.from_pretrained(back / "pipeline")
    assert b.class_map.names == a.class_map.names and b.config.switch == a.config.switch
    for name in ("unet", "unet_2"):
        for key, p in getattr(a, name).state_dict().items():
            q = getattr(b, name).state_dict()[key]
            assert q.dtype == torch.float32
            torch.testing.assert_close(q, p.half().float(), rtol=0, atol=0)


def test_sample_phase_returns_npz_parts_that_rebuild_the_sample_folder(trained: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    work = trained[0]
    sample = ["sample", "--work", str(work), "--num", "60", "--batch-size", "1", "--shard-mb", "0.012",
              "--seconds", "86400"]
    gpu_run([*sample, "--stop-after-pairs", "5"], tmp_path / "o2")  # cut (by pairs, as --seconds would): packs what is done
    cut = json.loads((tmp_path / "o2" / "phase_sample.json").read_text())
    assert cut["finished"] is False and cut["parts"]
    out = tmp_path / "o3"
    gpu_run(sample, out)  # the next call finishes the same job
    check_returnable(out)
    phase = json.loads((out / "phase_sample.json").read_text())
    assert phase["finished"] and phase["out_problems"] == [] and len(phase["parts"]) >= 2
    gpu_run(["unpack-samples", "--from", str(out), "--to", str(tmp_path / "back")], out)
    made, back = work / "samples", tmp_path / "back"
    assert (back / "manifest.json").read_bytes() == (made / "manifest.json").read_bytes()
    names = sorted(p.name for p in (made / "images").iterdir())
    assert names == sorted(p.name for p in (back / "images").iterdir()) and len(names) == 60
    for sub in ("images", "masks"):
        for n in names:
            assert np.array_equal(np.asarray(Image.open(made / sub / n)), np.asarray(Image.open(back / sub / n)))


def test_bench_phase_returns_its_json(tmp_path: Path) -> None:
    """The GPU section's code on tiny networks on the CPU (numbers meaningless, the path checked)."""
    out = tmp_path / "out"
    gpu_run(["bench", "--work", str(tmp_path / "work"), "--seconds", "86400", "--bench-args", "--quick", "--device", "cpu"],
            out)
    check_returnable(out)
    assert json.loads((out / "phase_bench.json").read_text())["finished"]
    gpu = json.loads((out / "bench.json").read_text())["gpu"]
    assert gpu["bf16_matmul_tflops"] > 0 and gpu["16px"]["train"]["ratio"] > 0
    assert gpu["16px"]["sample_images_per_s"] > 0
