"""A sample folder's names and its manifest: what a reader of any data folder needs to know of one.

A finished sample folder holds ``images/``, ``masks/`` and, written last, ``manifest.json``; an
unfinished one (a sampling job that was stopped) also holds ``.sample_job.json`` and ``.done/``.
``samples.py`` writes and reads whole sample folders; ``defectgen.export`` runs the sampling job.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from defectgen.errors import DataError

MANIFEST = "manifest.json"
IMAGES = "images"
MASKS = "masks"
JOB_FILE = ".sample_job.json"  # an unfinished sampling job: its arguments
DONE_DIR = ".done"  # an unfinished sampling job: one record per finished pair


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a finished sample folder (its manifest is written last)."""
    return (Path(folder) / MANIFEST).is_file()


def is_unfinished(folder: Path) -> bool:
    """Whether ``folder`` holds a sampling job that has not written its manifest yet."""
    return (Path(folder) / JOB_FILE).is_file() and not is_complete(folder)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a finished sample folder; a missing or damaged one is a ``DataError``."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found; a sample folder needs {IMAGES}/, {MASKS}/ and {MANIFEST}")
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: expected a JSON object")
    return manifest
