"""Readers, pair loading, selection and the bad inputs they must name clearly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectgen.data import (
    ClassMap, DataError, load_pair, open_dataset, present_classes, select_records,
)


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)


def _mask(cid: int, size: int = 12) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[3:7, 2:9] = cid
    return m


def make_index(root: Path, n_per_class: int = 2, classes: int = 2) -> Path:
    rng = np.random.default_rng(0)
    stems = []
    for cid in range(1, classes + 1):
        for k in range(n_per_class):
            stem = f"{cid}{k:03d}"
            stems.append(stem)
            _save(root / "JPEGImages" / f"{stem}.png", rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
            _save(root / "SegmentationClass" / f"{stem}.png", _mask(cid))
    (root / "labels.txt").write_text("__ignore__\n_background_\n" + "\n".join(f"c{i}" for i in range(1, classes + 1)))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(stems[:-1]))
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text(stems[-1])
    return root


def test_index_reader_labels_and_splits(tmp_path: Path) -> None:
    ds = open_dataset(make_index(tmp_path / "d", 2, 2))
    assert ds.format == "index"
    assert ds.class_map.names == ("background", "c1", "c2")
    assert len(ds.records) == 4 and set(ds.splits) == {"train", "test"}
    img, mask = load_pair(ds.records[0], ds.class_map, size=8)
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8 and mask.shape == (8, 8)
    assert set(np.unique(mask)) <= {0, 1}  # nearest-neighbour: no in-between ids


def test_class_map_derived_without_label_file(tmp_path: Path) -> None:
    root = make_index(tmp_path / "d", 1, 3)
    (root / "labels.txt").unlink()
    assert open_dataset(root).class_map.names == ("background", "class_1", "class_2", "class_3")


def test_mmseg_layout_splits_from_folders(tmp_path: Path) -> None:
    for split in ("train", "val"):
        _save(tmp_path / "img_dir" / split / f"{split}1.jpg", np.full((12, 12, 3), 90, np.uint8))
        _save(tmp_path / "ann_dir" / split / f"{split}1.png", _mask(1))
    ds = open_dataset(tmp_path)
    assert ds.splits == {"train": ["train1"], "val": ["val1"]}


def test_mvtec_reader(tmp_path: Path) -> None:
    for defect in ("crack", "hole"):
        for k in range(2):
            _save(tmp_path / "test" / defect / f"{k:03d}.png", np.full((12, 12, 3), 100, np.uint8))
            _save(tmp_path / "ground_truth" / defect / f"{k:03d}_mask.png", _mask(255))
    _save(tmp_path / "test" / "good" / "000.png", np.full((12, 12, 3), 100, np.uint8))
    ds = open_dataset(tmp_path)
    assert ds.format == "mvtec" and ds.class_map.names == ("background", "crack", "hole")
    assert len(ds.records) == 4
    rec = ds.by_stem("hole_001")
    _, mask = load_pair(rec, ds.class_map)
    assert set(np.unique(mask)) == {0, 2}


@pytest.mark.parametrize("suffix,img_ext", [("_mask", ".png"), (None, ".jpg")])
def test_binary_per_class_reader(tmp_path: Path, suffix: str | None, img_ext: str) -> None:
    for cls in ("dent", "rust"):
        for k in range(2):
            _save(tmp_path / cls / f"x{k}{img_ext}", np.full((12, 12, 3), 80, np.uint8))
            _save(tmp_path / cls / f"x{k}{suffix or ''}.png", (_mask(1) * 255).astype(np.uint8))
    ds = open_dataset(tmp_path, format="binary-per-class", mask_suffix=suffix)
    assert ds.class_map.names == ("background", "dent", "rust") and len(ds.records) == 4
    _, mask = load_pair(ds.by_stem("rust_x1"), ds.class_map)
    assert set(np.unique(mask)) == {0, 2}


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_become_rgb_uint8(tmp_path: Path, mode: str) -> None:
    root = make_index(tmp_path / "d", 1, 1)
    path = root / "JPEGImages" / "1000.png"
    base = Image.fromarray(np.tile(np.arange(0, 240, 20, dtype=np.uint8), (12, 1)))
    img = base.convert(mode) if mode != "I;16" else Image.fromarray((np.asarray(base).astype(np.uint16) * 257))
    img.save(path)
    ds = open_dataset(root)
    arr, _ = load_pair(ds.by_stem("1000"), ds.class_map)
    assert arr.shape == (12, 12, 3) and arr.dtype == np.uint8
    assert arr[0, -1, 0] > arr[0, 0, 0]  # the gradient survives the conversion


def test_palette_mask_reads_indices(tmp_path: Path) -> None:
    root = make_index(tmp_path / "d", 1, 2)
    p = Image.fromarray(_mask(2)).convert("P")
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    p.save(root / "SegmentationClass" / "2000.png")
    ds = open_dataset(root)
    assert present_classes(ds.by_stem("2000"), ds.class_map) == {2}


def test_few_shot_selection_is_seeded_and_balanced(tmp_path: Path) -> None:
    ds = open_dataset(make_index(tmp_path / "d", 4, 3))
    a = select_records(ds, shots=2, seed=1)
    b = select_records(ds, shots=2, seed=1)
    assert [r.stem for r in a] == [r.stem for r in b] and len(a) == 6
    counts = {c: sum(c in present_classes(r, ds.class_map) for r in a) for c in (1, 2, 3)}
    assert counts == {1: 2, 2: 2, 3: 2}
    with pytest.raises(DataError, match="not enough images"):
        select_records(ds, shots=5)


def test_list_and_split_selection(tmp_path: Path) -> None:
    ds = open_dataset(make_index(tmp_path / "d", 2, 2))
    lst = tmp_path / "stems.txt"
    lst.write_text("2001\n1000\n")
    assert [r.stem for r in select_records(ds, list_file=lst)] == ["2001", "1000"]
    assert [r.stem for r in select_records(ds, split="test")] == ["2001"]
    with pytest.raises(DataError, match="2001"):
        select_records(ds, split="train", list_file=lst)
    with pytest.raises(DataError, match="no split 'val'"):
        select_records(ds, split="val")


# ---- bad input: one clear error naming the file ----

def test_truncated_image_is_named(tmp_path: Path) -> None:
    root = make_index(tmp_path / "d", 1, 1)
    bad = root / "JPEGImages" / "1000.png"
    bad.write_bytes(bad.read_bytes()[:40])
    ds = open_dataset(root)
    with pytest.raises(DataError, match="1000.png.*unreadable or truncated"):
        load_pair(ds.records[0], ds.class_map)


def test_missing_mask_is_named(tmp_path: Path) -> None:
    root = make_index(tmp_path / "d", 1, 1)
    (root / "SegmentationClass" / "1000.png").unlink()
    with pytest.raises(DataError, match="1000.png: missing mask"):
        open_dataset(root)


def test_size_mismatch_is_named(tmp_path: Path) -> None:
    root = make_index(tmp_path / "d", 1, 1)
    _save(root / "SegmentationClass" / "1000.png", _mask(1)[:10])
    ds = open_dataset(root)
    with pytest.raises(DataError, match="1000.png: mask size 12x10 differs"):
        load_pair(ds.records[0], ds.class_map)


def test_ids_outside_class_map_are_named(tmp_path: Path) -> None:
    root = make_index(tmp_path / "d", 1, 1)
    _save(root / "SegmentationClass" / "1000.png", _mask(7))
    with pytest.raises(DataError, match=r"1000.png: mask ids \[7\] are outside the class map"):
        open_dataset(root)  # found when the data is opened, before any training


def test_duplicate_stems_are_named(tmp_path: Path) -> None:
    root = make_index(tmp_path / "d", 1, 1)
    _save(root / "JPEGImages" / "1000.jpg", np.zeros((12, 12, 3), np.uint8))
    with pytest.raises(DataError, match="duplicate stem '1000'"):
        open_dataset(root)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images found"):
        open_dataset(tmp_path)
    with pytest.raises(DataError, match="data folder not found"):
        open_dataset(tmp_path / "nope")


def test_class_map_mismatch_is_refused() -> None:
    with pytest.raises(DataError, match="class map mismatch"):
        ClassMap(("background", "a")).check_compatible(ClassMap(("background", "b")), "run/x")


def test_neu_few_shot_selection(neu_root: Path) -> None:
    ds = open_dataset(neu_root)
    assert ds.class_map.names[:4] == ("background", "Inclusions", "Patches", "Scratches")
    recs = select_records(ds, split="train", shots=10, seed=0)
    assert len(recs) == 30
    assert not {r.stem for r in recs} & set(ds.splits["test"])


def test_a_chosen_image_that_cannot_be_opened_fails_at_selection(tmp_path: Path, demo_data: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """Before any run folder or log line: the error names the file; an image left out of the choice is only reported."""
    import shutil

    from defectgen.data import SelectionConfig

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    broken = sorted((data / "images").iterdir())[0]
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{broken.name}: unreadable"):
        SelectionConfig(data=str(data)).select()
    assert "[data]" not in capsys.readouterr().err  # the failure is the only thing said
    others = [p.stem for p in sorted((data / "images").iterdir())[1:4]]
    (tmp_path / "stems.txt").write_text("\n".join(others))
    ds, recs = SelectionConfig(data=str(data), list_file=str(tmp_path / "stems.txt")).select()
    assert [r.stem for r in recs] == others and broken in ds.unreadable
    assert "cannot be opened" in capsys.readouterr().err
