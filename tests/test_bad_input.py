"""Malformed input through the real entry point: exit code 2, one line naming the flag or file, no
traceback, and nothing complete-looking left in --out. One row per bad input, on tiny models."""
from __future__ import annotations

import errno
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Callable

import pytest
import torch

from defectgen.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict[str, Path]:
    """A tiny trained run and a small sample folder of it, shared by the rows below."""
    from conftest import TINY_CONFIG

    root = tmp_path_factory.mktemp("bad_input")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    run = root / "run"
    assert main(["train", "--config", str(cfg), "--data", str(demo_data), "--shots", "1", "--out", str(run),
                 "--quiet", "--set", "train.sample_every=0"]) == 0
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(root / "syn"), "--quiet"]) == 0
    return {"root": root, "config": cfg, "run": run, "syn": root / "syn", "data": demo_data}


def _pipeline_copy(t: dict[str, Path], tmp: Path, damage: Callable[[Path], None]) -> Path:
    pipe = tmp / "pipeline"
    shutil.copytree(t["run"] / "pipeline", pipe)
    damage(pipe)
    return pipe


def _weights(pipe: Path) -> Path:
    return pipe / "unet" / "diffusion_pytorch_model.safetensors"


def _edit_index(pipe: Path, **entries: object) -> None:
    index = json.loads((pipe / "model_index.json").read_text())
    (pipe / "model_index.json").write_text(json.dumps({**index, **entries}))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-200])


def _bomb_png(path: Path, side: int = 14000) -> None:
    """A 1-bit PNG of side² pixels (over twice PIL's limit): tiny on disk, huge when decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj()
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _bomb_data(t: dict[str, Path], tmp: Path) -> Path:
    data = tmp / "data"
    shutil.copytree(t["data"], data)
    first = sorted((data / "images").iterdir())[0]
    _bomb_png(first)
    return data


def _file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


def _sample(*extra: str) -> Callable[[dict[str, Path], Path], list[str]]:
    return lambda t, tmp: ["sample", "--run", str(t["run"]), "--num", "2", "--out", str(tmp / "out"), "--quiet", *extra]


def _sample_from(damage: Callable[[Path], None]) -> Callable[[dict[str, Path], Path], list[str]]:
    return lambda t, tmp: ["sample", "--run", str(_pipeline_copy(t, tmp, damage)), "--num", "2",
                           "--out", str(tmp / "out"), "--quiet"]


def _train(*sets: str, config: str | None = None) -> Callable[[dict[str, Path], Path], list[str]]:
    def argv(t: dict[str, Path], tmp: Path) -> list[str]:
        cfg = str(t["config"]) if config is None else _write(tmp / "c.yaml", config)
        overrides = [a for s in sets for a in ("--set", s)]
        return ["train", "--config", cfg, "--data", str(t["data"]), "--out", str(tmp / "out"), "--quiet", *overrides]
    return argv


def _evaluate(*extra: str) -> Callable[[dict[str, Path], Path], list[str]]:
    return lambda t, tmp: ["evaluate", "--data", str(t["data"]), "--shots", "1", "--model", "unet-tiny", "--seeds", "0",
                           "--out", str(tmp / "out"), *extra]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# (row id, argv builder, text the one error line must contain)
BAD_INPUTS = [
    ("sample --switch 1.5", _sample("--switch", "1.5"), "--switch"),
    ("sample --switch -0.1", _sample("--switch", "-0.1"), "--switch"),
    ("sample --batch-size 0", _sample("--batch-size", "0"), "--batch-size"),
    ("sample --num 0", lambda t, tmp: _sample()(t, tmp)[:4] + ["0", "--out", str(tmp / "out")], "--num"),
    ("sample --steps -3", _sample("--steps", "-3"), "--steps"),
    ("sample --steps 0", _sample("--steps", "0"), "--steps"),
    ("sample --device cuda (no GPU)", _sample("--device", "cuda"), "--device cuda"),
    ("sample --device nonsense", _sample("--device", "tpu9"), "--device tpu9"),
    ("sample --out names a file", lambda t, tmp: _sample()(t, tmp)[:5] + ["--out", str(_file(tmp))], "not a folder"),
    ("sample: invalid model_index.json", _sample_from(lambda p: (p / "model_index.json").write_text("{nope")),
     "model_index.json"),
    ("sample: empty model_index.json", _sample_from(lambda p: (p / "model_index.json").write_text("")),
     "model_index.json: not valid JSON (the file is empty)"),
    ("sample: truncated safetensors", _sample_from(lambda p: _truncate(_weights(p))), "diffusion_pytorch_model.safetensors"),
    ("sample: empty safetensors", _sample_from(lambda p: _weights(p).write_bytes(b"")), "diffusion_pytorch_model.safetensors"),
    ("sample: garbage safetensors", _sample_from(lambda p: _weights(p).write_bytes(b"\x07garbage" * 50)),
     "diffusion_pytorch_model.safetensors"),
    ("sample: missing unet/ folder", _sample_from(lambda p: shutil.rmtree(p / "unet")), "unet"),
    ("sample: no class names", _sample_from(lambda p: _edit_index(p, class_names=None)), "no class_names"),
    ("sample: UNet channels != image + classes", _sample_from(lambda p: _edit_index(p, class_names=["a", "b"])),
     "image channels + 2 classes"),
    ("train --set train.batch_size=0", _train("train.batch_size=0"), "train.batch_size"),
    ("train --set size=7", _train("size=7"), "'size'"),
    ("train --set train.lr=-1", _train("train.lr=-1"), "train.lr"),
    ("train --set diffusion.prediction_type=foo", _train("diffusion.prediction_type=foo"), "prediction_type"),
    ("train --set train.mixed_precision=fp8", _train("train.mixed_precision=fp8"), "mixed_precision"),
    ("train --set train.large_steps=-5", _train("train.large_steps=-5"), "train.large_steps"),
    ("train --set train.small_steps=0", _train("train.small_steps=0"), "train.small_steps"),
    ("train --set sample.switch=2", _train("sample.switch=2"), "sample.switch"),
    ("train: empty YAML", _train(config=""), "empty"),
    ("train: decompression-bomb image", lambda t, tmp: ["train", "--config", str(t["config"]), "--data",
                                                        str(_bomb_data(t, tmp)), "--out", str(tmp / "out"), "--quiet"],
     "decompression bomb"),
    ("train: '../' class name", lambda t, tmp: ["train", "--config", str(t["config"]), "--data",
                                                 str(_labels(t, tmp, "__ignore__\n_background_\n../up\nspot\npatch\n")),
                                                 "--out", str(tmp / "out"), "--quiet"], "labels.txt: class name '../up'"),
    ("train: masks with only ignore pixels", lambda t, tmp: ["train", "--config", str(t["config"]), "--data",
                                                          str(_only_ignore(t, tmp)), "--out", str(tmp / "out"), "--quiet"],
     "no defect pixel"),
    ("train: mask id 200, no names file", lambda t, tmp: ["train", "--config", str(t["config"]), "--data",
                                                          str(_id_200(t, tmp)), "--out", str(tmp / "out"), "--quiet"],
     "[200]"),
    ("evaluate --set seg.steps=-1", _evaluate("--set", "seg.steps=-1"), "seg.steps"),
    ("evaluate --set seg.batch_size=0", _evaluate("--set", "seg.batch_size=0"), "seg.batch_size"),
    ("evaluate --set seg.size=7", _evaluate("--set", "seg.size=7"), "seg.size"),
    ("evaluate --device cuda (no GPU)", _evaluate("--device", "cuda"), "--device cuda"),
    ("evaluate --set ratio=-1", _evaluate("--set", "ratio=-1"), "'ratio'"),
    ("evaluate --negatives -1", _evaluate("--negatives", "-1"), "'negatives'"),
    ("evaluate --ratio -1", _evaluate("--ratio", "-1"), "'ratio'"),
    ("inspect --num-classes 0", lambda t, tmp: ["inspect", "--config", str(t["config"]), "--num-classes", "0"],
     "--num-classes"),
    ("copypaste --size 0", lambda t, tmp: ["copypaste", "--data", str(t["data"]), "--num", "2", "--size", "0",
                                           "--out", str(tmp / "out")], "--size"),
    ("metrics: missing Inception weights", lambda t, tmp: ["metrics", "--real", str(t["data"]), "--synthetic", str(t["syn"]),
                                                           "--out", str(tmp / "out"), "--no-mask-agreement",
                                                           "--inception-weights", str(tmp / "none.pth")], "none.pth"),
    ("ablate: '../' source name", lambda t, tmp: ["ablate", "--config", _write(tmp / "a.yaml", json.dumps(
        {"data": str(t["data"]), "sources": {"../../evil": str(t["syn"])}, "ratios": [0, 1], "models": ["unet-tiny"],
         "seeds": [0], "split": None, "shots": 1})), "--out", str(tmp / "out")], "'../../evil'"),
    ("compare: '../' variant name", lambda t, tmp: ["compare", "--config", _write(tmp / "c.yaml", json.dumps(
        {"data": str(t["data"]), "run": str(t["run"]), "split": None, "shots": 1,
         "small_variants": {"../v": ["base_channels=8"]}})),
                                                    "--out", str(tmp / "out")], "'../v'"),
]


def _remask(t: dict[str, Path], tmp: Path, change: Callable, names: bool) -> Path:
    import numpy as np
    from PIL import Image

    data = tmp / "data"
    shutil.copytree(t["data"], data)
    if not names:
        (data / "labels.txt").unlink()
    for m in (data / "masks").iterdir():
        Image.fromarray(change(np.asarray(Image.open(m)).copy())).save(m)
    return data


def _only_ignore(t: dict[str, Path], tmp: Path) -> Path:
    return _remask(t, tmp, lambda a: (a > 0).astype(a.dtype) * 255, names=True)  # 255 = ignore


def _id_200(t: dict[str, Path], tmp: Path) -> Path:
    return _remask(t, tmp, lambda a: (a > 0).astype(a.dtype) * 200, names=False)


def _labels(t: dict[str, Path], tmp: Path, text: str) -> Path:
    data = tmp / "data"
    shutil.copytree(t["data"], data)
    (data / "labels.txt").write_text(text)
    return data


@pytest.mark.parametrize("argv, needle", [pytest.param(a, n, id=i) for i, a, n in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(argv: Callable, needle: str, trained: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    if "cuda" in needle and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = argv(trained, tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("defectgen: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    out = tmp_path / "out"
    if out.is_dir():  # nothing that looks like a finished output
        names = {p.name for p in out.rglob("*")}
        assert not names & {"manifest.json", "model_index.json", "results.json", "report.md", "config.yaml"}, names
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path / "v").exists()  # nothing escaped its folder


def test_full_disk_during_a_checkpoint_is_one_line(tmp_path: Path, demo_data: Path, tiny_config: Path,
                                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("defectgen.train.torch.save", no_space)
    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--data", str(demo_data), "--shots", "1", "--out", str(run),
                 "--quiet", "--stage", "large", "--set", "train.sample_every=0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"defectgen: error: {run / 'large/checkpoints/step_0000002'}: cannot write (disk full)"
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))  # the half-written checkpoint is gone
