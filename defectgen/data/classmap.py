"""The class map: class id <-> name. Id 0 is background, 255 is ignore."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defectgen.data.errors import DataError, read_text
from defectgen.io import atomic_write_json

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassMap:
    names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise DataError(f"a class map needs background and at least one defect class, got {list(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise DataError(f"class names must be unique, got {list(self.names)}")
        bad = [n for n in self.names if not isinstance(n, str) or n.strip() in ("", ".", "..") or "/" in n or "\\" in n
               or any(ord(c) < 32 for c in n)]
        if bad:  # names label files and folders in reports: keep them single, visible path components
            raise DataError(f"class name {bad[0]!r} is not allowed (empty, '.', '..', '/', '\\' or control characters)")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def defect_ids(self) -> list[int]:
        return list(range(1, self.num_classes))

    def id_of(self, name: str) -> int:
        return self.names.index(name)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassMap":
        return cls(tuple(d["names"]), int(d.get("ignore_index", IGNORE_INDEX)))

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "ClassMap":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{path}: not a readable class map ({err})") from err

    def check_compatible(self, other: "ClassMap", where: str) -> None:
        """Refuse to combine data and a model whose class ids mean different things."""
        if self.names != other.names:
            raise DataError(
                f"{where}: class map mismatch: {list(self.names)} vs {list(other.names)}; "
                "the data and the model must use the same class ids"
            )


def read_labels_file(path: Path) -> ClassMap:
    """Read a labelme-style ``labels.txt`` or a plain class-name list (one per line).

    labelme style starts with ``__ignore__`` (id 255) then ``_background_`` (id 0); a plain list
    starts with the background class.
    """
    lines = [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]
    if lines and lines[0] == "__ignore__":
        lines = lines[1:]
    if not lines:
        raise DataError(f"{path}: no class names")
    names = ["background" if ln in ("_background_", "__background__") else ln for ln in lines]
    try:
        return ClassMap(tuple(names))
    except DataError as err:
        raise DataError(f"{path}: {err}") from err
