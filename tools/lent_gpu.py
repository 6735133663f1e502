"""The lent GPU machine's limits, shared by ``gpu_run.py`` and ``gpu_levers.py``.

A call returns at most 8 files from ``$OUT``, each under 16 MiB, at most two folders below it, with plain
names; a bare machine has no diffusers until the carried ``.whl/`` is installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20


def ensure_wheels() -> None:
    """A bare GPU machine lacks diffusers and friends: install the carried ``.whl/`` (as gpu_neu.sh does)."""
    import importlib.util

    wheels = sorted((REPO / ".whl").glob("*.whl"))
    if importlib.util.find_spec("diffusers") is not None or not wheels:
        return
    site = Path("/tmp/site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), *map(str, wheels)], check=True)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])


def out_dir() -> Path:
    out = Path(os.environ.get("OUT", "runs/gpu_out"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_out(out: Path) -> list[str]:
    """Problems that would stop files from coming back (too many, too big, odd names, too deep)."""
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = [f"{len(files)} files > {MAX_FILES}"] if len(files) > MAX_FILES else []
    for p in files:
        rel = p.relative_to(out)
        if p.stat().st_size >= MAX_FILE_BYTES:
            problems.append(f"{rel}: {p.stat().st_size} bytes >= 16 MiB")
        if len(rel.parts) > 3:
            problems.append(f"{rel}: more than two folders down")
        if not all(c.isalnum() or c in "._-" for part in rel.parts for c in part):
            problems.append(f"{rel}: name outside letters, digits, '.', '_', '-'")
    return problems
