"""The one result store of evaluate, ablate, the steps curve and compare: keys stay those of the result
folders already on disk, and a stored folder resumes without training anything."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from defectgen.config import from_dict, load_config
from defectgen.data import open_dataset
from defectgen.io import OutputExistsError
from defectgen.seg import ablate, curve
from defectgen.seg.ablate import AblateConfig, Cell, cell_key, run_ablation
from defectgen.seg.evaluate import EvalConfig, seed_key
from defectgen.seg.store import ResultStore, open_store, protocol
from defectgen.seg.train import SegConfig
from defectgen.seg.usage import UsageConfig

ROOT = Path(__file__).resolve().parents[1]
REAL = SimpleNamespace(train_stems=["a", "b"], test_stems=["c"])
SYN = SimpleNamespace(manifest_sha256="f" * 64)


def test_keys_are_those_of_the_stored_results() -> None:
    """Values computed by the code that wrote results/ (c8ccc67): a changed key would retrain every stored cell."""
    cfg = EvalConfig(ratio=1.0, seeds=[0, 1], seg=SegConfig(model="unet-tiny", size=32, steps=3, threads=1,
                                                             eval_batch_size=7))
    real_only = EvalConfig(ratio=0.0, negatives=2, seg=SegConfig(steps=5))
    assert seed_key(cfg, REAL, SYN, 1) == "d9299ddb88f5b7f2"
    assert seed_key(real_only, REAL, None, 0) == "76b0c65211f573fe"
    grid = AblateConfig(data="x", sources={"cp": "y"}, usages=[UsageConfig(), UsageConfig("weighted", 0.3)],
                        seg=SegConfig(steps=3, threads=2))
    for cell, key in ((Cell("unet-tiny", "real", 0.0, 0, ""), "f179ba84a997be84"),
                      (Cell("unet-tiny", "cp", 1.0, 1, "mix"), "1b3da7c7fde0473c"),
                      (Cell("unet-tiny", "cp", 2.0, 1, "weighted-w0.3"), "35b871867780f1b3")):
        assert cell_key(cell, grid, REAL, SYN if cell.ratio > 0 else None) == key, cell.id
    assert curve.cell_key(cfg, 100, 0, ["a"], ["v"]) == "70aad5d881998ee6"
    assert curve.cell_key(real_only, 800, 2, ["a"], ["v"]) == "ce59bf9d4e5c7a5c"


def test_settings_without_effect_are_no_part_of_a_key() -> None:
    one, other = EvalConfig(seg=SegConfig(threads=1, eval_batch_size=8)), EvalConfig(seg=SegConfig(threads=4))
    assert seed_key(one, REAL, None, 0) == seed_key(other, REAL, None, 0)
    assert seed_key(one, REAL, None, 0) != seed_key(EvalConfig(seg=SegConfig(steps=401)), REAL, None, 0)
    assert protocol({"a": 1, "threads": 2, "seg": {"eval_batch_size": 3, "lr": 4}}, drop=("a",)) == {"seg": {"lr": 4}}


def test_store_reads_back_and_refuses_another_protocol(tmp_path: Path) -> None:
    store = open_store(tmp_path / "out", "cells", overwrite=False, what="ablation")
    assert store.finished("x", "k1") is None
    store.keep("x", {"key": "k1", "value": 3})
    assert store.finished("x", "k1") == {"key": "k1", "value": 3}
    with pytest.raises(OutputExistsError, match="different protocol"):
        store.finished("x", "k2")
    store.path("y").write_text("{half")
    with pytest.raises(OutputExistsError, match="not a readable cell"):
        store.finished("y", "k1")
    assert open_store(tmp_path / "out", "cells", overwrite=False, what="ablation").finished("x", "k1")  # resumes
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="exists and is not empty"):
        open_store(tmp_path / "other", "cells", overwrite=False, what="ablation")
    (tmp_path / "out" / "results.json").write_text("{}")  # a finished evaluation is not redone
    with pytest.raises(OutputExistsError, match="no unfinished evaluation"):
        open_store(tmp_path / "out", "cells", overwrite=False, what="evaluation", done_file="results.json")
    again = open_store(tmp_path / "out", "cells", overwrite=True, what="evaluation", done_file="results.json")
    assert again.finished("x", "k2") is None  # overwrite restarts the cells
    empty = ResultStore(tmp_path / "new" / "seeds")
    empty.folder.mkdir(parents=True)
    empty.discard_if_empty()
    assert not (tmp_path / "new").exists()


def _stored(name: str) -> Path:
    """A NEU result folder written by the neu_pay campaign (other campaigns reuse folder names on other data)."""
    folder = ROOT / "experiments" / "neu_pay" / "results" / name
    assert (folder / "cells").is_dir(), f"no stored result folder {folder}"
    return folder


def _no_training(*args: object, **kwargs: object) -> dict:
    raise AssertionError("a stored cell was trained again")


@pytest.mark.realdata
def test_a_stored_steps_curve_resumes_without_training(neu_root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "curve"
    shutil.copytree(_stored("steps_curve_dl-r18"), out)
    stored = json.loads((out / "curve.json").read_text())
    ds = open_dataset(neu_root)
    train = [ds.by_stem(s) for s in stored["selection"]["train_stems"]]
    monkeypatch.setattr(curve, "train_and_score", _no_training)
    again = curve.run_steps_curve(ds, train, from_dict(EvalConfig, stored["config"]),
                                  [p["steps"] for p in stored["points"]], out, log=None)
    assert again["points"] == stored["points"] and again["chosen_steps"] == stored["chosen_steps"]


@pytest.mark.realdata
def test_a_stored_ablation_resumes_without_training(neu_root: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "grid"
    shutil.copytree(_stored("val_dl-r18"), out)
    cfg = load_config(AblateConfig, out / "config.yaml")
    cfg.data, cfg.list_file = str(neu_root), str(ROOT / cfg.list_file)
    cfg.sources, cfg.ratios = {}, [0.0]  # its real-only cells
    stored = {p.name: json.loads(p.read_text()) for p in (out / "cells").glob("*__real__*.json")}
    monkeypatch.setattr(ablate, "train_and_score", _no_training)
    cells = run_ablation(cfg, out, log=None)
    assert len(cells) == len(stored) == len(cfg.models) * len(cfg.seeds)
    assert all(c == stored[f"{c['cell']['id']}.json"] for c in cells)
