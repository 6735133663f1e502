"""The command line as a user meets it: one parser tree, ``python -m defectgen.cli`` and the console
script, one-line errors with exit code 2 (argparse's too), and ``sample`` defaulting to the run's settings."""
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

from defectgen.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "sample", "data", "inspect", "demo", "evaluate", "mix", "ablate", "copypaste", "metrics", "filter",
            "compare"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_one_parser_tree_with_one_set_and_one_overwrite() -> None:
    subs = _subparsers()
    assert list(subs) == COMMANDS
    for name, p in subs.items():
        flags = {s: a for a in p._actions for s in a.option_strings}
        if "--set" in flags:
            assert flags["--set"].dest == "set", name
        if "--overwrite" in flags:
            assert flags["--overwrite"].help == flags["--overwrite"].help.strip() and "start again" in flags["--overwrite"].help
        if "--device" in flags:
            assert flags["--device"].default is None, name
    assert {n for n, p in subs.items() if any("--set" in a.option_strings for a in p._actions)} == {
        "train", "inspect", "demo", "evaluate", "ablate", "metrics", "compare"}


def test_console_script_is_the_package_main() -> None:
    script = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["defectgen"]
    module, attr = script.split(":")
    assert getattr(import_module(module), attr) is main


@pytest.mark.parametrize("argv, needle", [
    ([], "required: command"),
    (["sample", "--run", "r", "--out", "o", "--num", "abc"], "--num: invalid int value: 'abc'"),
    (["train", "--data", "d", "--out", "o", "--resume", "newest"], "--resume: invalid choice: 'newest'"),
    (["evaluate", "--data", "d", "--out", "o", "--seeds", "0,x"], "--seeds expects comma-separated non-negative integers"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["sample", "--run", "r"], "required: --out"),
])
def test_python_m_defectgen_cli_gives_one_line_and_exit_2(argv: list[str], needle: str, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "defectgen.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("defectgen: error:") and needle in lines[0], proc.stderr


def test_help_still_prints_and_exits_0(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["sample", "--help"])
    assert stop.value.code == 0 and "--switch" in capsys.readouterr().out


def test_every_handler_returns_an_int(demo_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "--data", str(demo_data), "--shots", "1"]) == 0
    assert "3 images selected" in capsys.readouterr().out
    assert main(["data", "--shots", "1"]) == 2  # no data: named by its flag
    assert "pass --data DIR" in capsys.readouterr().err


@pytest.mark.parametrize("err, user", [
    (ValueError("a bug"), False), (KeyError("k"), False), (OSError(errno.EBADF, "Bad file descriptor"), False),
    (OSError(errno.ENOSPC, "No space left on device", "out/x.png"), True), (FileNotFoundError("gone"), True),
    (PermissionError(errno.EACCES, "Permission denied", "out"), True),
])
def test_only_a_users_errors_are_one_line(err: Exception, user: bool) -> None:
    from defectgen.cli.main import is_user_error
    from defectgen.errors import ConfigError, DataError, DefectgenError, OutputWriteError, RunError, UsageError

    assert is_user_error(err) == user
    for cls in (ConfigError, DataError, RunError, UsageError, OutputWriteError):
        assert issubclass(cls, DefectgenError) and is_user_error(cls("x"))


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, demo_data: Path) -> None:
    """Anything but a user's error leaves ``main`` as it is: ``python -m defectgen.cli`` then prints the
    traceback and exits with 1."""
    from defectgen.cli import generator

    def broken(args: argparse.Namespace) -> int:
        raise ValueError("an internal mistake")

    monkeypatch.setattr(generator, "cmd_data", broken)
    with pytest.raises(ValueError, match="an internal mistake"):
        main(["data", "--data", str(demo_data)])


def test_the_library_logs_and_the_command_line_shows_it_as_before(capsys: pytest.CaptureFixture) -> None:
    import logging

    from defectgen import logs

    logs.configure()
    logging.getLogger("defectgen.data.selection").info("3 pairs")
    logging.getLogger("defectgen.export").warning("bf16 needs CUDA")
    logging.getLogger("defectgen.export").debug("not shown")
    assert capsys.readouterr().err == "[data] 3 pairs\n[defectgen] bf16 needs CUDA\n"
    logs.configure(logging.DEBUG)
    logging.getLogger("defectgen.run").debug("now shown")
    assert capsys.readouterr().err == "[defectgen] now shown\n"
    logs.configure()
    assert build_parser().parse_args(["sample", "--run", "r", "--out", "o", "-v"]).verbose


def test_sample_takes_the_runs_sample_config_as_defaults(tmp_path: Path, demo_data: Path, tiny_config: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--data", str(demo_data), "--shots", "1", "--out", str(run),
                 "--quiet", "--set", "train.sample_every=0", "--set", "sample.sampler=ddim", "--set", "sample.steps=3",
                 "--set", "sample.batch_size=1"]) == 0
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert a["sampler"] == "ddim" and a["steps"] == 3 and a["switch"] == 0.4
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(tmp_path / "b"), "--quiet",
                 "--sampler", "ddpm", "--steps", "4", "--switch", "0.5"]) == 0
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert b["sampler"] == "ddpm" and b["steps"] == 4 and b["switch"] == 0.5
    # a pipeline folder of an older defectgen: class names in class_map.json, not in model_index.json
    old = tmp_path / "old_pipeline"
    shutil.copytree(run / "pipeline", old)
    index = json.loads((old / "model_index.json").read_text())
    names = index.pop("class_names")
    index.pop("ignore_index")
    (old / "model_index.json").write_text(json.dumps(index))
    (old / "class_map.json").write_text(json.dumps({"names": names, "ignore_index": 255}))
    assert main(["sample", "--run", str(old), "--num", "1", "--out", str(tmp_path / "c"), "--quiet", "--steps", "2"]) == 0
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["class_map"]["names"] == names
