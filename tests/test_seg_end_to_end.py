"""Evaluate, ablate and copypaste end to end on a tiny dataset written by the test (32 px, a few steps)."""
import json
import logging

import numpy as np
import pytest
from PIL import Image

from defectgen.config import load_config
from defectgen.data import open_dataset, select_records
from defectgen.io import OutputExistsError
from defectgen.seg import ablate as ablate_mod
from defectgen.seg.ablate import AblateConfig, run_ablation
from defectgen.cli import main
from defectgen.seg.evaluate import EvalConfig, run_evaluation
from defectgen.seg.mixing import LeakError
from defectgen.seg.train import SegConfig

TINY = SegConfig(model="unet-tiny", size=32, steps=4, batch_size=4, warmup_steps=1, threads=1)


def make_dataset(root, n_train=12, n_test=6, size=40):
    """Index layout: bright bars = scratch (1), dark squares = spot (2), with train/test split files."""
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "labels.txt").write_text("__ignore__\n_background_\nscratch\nspot\n")
    stems = [f"{i:04d}" for i in range(n_train + n_test)]
    for i, stem in enumerate(stems):
        img = rng.integers(90, 130, (size, size, 3)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(4, size - 14, 2)
        if i % 2 == 0:
            img[y : y + 3, x : x + 12], mask[y : y + 3, x : x + 12] = 230, 1
        else:
            img[y : y + 8, x : x + 8], mask[y : y + 8, x : x + 8] = 20, 2
        mask[0, :2] = 255  # a few ignore pixels
        Image.fromarray(img).save(root / "JPEGImages" / f"{stem}.png")
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{stem}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(stems[:n_train]) + "\n")
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(stems[n_train:]) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("seg") / "data")


def run_cli(*argv):
    """The real entry point; a user error comes back as exit code 2 with its one line on stderr."""
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def copypaste_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cp") / "cp"
    run_cli("copypaste", "--data", tiny_data, "--split", "train", "--shots", "3", "--num", "20", "--size", "32", "--out", out)
    return out


def test_copypaste_command_writes_sample_layout(copypaste_dir):
    manifest = json.loads((copypaste_dir / "manifest.json").read_text())
    assert len(manifest["samples"]) == 20 and len(manifest["train_stems"]) == 6
    assert manifest["class_map"]["names"] == ["background", "scratch", "spot"]
    assert sorted(p.name for p in (copypaste_dir / "images").iterdir())[0] == "000000.png"
    syn = open_dataset(copypaste_dir)  # opens like a `defectgen sample` folder
    assert len(syn.records) == 20 and syn.class_map.names == ("background", "scratch", "spot")


def test_evaluate_with_synthetic_and_baseline(tiny_data, copypaste_dir):
    ds = open_dataset(tiny_data)
    train = select_records(ds, split="train", shots=3, seed=0)
    base = run_evaluation(ds, train, EvalConfig(ratio=0, seeds=[0, 1], seg=TINY), log=None)
    res = run_evaluation(ds, train, EvalConfig(ratio=0.5, seeds=[0, 1], seg=TINY), synthetic=copypaste_dir,
                         baseline=base, log=None)
    assert [r["num_synthetic"] for r in res["per_seed"]] == [3, 3]  # 0.5 x 6 real
    assert len(res["selection"]["test_stems"]) == 6 and res["synthetic"]["same_real_images"]
    m = res["per_seed"][0]["metrics"]
    assert set(m["per_class"]) == {"background", "scratch", "spot"}
    assert 0 <= m["miou_all"] <= 1 and m["image_fp_rate"] is None  # every test image is defective
    assert res["aggregate"]["miou_defect"]["n"] == 2
    gain = res["paired_gain"]["miou_defect"]
    diffs = [a["metrics"]["miou_defect"] - b["metrics"]["miou_defect"] for a, b in zip(res["per_seed"], base["per_seed"])]
    assert gain["mean"] == pytest.approx(np.mean(diffs)) and gain["ci_low"] <= gain["mean"] <= gain["ci_high"]
    again = run_evaluation(ds, train, EvalConfig(ratio=0, seeds=[0], seg=TINY), log=None)
    assert again["per_seed"][0]["metrics"] == base["per_seed"][0]["metrics"]  # seeded: same numbers


def test_evaluate_refuses_test_images_seen_by_generator(tiny_data, copypaste_dir, tmp_path):
    manifest = json.loads((copypaste_dir / "manifest.json").read_text())
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    for sub in ("images", "masks"):
        (leaky / sub).symlink_to(copypaste_dir / sub)
    (leaky / "manifest.json").write_text(json.dumps({**manifest, "train_stems": manifest["train_stems"] + ["0013"]}))
    ds = open_dataset(tiny_data)
    train = select_records(ds, split="train", shots=3, seed=0)
    with pytest.raises(LeakError, match="0013"):
        run_evaluation(ds, train, EvalConfig(ratio=1, seeds=[0], seg=TINY), synthetic=leaky, log=None)
    with pytest.raises(LeakError, match="real training selection"):  # no --split: shots may come from test
        run_evaluation(ds, ds.records, EvalConfig(seeds=[0], seg=TINY), log=None)


def test_evaluate_command_writes_results_and_keeps_them(tiny_data, copypaste_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--data", tiny_data, "--split", "train", "--shots", "3", "--synthetic", copypaste_dir,
            "--ratio", "1", "--model", "unet-tiny", "--seeds", "0", "--out", out,
            "--set", "seg.size=32", "--set", "seg.steps=3", "--set", "seg.batch_size=4", "--set", "seg.threads=1"]
    assert run_cli(*argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["seg"]["model"] == "unet-tiny" and res["config"]["ratio"] == 1.0
    assert res["per_seed"][0]["num_synthetic"] == 6 and res["selection"]["shots"] == 3
    assert (out / "config.yaml").is_file()
    page = (out / "report.html").read_text()  # the page shows this evaluation's table
    assert "IoU scratch" in page and "ratio 1 synthetic per real pair" in page
    capsys.readouterr()
    assert run_cli(*argv) == 2 and "exists and is not empty" in capsys.readouterr().err
    no_synthetic = [a for a in argv if a not in ("--synthetic", copypaste_dir)]
    assert run_cli(*no_synthetic, "--overwrite") == 2 and "needs a synthetic set" in capsys.readouterr().err
    assert (out / "results.json").is_file()  # a failed rerun leaves the earlier results in place


def test_evaluate_command_shows_each_seed(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(logging.root, "handlers", [])  # as in a terminal, where nothing else configured logging
    assert run_cli("evaluate", "--data", tiny_data, "--split", "train", "--shots", "3", "--model", "unet-tiny",
                   "--seeds", "0", "--out", tmp_path / "eval", "--set", "seg.size=32", "--set", "seg.steps=2",
                   "--set", "seg.batch_size=4", "--set", "seg.threads=1") == 0
    shown = "".join(capsys.readouterr())  # the library logs these lines, the command shows them
    assert "unet-tiny, ratio 0.0, usage mix: 6 real training pairs" in shown
    assert "seed 0: 6 real + 0 defect-free + 0 synthetic" in shown and "mIoU all" in shown


def test_ablate_grid_resumes_and_refuses_changed_protocol(tiny_data, copypaste_dir, tmp_path, monkeypatch):
    cfg_path = tmp_path / "ablate.yaml"
    cfg_path.write_text(
        f"data: {tiny_data}\nsplit: train\nshots: 3\nsources: {{copypaste: {copypaste_dir}}}\n"
        "ratios: [0, 1]\nmodels: [unet-tiny]\nseeds: [0, 1]\n"
        "seg: {model: unet-tiny, size: 32, steps: 3, batch_size: 4, warmup_steps: 1, threads: 1}\n"
    )
    out = tmp_path / "grid"
    assert run_cli("ablate", "--config", cfg_path, "--out", out) == 0
    assert len(list((out / "cells").glob("*.json"))) == 4
    for name in ("results.csv", "summary.csv", "miou_vs_ratio.png", "report.md", "config.yaml", "selection.json"):
        assert (out / name).is_file(), name
    assert len((out / "results.csv").read_text().splitlines()) == 5
    assert "copypaste" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()  # the ablation's table and plot, embedded
    assert "copypaste" in page and "gain defect" in page and 'alt="mIoU against ratio"' in page

    def no_training(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(ablate_mod, "train_and_score", no_training)
    cfg = load_config(AblateConfig, cfg_path)
    assert len(run_ablation(cfg, out, log=None)) == 4
    cfg.seg.steps = 5
    with pytest.raises(OutputExistsError, match="different protocol"):
        run_ablation(cfg, out, log=None)


@pytest.mark.realdata
def test_neu_selection_keeps_test_apart(neu_root):
    ds = open_dataset(neu_root)
    train = select_records(ds, split="train", shots=10, seed=0)
    test = set(ds.splits["test"])
    assert len(train) == 30 and len(test) == 447
    assert not test & {r.stem for r in train}
