"""Few-shot selection: the same ``SelectionConfig`` picks the same real images for every command.

``train``, ``evaluate``, ``mix``, ``copypaste``, ``metrics`` and ``filter`` build it from their
flags (``--data/--split/--shots/--seed/--list``...), ``ablate`` and ``compare`` from their config
files (keys ``data``, ``split``, ``shots``, ``selection_seed``, ``list_file``).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from defectgen.data.errors import DataError, read_text
from defectgen.data.dataset import open_dataset
from defectgen.data.formats import DataFormat
from defectgen.data.records import DefectDataset, PairRecord
from defectgen.data.loading import load_pair, present_classes

logger = logging.getLogger(__name__)


def log_report(ds: DefectDataset) -> None:
    """What the reader found (``DefectDataset.report``), one record per line; ``warning: ...`` lines as warnings."""
    for line in ds.report:
        (logger.warning if line.startswith("warning:") else logger.info)(line)


def read_stem_list(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: stem list not found")
    stems = [s.strip() for s in read_text(path).split() if s.strip()]
    if not stems:
        raise DataError(f"{path}: stem list is empty")
    return stems


def _split_records(ds: DefectDataset, split: str | None) -> list[PairRecord]:
    if split is None:
        return list(ds.records)
    if split not in ds.splits:
        raise DataError(f"{ds.root}: no split '{split}' (available: {', '.join(sorted(ds.splits)) or 'none'})")
    keep = set(ds.splits[split])
    return [r for r in ds.records if r.stem in keep]


def _shots_per_class(ds: DefectDataset, candidates: list[PairRecord], shots: int, seed: int) -> list[PairRecord]:
    order = list(candidates)
    random.Random(seed).shuffle(order)
    need = {cid: shots for cid in ds.class_map.defect_ids}
    chosen: list[PairRecord] = []
    for rec in order:
        if not any(need.values()):
            break
        for cid in sorted(present_classes(rec, ds.class_map)):
            if need.get(cid, 0) > 0:
                need[cid] -= 1
                chosen.append(rec)
                break
    short = {ds.class_map.names[c]: n for c, n in need.items() if n > 0}
    # a class with no image at all in the data (e.g. NEU's unused 'others') is not a shortage
    absent = {name for name, n in short.items() if n == shots}
    if short and set(short) - absent:
        raise DataError(f"{ds.root}: not enough images for {shots} shots per class; missing {short}")
    return sorted(chosen, key=lambda r: r.stem)


def select_records(
    ds: DefectDataset,
    *,
    split: str | None = None,
    shots: int | None = None,
    seed: int = 0,
    list_file: Path | None = None,
) -> list[PairRecord]:
    """Restrict to ``split``, then take the stems in ``list_file`` or ``shots`` images per defect class."""
    candidates = _split_records(ds, split)
    if list_file is not None:
        stems = read_stem_list(list_file)
        index = {r.stem: r for r in candidates}
        missing = [s for s in stems if s not in index]
        if missing:
            raise DataError(f"{list_file}: stems not in the data{' split ' + split if split else ''}: {missing[:5]}")
        return [index[s] for s in stems]
    if shots is not None:
        if shots < 1:
            raise DataError(f"--shots must be at least 1, got {shots}")
        return _shots_per_class(ds, candidates, shots, seed)
    if not candidates:
        raise DataError(f"{ds.root}: no images selected")
    return candidates


@dataclass
class SelectionConfig:
    """Which real images: the data folder and how to read it, then the split, the shots or a stem list."""

    data: str | None = None  # data folder (or ``images`` + ``masks``)
    format: DataFormat | None = None  # None: detected
    mask_suffix: str | None = None
    images: str | None = None
    masks: str | None = None
    good: str | None = None  # defect-free images: never a class, never a shot
    threshold: int | None = None  # binary masks: pixels above it are defect
    split: str | None = None
    shots: int | None = None  # K images per defect class
    seed: int = 0  # seed of the few-shot draw
    list_file: str | None = None  # exact stems instead of shots

    @property
    def explicit(self) -> bool:
        """Whether a subset was asked for (shots or a stem list) rather than a whole split."""
        return self.shots is not None or self.list_file is not None

    def options(self) -> dict[str, object]:
        """The choice as recorded beside every output (selection.json, results.json)."""
        return {"split": self.split, "shots": self.shots, "seed": self.seed, "list": self.list_file}

    def open(self, log: bool = True) -> DefectDataset:
        """The data named here; what the reader found is logged unless ``log`` is off."""
        if self.data is None and self.images is None:
            raise DataError("no data given: a data folder, or an image folder and a mask folder")
        ds = open_dataset(self.data, self.format, self.mask_suffix, images=self.images, masks=self.masks,
                          good=self.good, threshold=self.threshold)
        if log:
            log_report(ds)
        return ds

    def records(self, ds: DefectDataset) -> list[PairRecord]:
        return select_records(ds, split=self.split, shots=self.shots, seed=self.seed,
                              list_file=None if self.list_file is None else Path(self.list_file))

    def select(self, log: bool = True) -> tuple[DefectDataset, list[PairRecord]]:
        """The data and the chosen records; a chosen image that cannot be opened is an error now, before any work."""
        ds = self.open(log=False)
        records = self.records(ds)
        unreadable = set(ds.unreadable)
        for rec in (r for r in records if r.image in unreadable):
            load_pair(rec, ds.class_map)  # raises, naming the file and why
        if log:
            log_report(ds)
        return ds, records


@dataclass
class SelectionKeys:
    """The selection as the ablate and compare config files spell it: flat keys beside the rest."""

    data: str = ""  # real data folder (paths are relative to the working directory)
    format: DataFormat | None = None
    mask_suffix: str | None = None
    split: str | None = "train"  # the few-shot images come from this split only
    shots: int | None = 10  # K images per defect class
    selection_seed: int = 0
    list_file: str | None = None  # or exact training stems (as for the generator)

    @property
    def selection(self) -> SelectionConfig:
        return SelectionConfig(data=self.data or None, format=self.format, mask_suffix=self.mask_suffix,
                               split=self.split, shots=self.shots, seed=self.selection_seed, list_file=self.list_file)
