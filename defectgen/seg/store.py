"""The resumable result store of every evaluation: finished cells on disk, keyed by what made them.

A cell is one trained-and-scored segmenter (``evaluate.train_and_score``). evaluate keeps one per
seed (``OUT/seeds/seed_<s>.json``), ablate one per grid point (``OUT/cells/<id>.json``), the steps
curve one per step count and seed (``OUT/cells/steps<N>__s<seed>.json``) and compare one evaluation
per row (``OUT/rows/<row>/eval.json``, its seeds in ``rows/<row>/seeds/``). Each file is written
atomically the moment its cell ends and holds the cell's key: a hash of everything that determines
its numbers except the code (:func:`result_key`, over :func:`protocol` settings). A rerun reads a
finished cell back instead of training it again, and refuses a cell of another key (the config,
the selection or the synthetic set changed) rather than mixing two protocols in one table.

    store = open_store(out, "cells", overwrite=False, what="ablation")
    key = result_key(seg=protocol(to_dict(cfg.seg)), seed=0, train=train_stems, test=test_stems)
    done = store.finished("unet-small__real__r0__s0", key) or store.keep("unet-small__real__r0__s0", {"key": key, ...})
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectgen.io import OutputExistsError, atomic_write_json

NO_EFFECT = ("threads", "eval_batch_size")  # settings that never change a result's numbers, only its speed


def protocol(settings: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """``settings`` (a config as a dict, at any depth) without :data:`NO_EFFECT` and ``drop``: the part
    that must match for two results to be the same experiment."""
    gone = (*NO_EFFECT, *drop)
    return {k: protocol(v) if isinstance(v, dict) else v for k, v in settings.items() if k not in gone}


def result_key(**what: Any) -> str:
    """Hash (16 hex digits) of everything that determines one result: its :func:`protocol` settings,
    seed, training and scored stems, synthetic manifest, ..."""
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ResultStore:
    """A folder of finished cells, one JSON file each (``<name>.json``; a name may hold a ``/``)."""

    folder: Path
    what: str = "cell"  # how messages name a cell: seed, cell, row

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def finished(self, name: str, key: str | None = None) -> dict[str, Any] | None:
        """The stored cell ``name``, or None when it has not finished; refuses a cell of another ``key``
        (None: the folder's identity stands for every cell, as in compare)."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            done = json.loads(path.read_text())
        except ValueError as err:
            raise OutputExistsError(f"{path}: not a readable {self.what} ({err}); use a new --out folder or "
                                    "pass --overwrite") from err
        if key is not None and done.get("key") != key:
            raise OutputExistsError(
                f"{path}: this {self.what} was computed with a different protocol (config, selection or synthetic "
                "set changed); use a new --out folder or pass --overwrite")
        return done

    def keep(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """Write a finished cell (atomically: a killed run never leaves half a file) and return it."""
        atomic_write_json(self.path(name), record)
        return record

    def discard_if_empty(self) -> None:
        """Remove the store, and its output folder, when nothing was ever written: a run refused before its
        first cell leaves no folder behind."""
        for folder in (self.folder, self.folder.parent):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def open_store(out: str | Path, sub: str, overwrite: bool, what: str, done_file: str | None = None,
               cell: str = "cell") -> ResultStore:
    """``OUT/<sub>/`` of a new output folder, or of an earlier run to continue.

    An earlier run continues when ``OUT/<sub>/`` exists (and, with ``done_file``, that file does not:
    a finished evaluation is not redone). Anything else in a non-empty OUT is refused unless
    ``overwrite``, which restarts the cells; the run then rewrites what else OUT holds.
    """
    out = Path(out)
    store = out / sub
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    resumable = store.is_dir() and not (done_file and (out / done_file).exists())
    if overwrite:
        shutil.rmtree(store, ignore_errors=True)
    elif not resumable and out.is_dir() and any(out.iterdir()):
        raise OutputExistsError(f"{out} exists and is not empty and holds no unfinished {what} ({sub}/); "
                                "choose another folder or pass --overwrite")
    store.mkdir(parents=True, exist_ok=True)
    return ResultStore(store, cell)
