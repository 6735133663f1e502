"""Data as users have it: any image/mask folder pair, nested class folders, binary thresholds,
defect-free images, and the cases that used to pass silently."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectgen.cli import main
from defectgen.data import DataError, good_images, load_pair, open_dataset, select_records


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _crack(h: int, w: int, antialias: bool = True) -> np.ndarray:
    """A 1-px vertical crack at 255 with (optionally) 100-valued anti-aliased neighbours."""
    m = np.zeros((h, w), np.uint8)
    m[2:-2, w // 2] = 255
    if antialias:
        m[2:-2, w // 2 + 1] = 100
    return m


def make_img_ann(root: Path, n_defect: int = 3, n_good: int = 5, h: int = 20, w: int = 50) -> Path:
    """KolektorSDD-like: img/ + ann/, non-square, 0/255 anti-aliased masks, most masks empty, no names file."""
    for i in range(n_defect + n_good):
        _save(root / "img" / f"s{i:02d}.jpg", _image(h, w, i))
        _save(root / "ann" / f"s{i:02d}.png", _crack(h, w) if i < n_defect else np.zeros((h, w), np.uint8))
    return root


def make_mt(root: Path) -> Path:
    """Magnetic-tile-like: Class/Imgs/X.jpg + X.png, a defect-free MT_Free folder, one empty mask, varying sizes."""
    for c, cls in enumerate(("MT_Blowhole", "MT_Crack")):
        for k in range(3):
            h, w = 16 + 4 * k, 24 + 8 * c
            _save(root / cls / "Imgs" / f"exp{k}.jpg", _image(h, w, 10 * c + k))
            mask = np.zeros((h, w), np.uint8)
            if k < 2:  # exp2 of each class has an empty mask
                mask[4:9, 5:12] = 255
                mask[4:9, 12] = 60  # anti-aliased edge
            _save(root / cls / "Imgs" / f"exp{k}.png", mask)
    for k in range(4):
        _save(root / "MT_Free" / "Imgs" / f"free{k}.jpg", _image(20, 30, 100 + k))
        _save(root / "MT_Free" / "Imgs" / f"free{k}.png", np.zeros((20, 30), np.uint8))
    return root


def test_img_ann_pair_is_index_with_binary_masks_and_good_images(tmp_path: Path) -> None:
    ds = open_dataset(make_img_ann(tmp_path / "d"))
    assert ds.format == "index" and ds.class_map.names == ("background", "defect")
    assert len(ds.records) == 3 and len(ds.good) == 5  # empty masks: defect-free, not class examples
    report = "\n".join(ds.report)
    assert "masks read as binary" in report and "48 anti-aliased pixels (neither 0 nor full scale) in 3 of 8 masks" in report and "2.00x" in report
    assert "5 masks hold no defect pixel" in report and "aspect 2.50" in report
    _, mask = load_pair(ds.records[0], ds.class_map)
    assert mask.sum() == 16  # threshold 127: the 100-valued edge is background
    loose = open_dataset(tmp_path / "d", threshold=50)
    _, mask = load_pair(loose.records[0], loose.class_map)
    assert mask.sum() == 32
    assert {r.stem for r in select_records(ds, shots=3)} == {"s00", "s01", "s02"}  # good images are never shots
    with pytest.raises(DataError, match="not enough images"):
        select_records(ds, shots=4)


@pytest.mark.parametrize("names", [("images", "labels"), ("image", "mask"), ("Images", "Masks"), ("imgs", "annotations")])
def test_recognised_folder_pairs(tmp_path: Path, names: tuple[str, str]) -> None:
    for i in range(2):
        _save(tmp_path / names[0] / f"{i}.png", _image(12, 12, i))
        _save(tmp_path / names[1] / f"{i}.png", _crack(12, 12, antialias=False) // 255)  # 0/1 ids
    ds = open_dataset(tmp_path)
    assert ds.format == "index" and len(ds.records) == 2
    assert ds.class_map.names == ("background", "class_1")
    assert any("no class-name file" in line for line in ds.report)


def test_unknown_pair_names_error_lists_every_layout_and_explicit_folders_work(tmp_path: Path) -> None:
    root = make_img_ann(tmp_path / "d")
    (root / "img").rename(root / "pics")
    (root / "ann").rename(root / "anno")
    with pytest.raises(DataError) as err:
        open_dataset(root)
    msg = str(err.value)
    for part in ("Tried index:", "mvtec:", "binary-per-class:", "share file stems", "--images"):
        assert part in msg
    assert "missing mask" not in msg
    ds = open_dataset(None, images=root / "pics", masks=root / "anno")
    assert len(ds.records) == 3 and len(ds.good) == 5
    assert main(["data", "--images", str(root / "pics"), "--masks", str(root / "anno")]) == 0
    assert main(["data", "--data", str(root)]) == 2


def test_nested_class_folders_free_folder_and_threshold(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_mt(tmp_path / "mt")
    ds = open_dataset(root)
    assert ds.format == "binary-per-class"
    assert ds.class_map.names == ("background", "MT_Blowhole", "MT_Crack")  # MT_Free is not a class
    assert len(ds.records) == 4
    good = {r.stem for r in ds.good}
    assert {"MT_Free_free0", "MT_Blowhole_exp2", "MT_Crack_exp2"} <= good and len(good) == 6
    assert [p.name for p in good_images(ds)][:1] and len(good_images(ds)) == 6
    assert len(good_images(root / "MT_Free")) == 4  # a plain good folder
    report = "\n".join(ds.report)
    assert "MT_Free/: defect-free folder" in report and "20 anti-aliased pixels (neither 0 nor full scale) in 4 of 6 masks" in report
    assert "image sizes vary" in report
    assert len(select_records(ds, shots=2)) == 4
    with pytest.raises(DataError, match="not enough images"):
        select_records(ds, shots=3)  # the empty-mask images do not count as shots
    _, mask = load_pair(ds.by_stem("MT_Crack_exp0"), ds.class_map)
    assert (mask == 2).sum() == 35
    assert main(["data", "--data", str(root), "--threshold", "10"]) == 0
    out = capsys.readouterr().out
    assert "pixels above 10 are defect (--threshold)" in out and "4 defect images" in out


def test_class_images_masks_subfolders_and_good_flag(tmp_path: Path) -> None:
    for cls in ("dent", "rust"):
        for k in range(2):
            _save(tmp_path / "d" / cls / "images" / f"{k}.png", _image(12, 12, k))
            _save(tmp_path / "d" / cls / "masks" / f"{k}.png", _crack(12, 12))
    for k in range(3):
        _save(tmp_path / "ok_parts" / f"g{k}.png", _image(12, 12, 50 + k))
    ds = open_dataset(tmp_path / "d", good=tmp_path / "ok_parts")
    assert ds.format == "binary-per-class" and ds.class_map.names == ("background", "dent", "rust")
    assert len(ds.records) == 4 and len(ds.good) == 3
    img, mask = load_pair(ds.good[0], ds.class_map)
    assert img.shape == (12, 12, 3) and mask.max() == 0


def test_mvtec_good_folders_and_threshold(tmp_path: Path) -> None:
    for defect in ("crack",):
        _save(tmp_path / "test" / defect / "000.png", _image(12, 12, 0))
        _save(tmp_path / "ground_truth" / defect / "000_mask.png", _crack(12, 12))
    _save(tmp_path / "test" / "good" / "000.png", _image(12, 12, 1))
    _save(tmp_path / "train" / "good" / "000.png", _image(12, 12, 2))
    ds = open_dataset(tmp_path)
    assert ds.format == "mvtec" and len(ds.records) == 1
    assert sorted(r.stem for r in ds.good) == ["test_good_000", "train_good_000"]
    assert load_pair(ds.records[0], ds.class_map)[1].sum() == 8
    loose = open_dataset(tmp_path, threshold=50)  # the 100-valued anti-aliased edge becomes defect
    assert load_pair(loose.records[0], loose.class_map)[1].sum() == 16


# ---- the silent cases, now loud ----

def _index(root: Path, masks: list[np.ndarray], labels: str | None) -> Path:
    for i, m in enumerate(masks):
        _save(root / "images" / f"{i}.png", _image(*m.shape, i))
        _save(root / "masks" / f"{i}.png", m)
    if labels is not None:
        (root / "labels.txt").write_text(labels)
    return root


def test_all_ignore_masks_are_reported_and_left_out(tmp_path: Path) -> None:
    defect = np.zeros((12, 12), np.uint8)
    defect[2:5, 2:5] = 1
    ignore = np.zeros((12, 12), np.uint8)
    ignore[2:5, 2:5] = 255
    ds = open_dataset(_index(tmp_path, [defect, ignore], "background\nscratch\n"))
    assert [r.stem for r in ds.records] == ["0"] and not ds.good
    assert any(line.startswith("warning: 1 masks hold only ignore pixels") for line in ds.report)


def test_gapped_ids_without_names_file_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = np.zeros((12, 12), np.uint8)
    m[1:4, 1:4], m[6:9, 6:9] = 38, 75  # grey levels, not class ids
    root = _index(tmp_path, [m], None)
    assert main(["data", "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert "mask ids [38, 75] are not class ids 1..K (K <= 20) and there is no class-name file" in err and "Traceback" not in err


def test_data_without_any_defect_pixel_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _index(tmp_path, [np.zeros((12, 12), np.uint8)] * 2, "background\nscratch\n")
    assert main(["data", "--data", str(root)]) == 2
    assert "no defect pixel in any of the 2 masks (2 empty, 0 only ignore)" in capsys.readouterr().err


def test_binary_threshold_that_empties_every_mask_is_refused(tmp_path: Path) -> None:
    root = make_img_ann(tmp_path / "d", n_defect=2, n_good=0)
    with pytest.raises(DataError, match="lower --threshold"):
        open_dataset(root, threshold=255)


def test_evaluate_adds_defect_free_negatives_and_tests_on_empty_masks(tmp_path: Path) -> None:
    import json

    masks = []
    for i in range(8):
        m = np.zeros((24, 24), np.uint8)
        if i < 6:
            m[4:10, 3 + i:12 + i] = 1
        masks.append(m)  # 6, 7: empty masks (defect-free)
    root = _index(tmp_path / "d", masks, "background\nscratch\n")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("0\n1\n2\n3\n")
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("4\n5\n7\n")
    for k in range(3):
        _save(root / "good" / f"g{k}.png", _image(24, 24, 40 + k))
    out = tmp_path / "ev"
    argv = ["evaluate", "--data", str(root), "--split", "train", "--model", "unet-tiny", "--seeds", "0",
            "--set", "seg.size=16", "--set", "seg.steps=2", "--set", "seg.batch_size=2", "--set", "seg.threads=1",
            "--negatives", "3", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["negatives"] == 3
    assert res["selection"]["test_stems"] == ["4", "5", "7"]  # the empty-mask test image stays a test image
    neg = res["per_seed"][0]["negative_stems"]
    assert len(neg) == 3 and "7" not in neg and set(neg) <= {"6", "good_g0", "good_g1", "good_g2"}
    assert main(argv[:-4] + ["--negatives", "9", "--out", str(tmp_path / "ev2")]) == 2  # only 4 outside the test set


def test_guided_onto_takes_a_good_folder_with_masks_beside(tmp_path: Path) -> None:
    from defectgen.guided import read_good_images

    root = make_mt(tmp_path / "mt")
    assert sorted(read_good_images(root / "MT_Free", 16, 3)) == ["free0", "free1", "free2", "free3"]


def make_kolektor(root: Path, parts: int = 3, per_part: int = 4) -> Path:
    """KolektorSDD as it ships: kosNN/PartK.jpg + kosNN/PartK_label.bmp, tall grey images, 0/255 masks, half empty."""
    for k in range(1, parts + 1):
        for i in range(per_part):
            img = _image(40, 16, 10 * k + i)[..., 0]
            mask = np.zeros((40, 16), np.uint8)
            if i % 2 == 0:
                mask[10:20, 5:8] = 255
            _save(root / f"kos{k:02d}" / f"Part{i}.jpg", img)
            _save(root / f"kos{k:02d}" / f"Part{i}_label.bmp", mask)
    return root


def make_kolektor2(root: Path) -> Path:
    """KolektorSDD2 as it ships: train/NNNNN.png + train/NNNNN_GT.png and the same under test/; a third of masks empty."""
    for split, start, n in (("train", 10000, 6), ("test", 20000, 3)):
        for i in range(n):
            mask = np.zeros((48, 20), np.uint8)
            if i % 3 != 2:
                mask[5:15, 4:9] = 255
            _save(root / split / f"{start + i}.png", _image(48, 20, start + i))
            _save(root / split / f"{start + i}_GT.png", mask)
    return root


def test_kolektorsdd_images_with_masks_beside_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """One class, empty masks are good images, stems keep their folder (every kosNN/ holds Part0..)."""
    root = make_kolektor(tmp_path / "KolektorSDD")
    for extra in ([], ["--mask-suffix", "_label"], ["--format", "side-by-side"]):
        assert main(["data", "--data", str(root), *extra]) == 0
        out = capsys.readouterr().out
        assert "side-by-side layout: 12 images with their masks beside them (mask suffix '_label') in 3 folders" in out
        assert "side-by-side: 6 images selected of 6 defect images; 6 defect-free; classes ['background', 'defect']" in out
    ds = open_dataset(root)
    assert sorted(r.stem for r in ds.records) == [f"kos{k:02d}_Part{i}" for k in (1, 2, 3) for i in (0, 2)]
    assert {r.stem for r in ds.good} == {f"kos{k:02d}_Part{i}" for k in (1, 2, 3) for i in (1, 3)}
    img, mask = load_pair(ds.by_stem("kos02_Part0"), ds.class_map)
    assert img.shape == (40, 16, 3) and (mask == 1).sum() == 30 and set(np.unique(mask)) == {0, 1}
    assert len(select_records(ds, shots=3, seed=1)) == 3


def test_kolektorsdd2_splits_and_a_names_file(tmp_path: Path) -> None:
    root = make_kolektor2(tmp_path / "KolektorSDD2")
    ds = open_dataset(root)
    assert ds.format == "side-by-side" and ds.class_map.names == ("background", "defect")
    assert sorted(ds.splits) == ["test", "train"] and "train_10000" in ds.splits["train"]
    assert [r.stem for r in select_records(ds, split="train")] == ["train_10000", "train_10001", "train_10003",
                                                                  "train_10004"]
    assert {r.stem for r in ds.good} == {"train_10002", "train_10005", "test_20002"}
    (root / "labels.txt").write_text("background\ncrack\n")  # a names file says what the class is
    for mask in root.rglob("*_GT.png"):
        _save(mask, (np.asarray(Image.open(mask)) > 0).astype(np.uint8))
    assert open_dataset(root).class_map.names == ("background", "crack")


def test_an_unknown_mask_suffix_is_suggested_and_photo_folders_are_no_image_mask_pair(tmp_path: Path,
                                                                                      capsys: pytest.CaptureFixture) -> None:
    root = make_kolektor(tmp_path / "kol")
    for mask in root.rglob("*_label.bmp"):
        mask.rename(mask.with_name(mask.name.replace("_label", "_seg")))
    assert main(["data", "--data", str(root)]) == 2
    err = capsys.readouterr().err
    assert "side-by-side: no image with its mask beside it" in err and "files pair as X + X_seg (12 pairs): " \
        "pass --mask-suffix _seg" in err
    assert "--images" not in err.split("Name the layout")[0]  # kos01/ and kos02/ share stems but both hold photos
    assert main(["data", "--data", str(root), "--mask-suffix", "_seg"]) == 0
    (root / "kos01" / "Part9.jpg").write_bytes((root / "kos01" / "Part0.jpg").read_bytes())
    capsys.readouterr()
    assert main(["data", "--data", str(root), "--mask-suffix", "_seg"]) == 2
    assert capsys.readouterr().err.strip() == (f"defectgen: error: {root / 'kos01' / 'Part9.jpg'}: missing mask "
                                               "(expected Part9_seg with an image extension beside it)")


def test_16_bit_binary_masks_are_read_at_half_scale(tmp_path: Path) -> None:
    """The README's promise: 0/65535 masks (anti-aliased too) are binary with the threshold 32767."""
    root = make_img_ann(tmp_path / "d")
    for mask in (root / "ann").iterdir():
        Image.fromarray(np.asarray(Image.open(mask)).astype(np.uint16) * 257).save(mask)
    assert Image.open(next((root / "ann").iterdir())).mode.startswith("I")
    ds = open_dataset(root)
    assert ds.class_map.names == ("background", "defect") and len(ds.records) == 3 and len(ds.good) == 5
    _, mask = load_pair(ds.records[0], ds.class_map)
    assert (mask == 1).sum() == 16  # the crack's 255 pixels, not the 100-valued (25700) edge: above 32767 only
    assert "pixels above 32767 are defect" in "\n".join(ds.report)
