"""Exports users train with (mmseg, voc) and ``mix``: every export is read back by the readers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defectgen.cli import main
from defectgen.data import load_pair, open_dataset
from defectgen.data.samples import open_synthetic
from test_seg_end_to_end import make_dataset  # tests/ is on sys.path under pytest


@pytest.fixture(scope="module")
def real_and_syn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("exp")
    data = make_dataset(root / "data", n_train=8, n_test=4, size=24)
    assert main(["copypaste", "--data", str(data), "--split", "train", "--shots", "2", "--num", "12", "--size", "16",
                 "--out", str(root / "syn")]) == 0
    return data, root / "syn"


@pytest.mark.parametrize("layout", ["mmseg", "voc"])
def test_sample_folder_relayout_reads_back(real_and_syn: tuple[Path, Path], tmp_path: Path, layout: str) -> None:
    from defectgen.data.layouts import relayout

    _, syn = real_and_syn
    folder = tmp_path / "s"
    import shutil

    shutil.copytree(syn, folder)
    before = open_dataset(folder)
    masks = [load_pair(r, before.class_map)[1] for r in before.records]
    relayout(folder, layout)
    assert not (folder / "images").exists()
    after = open_dataset(folder)
    assert after.class_map == before.class_map and len(after.records) == 12 and after.splits["train"][0] == "000000"
    for m, b in zip(masks, after.records):
        assert np.array_equal(m, load_pair(b, after.class_map)[1])
    assert open_synthetic(folder).train_stems == open_synthetic(syn).train_stems  # still usable as --synthetic
    names_file = "classes.txt" if layout == "mmseg" else "labels.txt"
    assert (folder / names_file).is_file()


@pytest.mark.parametrize("layout", ["mmseg", "voc", "defectgen"])
def test_mix_writes_real_and_synthetic_at_a_ratio(real_and_syn: tuple[Path, Path], tmp_path: Path, layout: str) -> None:
    data, syn = real_and_syn
    out = tmp_path / "mix"
    assert main(["mix", "--data", str(data), "--split", "train", "--synthetic", str(syn), "--ratio", "0.5",
                 "--layout", layout, "--out", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["num_real"] == 8 and m["num_synthetic"] == 4 and m["layout"] == layout
    back = open_dataset(out)
    real = open_dataset(data)
    assert back.class_map == real.class_map
    if layout != "defectgen":  # the flat layout has no splits
        assert len(back.splits["train"]) == 12 and len(back.splits["test"]) == 4
    assert len(back.records) == 16
    rec = back.by_stem("real_0000")
    img, mask = load_pair(rec, back.class_map)
    img0, mask0 = load_pair(real.by_stem("0000"), real.class_map)
    assert np.array_equal(mask, mask0) and np.array_equal(img, img0)
    sources = {f["source"] for f in m["files"]}
    assert sources == {"real", "synthetic"}
    assert main(["mix", "--data", str(data), "--split", "train", "--synthetic", str(syn), "--ratio", "0.5",
                 "--out", str(out)]) == 2  # never overwrites silently


def test_mix_refuses_a_generator_that_saw_the_test_images(real_and_syn: tuple[Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    data, syn = real_and_syn
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(syn, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["train_stems"].append("0011")  # a test stem
    (bad / "manifest.json").write_text(json.dumps(m))
    assert main(["mix", "--data", str(data), "--split", "train", "--synthetic", str(bad), "--ratio", "1",
                 "--out", str(tmp_path / "m")]) == 2
    assert "trained on 1 test image" in capsys.readouterr().err
