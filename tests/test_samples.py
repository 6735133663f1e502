"""The sample folder contract (defectgen.data.samples): what one writer writes, every reader reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defectgen.data import ClassMap, DataError, open_dataset
from defectgen.data.samples import (copy_samples, is_complete, open_synthetic, read_manifest, read_pairs,
                                    write_samples)

CM = ClassMap(("background", "scratch", "spot"))


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, 8, 8), np.uint8)
    for i in range(n):
        masks[i, :4, :4] = 1 + i % 2
    return rng.integers(0, 256, (n, 8, 8, 3)).astype(np.uint8), masks


def test_written_folder_reads_back_by_every_reader(tmp_path: Path) -> None:
    images, masks = _pairs(4)
    write_samples(tmp_path / "s", images, masks, CM, ["a", "b"], [{"seed": i} for i in range(4)], {"generator": "x"})
    assert is_complete(tmp_path / "s")
    m = read_manifest(tmp_path / "s")
    assert m["train_stems"] == ["a", "b"] and m["generator"] == "x"
    assert [e["class_pixels"]["scratch"] for e in m["samples"]] == [16, 0, 16, 0]
    back_images, back_masks = read_pairs(tmp_path / "s", [e["file"] for e in m["samples"]])
    assert np.array_equal(back_images, images) and np.array_equal(back_masks, masks)
    syn = open_synthetic(tmp_path / "s")
    assert syn.classes == [1, 2, 1, 2] and syn.class_map == CM and syn.generator == "x"
    assert open_dataset(tmp_path / "s").class_map == CM  # the data readers see it as a data set too


def test_copy_keeps_the_chosen_pairs_and_writes_the_manifest_last(tmp_path: Path) -> None:
    images, masks = _pairs(4)
    write_samples(tmp_path / "s", images, masks, CM, ["a"], [{} for _ in range(4)])
    syn = open_synthetic(tmp_path / "s")
    kept = [syn.records[1], syn.records[3]]
    manifest = {**read_manifest(tmp_path / "s"), "samples": [{"file": r.image.name} for r in kept]}
    copy_samples(tmp_path / "k", [(r.image, r.mask) for r in kept], manifest, grid=(images[[1, 3]], masks[[1, 3]]))
    assert sorted(p.name for p in (tmp_path / "k" / "images").iterdir()) == ["000001.png", "000003.png"]
    assert (tmp_path / "k" / "grid.png").is_file() and open_synthetic(tmp_path / "k").classes == [2, 2]


@pytest.mark.parametrize("damage, needle", [(None, "not found"), ("{nope", "not valid JSON"), ("[1]", "JSON object")])
def test_a_missing_or_damaged_manifest_is_a_data_error(tmp_path: Path, damage: str | None, needle: str) -> None:
    (tmp_path / "images").mkdir()
    if damage is not None:
        (tmp_path / "manifest.json").write_text(damage)
    with pytest.raises(DataError, match=needle):
        read_manifest(tmp_path)
    assert is_complete(tmp_path) == (damage is not None)
