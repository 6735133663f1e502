"""Shared fixtures: tiny datasets written by the tests and a tiny generator config."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from defectgen.demo import make_demo_dataset

# Tiny models gain nothing from a second thread, and on a busy machine torch's thread barriers
# make every small op tens of times slower.
torch.set_num_threads(1)

SHARED_NEU = Path(__file__).resolve().parents[2] / "shared" / "data" / "neu_seg"

TINY_CONFIG = """
size: 16
image_channels: 1
large: {base_channels: 8, channel_mult: [1, 2], layers_per_block: 1, attention_levels: [1], norm_num_groups: 8, attention_head_dim: 8}
small: {base_channels: 8, channel_mult: [1], layers_per_block: 1, attention_levels: [], mid_attention: false, norm_num_groups: 8}
diffusion: {num_train_timesteps: 20}
train: {large_steps: 4, small_steps: 4, batch_size: 2, checkpoint_every: 2, keep_checkpoints: 2, sample_every: 4,
        sample_count: 2, sample_steps: 3, log_every: 1, warmup_steps: 1}
sample: {switch: 0.4, sampler: ddpm, batch_size: 4}
"""


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small procedural dataset in the index layout (images/, masks/, labels.txt)."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", per_class=3, size=24, seed=0)


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture(scope="session")
def neu_root() -> Path:
    if not SHARED_NEU.is_dir():
        pytest.skip(f"real data not available: {SHARED_NEU} is absent (only CI and developers have ../shared)")
    return SHARED_NEU


REPO = Path(__file__).resolve().parents[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 3600) -> "subprocess.CompletedProcess[str]":
    """Run ``defectgen <args>`` as ``nproc`` real CPU processes (gloo), one thread each.

    ``accelerate launch --cpu --num_processes 2`` silently starts one process, so the test goes
    through ``torchrun`` with ``ACCELERATE_USE_CPU=true``, as a user without GPUs would.
    """
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "defectgen.cli", "--", *args]  # "--": torchrun would take --run for its --run-path
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
