"""Usage modes of the synthetic pairs (mix, pretrain, weighted): what each trains on, recorded in every
result, swept by ablate, and always compared with the real-only baseline of the same protocol."""
import json

import numpy as np
import pytest
from test_seg_end_to_end import make_dataset

from defectgen.cli import main
from defectgen.config import ConfigError, load_config
from defectgen.data import DataError
from defectgen.seg import usage as usage_mod
from defectgen.seg.ablate import AblateConfig, run_ablation
from defectgen.seg.evaluate import EvalConfig, gain_over
from defectgen.seg.train import SegConfig, fit_segmenter
from defectgen.seg.usage import UsageConfig, fit_with_usage, pretrain_steps

TINY = SegConfig(model="unet-tiny", size=32, steps=4, batch_size=4, warmup_steps=1, threads=1)
SEG_SETS = ["--set", "seg.size=32", "--set", "seg.steps=4", "--set", "seg.batch_size=4", "--set", "seg.threads=1",
            "--set", "seg.warmup_steps=1"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("usage") / "data")


@pytest.fixture(scope="module")
def copypaste_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cp") / "cp"
    assert main(["copypaste", "--data", str(tiny_data), "--split", "train", "--shots", "3", "--num", "20",
                 "--size", "32", "--out", str(out)]) == 0
    return out


def _pairs(n, seed, value=220):
    rng = np.random.default_rng(seed)
    x = rng.integers(80, 120, (n, 32, 32, 3)).astype(np.uint8)
    y = np.zeros((n, 32, 32), np.uint8)
    x[:, 8:16, 8:24], y[:, 8:16, 8:24] = value, 1
    return x, y


def test_sample_weights_scale_the_loss():
    x, y = _pairs(4, 0)
    plain, ones, zeros = [], [], []
    fit_segmenter(x, y, TINY, 2, seed=0, log=plain.append)
    fit_segmenter(x, y, TINY, 2, seed=0, log=ones.append, sample_weights=np.ones(4))
    fit_segmenter(x, y, TINY, 2, seed=0, log=zeros.append, sample_weights=np.zeros(4))
    assert ones[-1]["loss"] == pytest.approx(plain[-1]["loss"], rel=1e-4)  # weight 1 is plain training
    assert zeros[-1]["loss"] == 0.0 and plain[-1]["loss"] > 0
    with pytest.raises(ValueError, match="sample_weights"):
        fit_segmenter(x, y, TINY, 2, seed=0, sample_weights=np.ones(3))


def test_each_mode_trains_on_what_it_says(monkeypatch):
    calls = []
    real_fit = usage_mod.fit_segmenter

    def spy(images, masks, cfg, *args, init=None, sample_weights=None, **kw):
        model = real_fit(images, masks, cfg, *args, init=init, sample_weights=sample_weights, **kw)
        calls.append({"n": len(images), "steps": cfg.steps, "init": init, "weights": sample_weights, "model": model})
        return model

    monkeypatch.setattr(usage_mod, "fit_segmenter", spy)
    rx, ry = _pairs(4, 0)
    sx, sy = _pairs(6, 1)
    cfg = SegConfig(**{**TINY.__dict__, "steps": 8})

    _, phases = fit_with_usage(rx, ry, sx, sy, UsageConfig("pretrain", pretrain_fraction=0.25), cfg, 2, seed=0)
    assert [(c["n"], c["steps"]) for c in calls] == [(6, 2), (4, 6)]  # synthetic first, then real only
    assert calls[0]["init"] is None and calls[1]["init"] is calls[0]["model"]  # the fine-tune continues the model
    assert phases == [{"data": "synthetic", "steps": 2}, {"data": "real", "steps": 6}]

    calls.clear()
    fit_with_usage(rx, ry, sx, sy, UsageConfig("weighted", synthetic_weight=0.3), cfg, 2, seed=0)
    assert calls[0]["n"] == 10 and calls[0]["steps"] == 8
    assert calls[0]["weights"].tolist() == pytest.approx([1] * 4 + [0.3] * 6)

    calls.clear()
    fit_with_usage(rx, ry, sx, sy, UsageConfig("mix"), cfg, 2, seed=0)
    fit_with_usage(rx, ry, sx[:0], sy[:0], UsageConfig("pretrain"), cfg, 2, seed=0)  # no synthetic: real only
    assert [(c["n"], c["steps"], c["weights"]) for c in calls] == [(10, 8, None), (4, 8, None)]


def test_bad_usage_settings_are_refused():
    with pytest.raises(ConfigError, match="leaves a phase without steps"):
        pretrain_steps(4, 0.1)
    with pytest.raises(ConfigError, match="pretrain_fraction"):
        UsageConfig("pretrain", pretrain_fraction=1.0).check()
    with pytest.raises(ConfigError, match="synthetic_weight"):
        UsageConfig("weighted", synthetic_weight=-1).check()
    with pytest.raises(ConfigError, match="not one of"):
        load_config(EvalConfig, None, ["usage.mode=finetune"])


def test_evaluate_command_records_the_usage_and_pairs_with_the_real_baseline(tiny_data, copypaste_dir, tmp_path,
                                                                            capsys):
    common = ["evaluate", "--data", str(tiny_data), "--split", "train", "--shots", "3", "--model", "unet-tiny",
              "--seeds", "0,1", *SEG_SETS]
    assert main([*common, "--out", str(tmp_path / "base")]) == 0
    base = tmp_path / "base" / "results.json"
    assert main([*common, "--synthetic", str(copypaste_dir), "--ratio", "1", "--usage", "pretrain",
                 "--pretrain-fraction", "0.5", "--baseline", str(base), "--out", str(tmp_path / "pre")]) == 0
    res = json.loads((tmp_path / "pre" / "results.json").read_text())
    assert res["config"]["usage"] == {"mode": "pretrain", "synthetic_weight": 1.0, "pretrain_fraction": 0.5}
    assert [r["usage"] for r in res["per_seed"]] == ["pretrain-f0.5"] * 2
    assert res["per_seed"][0]["phases"] == [{"data": "synthetic", "steps": 2}, {"data": "real", "steps": 2}]
    assert res["paired_gain"]["seeds"] == [0, 1]
    assert json.loads(base.read_text())["per_seed"][0]["usage"] == "real-only"
    # a flag that does not belong to the mode is one clear error line, exit code 2
    assert main([*common, "--synthetic", str(copypaste_dir), "--ratio", "1", "--synthetic-weight", "0.5",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--synthetic-weight applies to --usage weighted only" in capsys.readouterr().err
    # the baseline must be the same protocol: other steps, or a seed it lacks, are refused
    assert main([*common, "--synthetic", str(copypaste_dir), "--ratio", "1", "--usage", "weighted",
                 "--synthetic-weight", "0.5", "--set", "seg.steps=6", "--baseline", str(base),
                 "--out", str(tmp_path / "other")]) == 2
    assert "differs in 'seg'" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"lacks seed\(s\) \[2\]"):
        gain_over({**res, "per_seed": res["per_seed"] + [{**res["per_seed"][0], "seed": 2}]},
                  json.loads(base.read_text()), "base")


def test_ablate_sweeps_usage_modes_against_one_real_baseline(tiny_data, copypaste_dir, tmp_path):
    cfg_path = tmp_path / "ablate.yaml"
    cfg_path.write_text(
        f"data: {tiny_data}\nsplit: train\nshots: 3\nsources: {{copypaste: {copypaste_dir}}}\n"
        "ratios: [0, 1]\nmodels: [unet-tiny]\nseeds: [0, 1]\n"
        "usages: [{mode: mix}, {mode: pretrain, pretrain_fraction: 0.5}, {mode: weighted, synthetic_weight: 0.5}]\n"
        "seg: {model: unet-tiny, size: 32, steps: 4, batch_size: 4, warmup_steps: 1, threads: 1}\n"
    )
    out = tmp_path / "grid"
    assert main(["ablate", "--config", str(cfg_path), "--out", str(out)]) == 0
    ids = sorted(p.stem for p in (out / "cells").glob("*.json"))
    assert len(ids) == 8 and "unet-tiny__copypaste__r1__s0" in ids  # mix keeps the old cell ids
    assert "unet-tiny__copypaste__r1__s1__pretrain-f0.5" in ids and "unet-tiny__real__r0__s0" in ids
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].split(",")[:4] == ["model", "source", "usage", "ratio"]
    rows = {ln.split(",")[2]: ln for ln in summary[1:]}
    assert set(rows) == {"", "mix", "pretrain-f0.5", "weighted-w0.5"}
    report = (out / "report.md").read_text()
    assert "| weighted-w0.5 | 1 | 2 |" in report and "usage modes: mix, pretrain-f0.5, weighted-w0.5" in report
    # one mode from the command line runs only the missing cells of that mode
    cells = run_ablation(load_config(AblateConfig, cfg_path, ["usages=[{mode: weighted, synthetic_weight: 0.2}]"]),
                         out, log=None)
    assert len(cells) == 4 and {c["cell"]["usage"] for c in cells} == {"", "weighted-w0.2"}
    assert main(["ablate", "--config", str(cfg_path), "--out", str(out), "--usage", "mix"]) == 2  # sweeps 3 modes


def test_the_val_usage_config_is_a_valid_grid():
    from pathlib import Path

    from defectgen.seg.ablate import check_config, grid

    cfg = load_config(AblateConfig, Path(__file__).resolve().parents[1] / "experiments" / "neu_pay" / "ablate_neu64_val_usage.yaml")
    check_config(cfg)
    assert cfg.test_split == "val" and [u.label() for u in cfg.usages] == ["mix", "pretrain-f0.5", "weighted-w0.3"]
    assert len(grid(cfg)) == 78


def test_modes_take_crop_mode_lists_of_images():
    rx, ry = _pairs(4, 0)
    sx, sy = _pairs(4, 1)
    # crop mode passes lists of images of different sizes (here 32 x 32 and 32 x 24)
    lists = [[im[:, : 32 - 8 * (i % 2)] for i, im in enumerate(arr)] for arr in (rx, ry, sx, sy)]
    cfg = SegConfig(**{**TINY.__dict__, "resize_mode": "crop", "size": 16, "steps": 4})
    for usage in (UsageConfig("pretrain"), UsageConfig("weighted", synthetic_weight=0.5)):
        model, phases = fit_with_usage(*lists, usage, cfg, 2, seed=0)
        assert sum(p["steps"] for p in phases) == 4 and model.training is False
