"""What the readers make of a data folder: one ``PairRecord`` per image, a ``DefectDataset`` per folder.

Apart from the readers (``formats``) so that everything that reads or writes pairs can name them
without importing the readers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from defectgen.data.classmap import ClassMap
from defectgen.errors import DataError


@dataclass(frozen=True)
class PairRecord:
    """One real image and its mask on disk.

    ``binary_class`` is set when the mask is binary (pixels above ``threshold`` are that class;
    ``threshold`` None = 127 for 8-bit masks, 0 for 0/1 masks). ``mask`` is None for a
    defect-free image without a mask file (read as all background).
    """

    stem: str
    image: Path
    mask: Path | None
    binary_class: int | None = None
    threshold: int | None = None


@dataclass
class DefectDataset:
    root: Path
    format: str
    class_map: ClassMap
    records: list[PairRecord]  # images with at least one defect pixel: the class examples
    splits: dict[str, list[str]] = field(default_factory=dict)
    good: list[PairRecord] = field(default_factory=list)  # defect-free images (never a class, never a shot)
    report: list[str] = field(default_factory=list)  # what the reader found, one line each ("warning: ..." first)
    unreadable: list[Path] = field(default_factory=list)  # images that cannot be opened (an error once selected)

    def by_stem(self, stem: str) -> PairRecord:
        for rec in self.records + self.good:
            if rec.stem == stem:
                return rec
        raise DataError(f"{self.root}: no image with stem '{stem}'")
