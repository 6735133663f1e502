"""The campaigns' one test scoring read off ablation folders (defectgen.seg.headline): rows paired by seed across
folders, the difference to copy-paste only where asked, and the pairs kept as npz under the size limit."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from defectgen.seg import headline
from defectgen.seg.headline import ci, headline_md, headline_rows, merge_cells


def _metrics(crack: float) -> dict:
    return {"miou_defect": crack, "miou_all": (crack + 0.98) / 2,
            "per_class": {"background": {"iou": 0.98}, "crack": {"iou": crack}}}


def _folder(root: Path, name: str, cells: dict[tuple[str, float, int], float], sources: dict[str, str]) -> Path:
    folder = root / name
    (folder / "cells").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"models": ["m"], "seg": {"steps": 10}, "sources": sources}))
    for (src, ratio, seed), v in cells.items():
        cell = {"cell": {"source": src, "ratio": ratio, "seed": seed}, "seed": seed, "metrics": _metrics(v),
                "synthetic_files": [f"{seed:06d}.png"] if ratio else []}
        (folder / "cells" / f"m__{src}__r{ratio:g}__s{seed}.json").write_text(json.dumps(cell))
    return folder


def test_rows_pair_by_seed_across_folders(tmp_path: Path) -> None:
    ref = _folder(tmp_path, "ref", {("real", 0.0, 0): 0.40, ("real", 0.0, 1): 0.42, ("real", 0.0, 2): 0.44,
                                    ("copy-paste", 2.0, 0): 0.41, ("copy-paste", 2.0, 1): 0.44,
                                    ("copy-paste", 2.0, 2): 0.45}, {"copy-paste": "cp"})
    new = _folder(tmp_path, "new", {("paste", 2.0, 0): 0.43, ("paste", 2.0, 1): 0.45}, {"paste": "p"})
    got = merge_cells([ref, new])
    assert sorted(got) == ["copy-paste", "paste", "real"]
    cfg = {**headline.ablation_config(new), "sources": {"copy-paste": "cp", "paste": "p"}}
    rows = headline_rows(got, cfg, {"real": "real only"}, versus="copy-paste", compared=lambda s: s == "paste")
    by = {r["row"]: r for r in rows}
    assert [r["row"] for r in rows] == ["real", "copy-paste", "paste"]
    assert by["real"]["name"] == "real only" and "gain" not in by["real"]
    assert by["copy-paste"]["gain"]["mean"] == pytest.approx((0.01 + 0.02 + 0.01) / 3) and "minus_copy_paste" not in by["copy-paste"]
    # paste has seeds 0 and 1 only: every difference is over those two seeds
    assert by["paste"]["gain"]["mean"] == pytest.approx(((0.43 - 0.40) + (0.45 - 0.42)) / 2)
    assert by["paste"]["gain"]["seeds"] == [0, 1]
    assert by["paste"]["minus_copy_paste"]["mean"] == pytest.approx(((0.43 - 0.41) + (0.45 - 0.44)) / 2)
    assert by["paste"]["per_class_gain"]["crack"]["mean"] == pytest.approx(0.03)
    assert by["paste"]["synthetic_folder"] == "p"
    text = headline_md(rows, ["crack"])
    assert f"| {ci(by['paste']['minus_copy_paste'])} |" in text and text.count("\n") == 5


def test_rows_need_the_real_only_cells(tmp_path: Path) -> None:
    got = merge_cells([_folder(tmp_path, "x", {("copy-paste", 2.0, 0): 0.4}, {})])
    with pytest.raises(ValueError, match="real-only"):
        headline_rows(got, {"models": ["m"], "seg": {"steps": 1}, "sources": {}}, {}, "copy-paste", lambda s: True)


def test_npz_keeps_the_drawn_pairs_and_splits_over_the_limit(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "set"
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    files = [f"{i:06d}.png" for i in range(4)]
    for f in files:
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "images" / f)
        Image.fromarray((rng.random((40, 60)) > 0.9).astype(np.uint8)).save(folder / "masks" / f)
    (folder / "manifest.json").write_text(json.dumps({"class_map": {"names": ["background", "crack"]},
                                                      "samples": [{"file": f, "windows": [{"x": 1}]} for f in files]}))
    out = tmp_path / "res" / "pairs_x.npz"
    out.parent.mkdir()
    headline.write_npz(folder, files[:3], out)
    z = np.load(out)
    assert list(z["files"]) == files[:3] and z["images"].shape == (3, 40, 60, 3)
    assert np.array_equal(z["images"][1], np.asarray(Image.open(folder / "images" / files[1])))
    assert np.array_equal(z["masks"][2], np.asarray(Image.open(folder / "masks" / files[2])))
    monkeypatch.setattr(headline, "MAX_NPZ_BYTES", 12000)  # random pixels do not compress: 7.2 kB a pair
    headline.write_npz(folder, files, out)
    parts = sorted(out.parent.glob("pairs_x*.npz"))
    assert not out.exists() and len(parts) > 1 and all(p.stat().st_size <= 12000 for p in parts)
    kept = sorted(f for p in parts for f in np.load(p)["files"])
    assert kept == files
