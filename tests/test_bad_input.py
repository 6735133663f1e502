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
import yaml
from conftest import TINY_CONFIG

from defectgen.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict[str, Path]:
    """A tiny trained run and a small sample folder of it, shared by the rows below."""
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


# ---- round 3 (issue 20): the last tracebacks, silent accepts and leftovers, each through the real command ----


def _copy_data(t: dict[str, Path], tmp: Path) -> Path:
    data = tmp / "data"
    shutil.copytree(t["data"], data)
    return data


def _unet_config(pipe: Path, **entries: object) -> None:
    path = pipe / "unet" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **entries}))


def _metrics(*extra: str, syn: Callable[[dict[str, Path], Path], Path] | None = None) -> Callable:
    return lambda t, tmp: ["metrics", "--real", str(t["data"]), "--synthetic", str(syn(t, tmp) if syn else t["syn"]),
                           "--out", str(tmp / "out"), "--no-mask-agreement", *extra]


def _manifest(edit: Callable[[dict], None]) -> Callable[[dict[str, Path], Path], Path]:
    """A copy of the sample folder whose manifest.json was edited by hand."""
    def build(t: dict[str, Path], tmp: Path) -> Path:
        syn = tmp / "syn"
        shutil.copytree(t["syn"], syn)
        manifest = json.loads((syn / "manifest.json").read_text())
        edit(manifest)
        (syn / "manifest.json").write_text(json.dumps(manifest))
        return syn
    return build


def _pickle(tmp: Path) -> str:
    """A file that creates ``tmp/pwned`` when unpickled (the test checks it never exists)."""
    import pickle

    class _Creates:
        def __reduce__(self):
            return (open, (str(tmp / "pwned"), "w"))

    (tmp / "inception.pth").write_bytes(pickle.dumps(_Creates()))
    return str(tmp / "inception.pth")


def _compare(**keys: object) -> Callable[[dict[str, Path], Path], list[str]]:
    return lambda t, tmp: ["compare", "--config", _write(tmp / "c.yaml", yaml.safe_dump(  # float("nan") -> .nan
        {"data": str(t["data"]), "run": str(t["run"]), "generator_config": str(t["config"]), "split": None, "shots": 1,
         **keys})), "--out", str(tmp / "out")]


def _damaged_checkpoints(t: dict[str, Path], tmp: Path) -> list[str]:
    """The trained run without its final models, every checkpoint's optimizer.pt and ema.pt damaged."""
    run = tmp / "out"
    shutil.copytree(t["run"], run)
    for folder in [run / "pipeline", *run.glob("*/final")]:
        shutil.rmtree(folder)
    for ckpt in run.glob("*/checkpoints/step_*"):
        (ckpt / "optimizer.pt").write_bytes(b"\x80\x04 not a torch file")
        (ckpt / "ema.pt").write_bytes(b"")
    return ["train", "--config", str(t["config"]), "--data", str(t["data"]), "--shots", "1", "--out", str(run), "--quiet",
            "--set", "train.sample_every=0", "--resume", "latest"]


def _loop_image(t: dict[str, Path], tmp: Path) -> Path:
    data = _copy_data(t, tmp)
    image = sorted((data / "images").iterdir())[0]
    image.unlink()
    image.symlink_to(image.name)  # a link to itself
    return data


def _linked_folder(t: dict[str, Path], tmp: Path) -> Path:
    data = _copy_data(t, tmp)
    (tmp / "more").mkdir()
    (data / "images" / "more").symlink_to(tmp / "more")
    return data


def _bad_labels(t: dict[str, Path], tmp: Path) -> Path:
    data = _copy_data(t, tmp)
    (data / "labels.txt").write_bytes(b"__ignore__\n_background_\n\xff\xfescratch\nspot\npatch\n")
    return data


def _pickled_final(t: dict[str, Path], tmp: Path) -> list[str]:
    run = tmp / "out"
    shutil.copytree(t["run"], run)
    weights = run / "large" / "final" / "diffusion_pytorch_model.safetensors"
    weights.with_suffix(".bin").write_bytes(Path(_pickle(tmp)).read_bytes())
    weights.unlink()
    shutil.rmtree(run / "pipeline")
    return ["train", "--config", str(t["config"]), "--data", str(t["data"]), "--shots", "1", "--out", str(run), "--quiet",
            "--set", "train.sample_every=0"]


def _kolektor(suffix: str) -> Callable[[dict[str, Path], Path], Path]:
    def build(t: dict[str, Path], tmp: Path) -> Path:
        from test_layouts import make_kolektor

        root = make_kolektor(tmp / "KolektorSDD")
        for mask in root.rglob("*_label.bmp"):
            mask.rename(mask.with_name(mask.name.replace("_label", suffix)))
        return root
    return build


def _mask16(t: dict[str, Path], tmp: Path) -> Path:
    import numpy as np
    from PIL import Image

    data = _copy_data(t, tmp)
    (data / "labels.txt").unlink()
    for m in (data / "masks").iterdir():
        Image.fromarray(((np.asarray(Image.open(m)) > 0) * 65535).astype(np.uint16)).save(m)
    return data


def _guided(*extra: str) -> Callable[[dict[str, Path], Path], list[str]]:
    return lambda t, tmp: ["sample", "--run", str(t["run"]), "--out", str(tmp / "out"), "--quiet",
                           "--onto", str(t["data"] / "good"), *extra]


BAD_INPUTS += [
    # code execution: a weights file torch-fidelity would unpickle
    ("metrics --inception-weights <a pickle>", lambda t, tmp: _metrics("--inception-weights", _pickle(tmp))(t, tmp),
     "inception.pth: holds pickled objects other than tensors"),
    ("metrics --set inception_weights=<a pickle>", lambda t, tmp: _metrics(
        "--feature-extractor", "inception-v3-compat", "--set", f"inception_weights={_pickle(tmp)}")(t, tmp),
     "inception.pth: holds pickled objects other than tensors"),
    # tracebacks
    ("train --set train.batch_size=1000000000000", _train("train.batch_size=1000000000000"), "'train.batch_size': a batch"),
    ("train --set diffusion.num_train_timesteps=100000000000", _train("diffusion.num_train_timesteps=100000000000"),
     "'diffusion.num_train_timesteps': must be at most 100000"),
    ("sample --num 99999999999999999999999", lambda t, tmp: _sample()(t, tmp)[:4] + ["99999999999999999999999", "--out",
                                                                                       str(tmp / "out")], "--num"),
    ("sample: model_index.json image_channels 0", _sample_from(lambda p: _edit_index(p, image_channels=0)), "image_channels"),
    ("sample: model_index.json unet transformers.AutoModel", _sample_from(lambda p: _edit_index(p, unet=["transformers",
                                                                                                          "AutoModel"])),
     "component 'unet' is ['transformers', 'AutoModel']"),
    ("evaluate --ratio inf", _evaluate("--ratio", "inf"), "--ratio: must be a finite number"),
    ("mix --ratio inf", lambda t, tmp: ["mix", "--data", str(t["data"]), "--shots", "1", "--synthetic", str(t["syn"]),
                                        "--ratio", "inf", "--out", str(tmp / "out")], "--ratio: must be a finite number"),
    ("evaluate --set seg.size=1000000", _evaluate("--set", "seg.size=1000000"), "'seg.size': must be at most"),
    ("copypaste --size 1000000", lambda t, tmp: ["copypaste", "--data", str(t["data"]), "--num", "2", "--size", "1000000",
                                                 "--out", str(tmp / "out")], "--size must be at most"),
    ("metrics --size 1000000", _metrics("--size", "1000000"), "'size': must be at most"),
    ("sample --onto good --classes scratch=99999999999999999999", _guided("--classes", "scratch=99999999999999999999"),
     "--classes: count for 'scratch'"),
    # wrongly accepted
    ("train --set train.lr=inf", _train("train.lr=inf"), "'train.lr': must be a finite number"),
    ("train: YAML lr: .inf", _train(config=TINY_CONFIG.replace("warmup_steps: 1}", "warmup_steps: 1, lr: .inf}")),
     "'train.lr': must be a finite"),
    ("train --set train.weight_decay=inf", _train("train.weight_decay=inf"), "'train.weight_decay': must be a finite"),
    ("train: the loss becomes non-finite (train.lr=1e30)", _train("train.lr=1e30", "train.sample_every=0"),
     "large stage: the loss became nan at step"),
    ("train --threshold -1", lambda t, tmp: _train()(t, tmp) + ["--threshold", "-1"], "--threshold"),
    ("sample --classes ''", _sample("--classes", ""), "--classes needs a guided mode"),
    ("sample --onto good --classes ''", _guided("--num", "2", "--classes", ""), "--classes: no class named"),
    ("sample --onto good --classes scratch=1,scratch=2", _guided("--classes", "scratch=1,scratch=2"), "named twice"),
    ("sample --onto good --blend 100000", _guided("--num", "2", "--blend", "100000"), "--blend"),
    ("sample: unet/config.json sample_size 48", _sample_from(lambda p: _unet_config(p, sample_size=48)),
     "the UNets' sample_size differ (unet 48, unet_2 16)"),
    ("metrics: manifest \"samples\": 5", _metrics(syn=_manifest(lambda m: m.update(samples=5))),
     "'samples' must be a list"),
    ("metrics: manifest file ../../../../etc/passwd", _metrics(syn=_manifest(
        lambda m: m["samples"][0].update(file="../../../../etc/passwd"))), "is not a plain file name"),
    ("metrics --set kid_subsets=0", _metrics("--set", "kid_subsets=0"), "'kid_subsets'"),
    ("filter: manifest file ../..", lambda t, tmp: ["filter", "--real", str(t["data"]), "--synthetic", str(_manifest(
        lambda m: m["samples"][0].update(file="../.."))(t, tmp)), "--out", str(tmp / "out")], "is not a plain file name"),
    ("ablate: ratios [.nan]", lambda t, tmp: ["ablate", "--config", _write(tmp / "a.yaml", (
        f"data: {t['data']}\nsplit: null\nshots: 1\nratios: [.nan]\nmodels: [unet-tiny]\nseeds: [0]\n")),
        "--out", str(tmp / "out")], "'ratios[0]': must be a finite number"),
    ("compare: num_samples 0", _compare(num_samples=0), "'num_samples'"),
    ("compare: num_samples -4", _compare(num_samples=-4), "'num_samples'"),
    ("compare: steps -3", _compare(steps=-3), "'steps'"),
    ("train --resume latest: every checkpoint's optimizer.pt and ema.pt damaged", _damaged_checkpoints,
     "none of the 2 checkpoints can be read"),
    # refused, but files were left behind
    ("sample --steps 1001", _sample("--steps", "1001"), "--steps"),
    ("sample --seed -1", _sample("--seed", "-1"), "--seed: a seed must not be negative"),
    ("sample: model_index.json switch 7.5", _sample_from(lambda p: _edit_index(p, switch=7.5)), "switch must be"),
    ("compare: switches [1.5]", _compare(switches=[1.5]), "'switches[0]'"),
    ("compare: switches [.nan]", _compare(switches=[float("nan")]), "'switches[0]': must be a finite number"),
    ("compare: sample_batch_size 0", _compare(sample_batch_size=0), "'sample_batch_size'"),
    ("evaluate --baseline <a YAML file>", lambda t, tmp: _evaluate("--baseline", str(t["config"]))(t, tmp),
     "not a readable results.json"),
    # consistency and messages
    ("train --seed -1", lambda t, tmp: _train()(t, tmp) + ["--seed", "-1"], "--seed: a seed must not be negative"),
    ("mix --mix-seed -1", lambda t, tmp: ["mix", "--data", str(t["data"]), "--shots", "1", "--synthetic", str(t["syn"]),
                                          "--ratio", "1", "--mix-seed", "-1", "--out", str(tmp / "out")],
     "--mix-seed: a seed must not be negative"),
    ("evaluate --seeds 0,-1", _evaluate("--seeds", "0,-1"), "--seeds"),
    ("train: labels.txt not UTF-8", lambda t, tmp: ["train", "--config", str(t["config"]), "--data", str(_bad_labels(t, tmp)),
                                                    "--out", str(tmp / "out"), "--quiet"], "labels.txt: not UTF-8"),
    ("metrics --set kid_subset_size=-1 (was: Negative dimensions)", _metrics("--set", "kid_subset_size=-1"),
     "'kid_subset_size'"),
    ("train --out names a file (was: cannot write (File exists))", lambda t, tmp: _train()(t, tmp)[:-3] + [
        "--out", str(_file(tmp)), "--quiet"], "afile: cannot write (a file of that name is in the way, not a folder)"),
    ("train: images/ holds a symlinked folder", lambda t, tmp: ["train", "--config", str(t["config"]), "--data",
                                                               str(_linked_folder(t, tmp)), "--out", str(tmp / "out")],
     "more/ (a symbolic link to"),
    ("train: a pickled .bin in final/", _pickled_final, "diffusion_pytorch_model.bin beside it is a pickled weights file"),
    ("data: masks paired as X + X_seg", lambda t, tmp: ["data", "--data", str(_kolektor("_seg")(t, tmp))],
     "pass --mask-suffix _seg"),
]

# Rows whose command is refused (exit 2, one line) but keeps what it wrote before the refusal: the run folder of
# a training whose loss became NaN keeps its config and the checkpoints before that step (the test of train.py
# checks that nothing from the diverged step is written).
KEEPS_OUT = {"train: the loss becomes non-finite (train.lr=1e30)"}

# Inputs that were refused or taken silently and must now be read (exit 0), or read with a named warning.
ACCEPTED = [
    ("data: 16-bit 0/65535 binary masks", lambda t, tmp: ["data", "--data", str(_mask16(t, tmp))],
     "masks read as binary, one class 'defect'"),
    ("data --mask-suffix _label on KolektorSDD", lambda t, tmp: ["data", "--data", str(_kolektor("_label")(t, tmp)),
                                                                  "--mask-suffix", "_label"],
     "side-by-side layout: 12 images with their masks beside them (mask suffix '_label')"),
    ("data: an image that is a symlink loop (warning names the image)",
     lambda t, tmp: ["data", "--data", str(_loop_image(t, tmp))],
     "images/demo_0000.png: a symbolic link that loops (it points back to itself)"),
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


def out_folder(argv: list[str]) -> Path | None:
    """The command's --out (the run folder for train), or None for a command without one."""
    return Path(argv[argv.index("--out") + 1]) if "--out" in argv else None


def snapshot(path: Path | None) -> object:
    """What ``path`` holds: None if absent, a file's bytes, or a folder's files with their contents' times."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("row, argv, needle", [pytest.param(i, a, n, id=i) for i, a, n in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(row: str, argv: Callable, needle: str, trained: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    if "cuda" in needle and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = argv(trained, tmp_path)
    out = out_folder(args)
    before = snapshot(out)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("defectgen: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    if row not in KEEPS_OUT:  # nothing written, changed or removed in --out: the next valid command finds it as it was
        assert snapshot(out) in (before, {}), snapshot(out)
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path / "v").exists()  # nothing escaped its folder
    assert not (tmp_path / "pwned").exists()  # no planted pickle ran


@pytest.mark.parametrize("argv, needle", [pytest.param(a, n, id=i) for i, a, n in ACCEPTED])
def test_input_refused_or_taken_silently_before_is_read(argv: Callable, needle: str, trained: dict[str, Path],
                                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = argv(trained, tmp_path)
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr()
    assert needle in out.out + out.err, out.out + out.err


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
