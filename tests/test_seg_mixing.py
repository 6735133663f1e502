"""Ratio mixing, the leak check and copy-paste, on small in-memory arrays and sample folders."""
import json

import numpy as np
import pytest

from defectgen.data import ClassMap, DataError
from defectgen.data.samples import open_synthetic, write_samples
from defectgen.seg.copypaste import dihedral, make_copypaste, paste
from defectgen.seg.mixing import LeakError, check_no_leak, choose_synthetic, num_synthetic

CM = ClassMap(("background", "scratch", "spot", "hole"))


def test_num_synthetic_is_ratio_times_real():
    assert [num_synthetic(30, r) for r in (0, 0.2, 0.5, 1, 2, 3)] == [0, 6, 15, 30, 60, 90]
    assert num_synthetic(7, 0.5) == 4  # 3.5 rounds half up
    with pytest.raises(DataError):
        num_synthetic(10, -1)


def test_choose_synthetic_balanced_counts_and_seeding():
    classes = [1] * 10 + [2] * 10 + [3] * 2 + [None] * 3
    picked = choose_synthetic(classes, 12, seed=0)
    assert len(set(picked)) == 12
    per_class = {c: sum(classes[i] == c for i in picked) for c in (1, 2, 3, None)}
    assert per_class == {1: 5, 2: 5, 3: 2, None: 0}  # class 3 runs out, the others share its turns
    assert choose_synthetic(classes, 12, seed=0) == picked
    assert choose_synthetic(classes, 12, seed=1) != picked
    assert sum(classes[i] is None for i in choose_synthetic(classes, 24, seed=0)) == 2  # defect-free pairs come last
    assert len(set(choose_synthetic(classes, 25, seed=3, balanced=False))) == 25
    with pytest.raises(DataError, match="only 25"):
        choose_synthetic(classes, 26, seed=0)


def _pairs(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        c = 1 + i % 3
        masks[i, 2 + i : 6 + i, 3:9] = c
    masks[0, 0, 0] = 255
    return images, masks


def test_paste_copies_exactly_the_region():
    images, masks = _pairs()
    region = masks[1] == 2
    img, mask = paste(images[1], masks[1], images[0], masks[0], region)
    np.testing.assert_array_equal(img[region], images[1][region])
    np.testing.assert_array_equal(mask[region], masks[1][region])
    np.testing.assert_array_equal(img[~region], images[0][~region])
    np.testing.assert_array_equal(mask[~region], masks[0][~region])


def test_make_copypaste_pastes_source_class_region():
    images, masks = _pairs()
    out_img, out_mask, meta = make_copypaste(images, masks, CM, num=7, seed=0)
    assert out_img.shape == (7, 16, 16, 3) and out_mask.shape == (7, 16, 16)
    assert [m["pasted_class"] for m in meta] == [1, 2, 3, 1, 2, 3, 1]  # classes take turns
    for img, mask, m in zip(out_img, out_mask, meta):
        assert m["source"] != m["target"]
        src_img, src_mask = dihedral(images[m["source"]], m["symmetry"]), dihedral(masks[m["source"]], m["symmetry"])
        region = src_mask == m["pasted_class"]
        assert region.any()
        np.testing.assert_array_equal(mask[region], src_mask[region])
        np.testing.assert_array_equal(img[region], src_img[region])
        np.testing.assert_array_equal(img[~region], images[m["target"]][~region])
    again = make_copypaste(images, masks, CM, num=3, seed=0)  # pair i depends only on (seed, i)
    np.testing.assert_array_equal(again[0], out_img[:3])


def _sample_folder(tmp_path, train_stems, n=6):
    images, masks = _pairs(n)
    write_samples(tmp_path / "syn", images, masks, CM, train_stems, [{"seed": 0} for _ in range(n)])
    return tmp_path / "syn"


def test_open_synthetic_reads_classes_from_manifest(tmp_path):
    syn = open_synthetic(_sample_folder(tmp_path, ["a", "b"]))
    assert syn.classes == [1, 2, 3, 1, 2, 3]
    assert syn.train_stems == ["a", "b"] and len(syn.manifest_sha256) == 64
    assert syn.class_map == CM


def test_leak_check_refuses_test_stem_seen_by_generator(tmp_path):
    syn = open_synthetic(_sample_folder(tmp_path, ["a", "b", "t2"]))
    check_no_leak(["a", "b"], ["t1", "t3"], syn)
    with pytest.raises(LeakError, match="t2"):
        check_no_leak(["a", "b"], ["t1", "t2"], syn)
    with pytest.raises(LeakError, match="real training selection"):
        check_no_leak(["a", "t1"], ["t1"], None)


def test_manifest_without_train_stems_is_refused(tmp_path):
    folder = _sample_folder(tmp_path, ["a"])
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["train_stems"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="train_stems"):
        open_synthetic(folder)
