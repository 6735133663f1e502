"""`defectgen compare` and `defectgen demo` end to end on tiny models."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from defectgen.cli import main
from defectgen.compare import CompareConfig, rows
from defectgen.config import ConfigError
from defectgen.data import open_dataset, select_records


def _compare_config(tmp_path: Path, demo_data: Path, tiny_config: Path) -> Path:
    ds = open_dataset(demo_data)
    train = {r.stem for r in select_records(ds, shots=2)}
    test = tmp_path / "test.txt"
    test.write_text("\n".join(r.stem for r in ds.records if r.stem not in train))
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(f"""
data: {demo_data}
split: null
shots: 2
generator_config: {tiny_config}
num_samples: 6
steps: 5
sample_batch_size: 6
switches: [0.4]
small_variants: {{deep: [small.layers_per_block=2]}}
eval: {{ratio: 1.0, seeds: [0, 1], test_list: {test}, seg: {{model: unet-tiny, size: 16, steps: 2, batch_size: 4, warmup_steps: 1}}}}
metrics: {{size: 16, kid_subsets: 5}}
""")
    return cfg


def test_rows_cover_the_alternatives() -> None:
    cfg = CompareConfig(data="x", switches=[0.1, 0.4], small_variants={"rf25": ["small.layers_per_block=1"]})
    names = [r.name for r in rows(cfg)]
    assert names == ["vanilla-ddpm", "small-only", "two-stage-u0.10", "two-stage-u0.40", "two-stage-u0.40-rf25",
                     "copy-paste"]
    assert [r.switch for r in rows(cfg)][:2] == [0.0, 1.0]
    cfg.only_rows = ["two-stage-u0.40", "copy-paste"]
    assert [r.name for r in rows(cfg)] == ["two-stage-u0.40", "copy-paste"]
    cfg.only_rows = ["two-stage-u0.50"]
    with pytest.raises(ConfigError, match="two-stage-u0.50"):
        rows(cfg)


@pytest.mark.slow
def test_compare_end_to_end_and_resume(tmp_path: Path, demo_data: Path, tiny_config: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    cfg_path, out = _compare_config(tmp_path, demo_data, tiny_config), tmp_path / "cmp"
    assert main(["compare", "--config", str(cfg_path), "--out", str(out)]) == 0
    table = list(csv.DictReader((out / "results.csv").open()))
    assert [r["row"] for r in table] == ["real-only", "vanilla-ddpm", "small-only", "two-stage-u0.40",
                                         "two-stage-u0.40-deep", "copy-paste"]
    for r in table[1:]:
        assert r["fid"] and r["memorised_feature"] and r["miou_defect"] and r["gain"], r["row"]
    # vanilla and small-only use one model for every step; the variant swaps in its own small model
    man = {r["row"]: json.loads((out / "rows" / r["row"] / "samples" / "manifest.json").read_text())
           for r in table[1:-1]}
    assert man["vanilla-ddpm"]["timesteps"]["small"] == [] and man["small-only"]["timesteps"]["large"] == []
    assert man["two-stage-u0.40-deep"]["model"]["variant"] == "deep"
    assert (out / "variants" / "deep" / "small" / "final" / "config.json").is_file()
    assert not (out / "variants" / "deep" / "large").exists()
    copied = json.loads((out / "rows" / "copy-paste" / "metrics" / "metrics.json").read_text())
    assert copied["memorisation"]["pixel"]["share_memorised"] > 0.5  # pasted onto training images
    for png in ("gain_vs_switch.png", "memorisation_vs_switch.png"):
        assert (out / png).stat().st_size > 0
    assert "not comparable to published Inception FID" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()  # one page: the comparison table, its plots, every row's grid
    assert "two-stage-u0.40-deep" in page and 'alt="gain_vs_switch.png"' in page
    assert "rows/vanilla-ddpm/samples/grid.png" in page and "generator/large" in page
    # resumable: a second run recomputes nothing
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("eval.json")}
    capsys.readouterr()
    assert main(["compare", "--config", str(cfg_path), "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("eval.json")} == stamp
    assert "training" not in capsys.readouterr().out
    # and refuses to mix a different protocol into the same folder
    assert main(["compare", "--config", str(cfg_path), "--out", str(out), "--set", "num_samples=7"]) == 2
    # a folder saved before an option existed resumes (the option takes its default)
    saved = (out / "config.yaml").read_text()
    assert "only_rows: []" in saved
    (out / "config.yaml").write_text(saved.replace("only_rows: []\n", ""))
    assert main(["compare", "--config", str(cfg_path), "--out", str(out), "--only", "score"]) == 0
    # rows can be shared out between processes: only_rows is not part of the folder's identity
    assert main(["compare", "--config", str(cfg_path), "--out", str(out), "--only", "score",
                 "--set", "only_rows=[copy-paste]"]) == 0
    assert [r["row"] for r in csv.DictReader((out / "results.csv").open())] == [r["row"] for r in table]
    # a subset of rows: only they are listed
    assert main(["compare", "--config", str(cfg_path), "--out", str(tmp_path / "sub"),
                 "--set", "only_rows=[copy-paste]", "--only", "generate"]) == 0
    assert sorted(p.name for p in (tmp_path / "sub" / "rows").iterdir()) == ["copy-paste"]


def test_demo_command_runs_the_whole_path(tmp_path: Path, tiny_config: Path) -> None:
    out = tmp_path / "demo"
    tiny_demo = ["--demo-set", "per_class=4", "--demo-set", "shots=2", "--demo-set", "metrics=false",
                 "--demo-set", "seeds=[]"]
    assert main(["demo", "--out", str(out), "--config", str(tiny_config), "--num", "3", "--quiet", *tiny_demo]) == 0
    assert len(list((out / "samples" / "images").iterdir())) == 3
    assert (out / "samples" / "grid.png").is_file() and (out / "run" / "pipeline" / "model_index.json").is_file()
    assert main(["demo", "--out", str(out), "--config", str(tiny_config), "--quiet"]) == 2  # not overwritten
