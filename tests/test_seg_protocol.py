"""Choosing on val, never on test: the steps curve script, the protocol log and scoring on val."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_seg_end_to_end import make_dataset

from defectgen.cli import main
from defectgen.config import ConfigError
from defectgen.seg.curve import choose_converged, choose_schedule, flattened
from defectgen.seg.protocol import log_decision, log_final, read_decision, read_protocol

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def split_data(tmp_path_factory):
    """Train (12), val (5) and test (5) split files."""
    root = make_dataset(tmp_path_factory.mktemp("protocol") / "data", n_train=12, n_test=10)
    sets = root / "ImageSets" / "Segmentation"
    held = (sets / "test.txt").read_text().split()
    (sets / "val.txt").write_text("\n".join(held[:5]) + "\n")
    (sets / "test.txt").write_text("\n".join(held[5:]) + "\n")
    return root


def _script(*argv):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "tools" / "seg_steps_curve.py"), *map(str, argv)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=3600)


def test_converged_is_the_smallest_step_count_near_the_best():
    pts = [{"steps": s, "miou_defect": {"mean": m}} for s, m in ((100, 0.30), (200, 0.395), (400, 0.40), (800, 0.38))]
    assert choose_converged(pts, "miou_defect", 0.01) == 200
    assert choose_converged(pts, "miou_defect", 0.0) == 400
    assert choose_converged(pts, "miou_defect", 0.2) == 100


def test_a_curve_is_flat_once_a_point_gains_less_than_the_tolerance_over_the_best_before_it():
    pts = [{"steps": s, "miou_defect": {"mean": m}} for s, m in ((400, 0.37), (800, 0.43), (1600, 0.435), (3200, None))]
    assert not flattened(pts[:2], "miou_defect", 0.01)  # +6 points
    assert flattened(pts[:3], "miou_defect", 0.01)  # +0.5 points: flat within 1 point
    assert not flattened(pts[:3], "miou_defect", 0.004)
    assert not flattened(pts, "miou_defect", 0.01)  # an undefined mean says nothing
    assert flattened([pts[1], {"steps": 1600, "miou_defect": {"mean": 0.40}}], "miou_defect", 0.01)  # a fall is flat


def _curve(lr, means, model="dl"):
    return {"model": model, "selection": {"train_stems": ["a"]}, "scored_on": "split val", "config": {"seg": {"lr": lr}},
            "points": [{"steps": s, "miou_defect": {"mean": m}} for s, m in means]}


def test_the_schedule_is_the_fewest_steps_near_the_best_of_every_learning_rate():
    slow, fast = _curve(0.001, [(1600, 0.443), (3200, 0.454)]), _curve(0.003, [(1600, 0.450), (3200, 0.452)])
    assert choose_schedule([slow, fast], "miou_defect", 0.01) == (fast, 1600)
    assert choose_schedule([slow, fast], "miou_defect", 0.0) == (slow, 3200)
    twin = _curve(0.01, [(1600, 0.449)])
    assert choose_schedule([twin, slow, fast], "miou_defect", 0.01) == (fast, 1600)  # equal steps: the higher mean
    with pytest.raises(ConfigError, match="share the model"):
        choose_schedule([slow, _curve(0.003, [(800, 0.5)], model="other")], "miou_defect", 0.01)


def test_protocol_log_refuses_test_choices_and_scores_test_once(tmp_path):
    log = tmp_path / "results" / "protocol.jsonl"
    log_decision(log, "usage", "pretrain-f0.5", split="val", rule="best mean val gain", evidence={"mix": 0.01})
    log_decision(log, "usage", "pretrain-f0.5", split="val", rule="best mean val gain", evidence={"mix": 0.01})
    with pytest.raises(ConfigError, match="validation split"):
        log_decision(log, "ratio", 1.0, split="test", rule="best", evidence={})
    log_final(log, "headline table", split="test", results="test.csv")
    with pytest.raises(ConfigError, match="scored once"):
        log_final(log, "headline table", split="test", results="test.csv")
    entries = read_protocol(log)
    assert [e["kind"] for e in entries] == ["decision", "final"]  # the repeated identical decision is logged once
    assert entries[1]["decisions_before"] == ["usage"] and entries[0]["evidence"] == {"mix": 0.01}


def test_a_later_stage_reads_back_the_newest_decision(tmp_path):
    log = tmp_path / "protocol.jsonl"
    with pytest.raises(ConfigError, match="no decision 'ratio' yet"):
        read_decision(log, "ratio")
    log_decision(log, "ratio", 1.0, split="val", rule="best", evidence={"1": 0.02})
    log_decision(log, "ratio", 2.0, split="val", rule="best", evidence={"1": 0.02, "2": 0.03})
    assert read_decision(log, "ratio")["chosen"] == 2.0


def test_steps_curve_script_chooses_on_val_and_resumes(split_data, tmp_path):
    out, log = tmp_path / "curve", tmp_path / "protocol.jsonl"
    argv = ["--data", split_data, "--split", "train", "--shots", "3", "--model", "unet-tiny", "--steps", "2,4",
            "--seeds", "0,1", "--set", "seg.size=32", "--set", "seg.batch_size=4", "--set", "seg.threads=1",
            "--set", "seg.warmup_steps=1", "--out", out, "--protocol-log", log]
    done = _script(*argv)
    assert done.returncode == 0, done.stderr
    assert "[defectgen] unet-tiny, 4 steps, seed 1: real only, scored on split val" in done.stderr  # a library log line
    curve = json.loads((out / "curve.json").read_text())
    assert curve["scored_on"] == "split val" and len(curve["selection"]["scored_stems"]) == 5
    assert [p["steps"] for p in curve["points"]] == [2, 4] and curve["points"][1]["seeds"] == [0, 1]
    means = {p["steps"]: p["miou_defect"]["mean"] for p in curve["points"]}
    assert curve["chosen_steps"] == choose_converged(curve["points"], "miou_defect", 0.01)
    for name in ("curve.csv", "curve.md", "curve.png"):
        assert (out / name).is_file(), name
    [entry] = read_protocol(log)
    assert entry["decision"] == "seg.steps[unet-tiny]" and entry["split"] == "val" and entry["chosen"] == curve["chosen_steps"]
    assert entry["evidence"] == {str(k): v for k, v in means.items()}
    cells = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert len(cells) == 4
    again = _script(*argv)  # resumes: nothing retrained, the same decision is not logged twice
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == cells
    assert len(read_protocol(log)) == 1
    refused = _script(*argv[:-4], "--score-split", "test", "--out", tmp_path / "bad")
    assert refused.returncode == 2 and "validation split" in refused.stderr and "Traceback" not in refused.stderr


def test_until_flat_stops_extending_the_curve_once_a_point_gains_too_little(split_data, tmp_path):
    out = tmp_path / "curve"
    common = ["--data", split_data, "--split", "train", "--shots", "3", "--model", "unet-tiny", "--seeds", "0",
              "--set", "seg.size=32", "--set", "seg.batch_size=4", "--set", "seg.threads=1", "--set", "seg.warmup_steps=1",
              "--out", out, "--protocol-log", tmp_path / "protocol.jsonl", "--until-flat"]
    done = _script(*common, "--steps", "1,2,4,8", "--tolerance", "100")  # no point can gain 100 mIoU points
    assert done.returncode == 0, done.stderr
    curve = json.loads((out / "curve.json").read_text())
    assert [p["steps"] for p in curve["points"]] == [1, 2] and curve["not_run"] == [4, 8]
    assert sorted(p.name for p in (out / "cells").glob("*.json")) == ["steps1__s0.json", "steps2__s0.json"]
    assert "Not run: 4, 8 steps" in (out / "curve.md").read_text()
    assert curve["chosen_steps"] == 1 and "extended until" in read_protocol(tmp_path / "protocol.jsonl")[0]["rule"]
    refused = _script(*[tmp_path / "bad" if a == out else a for a in common], "--steps", "1,2", "--tolerance", "-1")
    assert refused.returncode == 2 and "tolerance must not be negative" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "bad").exists()


def test_evaluate_scores_the_val_split(split_data, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(split_data), "--split", "train", "--shots", "3", "--model", "unet-tiny",
                 "--seeds", "0", "--test-split", "val", "--set", "seg.size=32", "--set", "seg.steps=2",
                 "--set", "seg.batch_size=4", "--set", "seg.threads=1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    val = (split_data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert res["selection"]["test_source"] == "split val" and res["selection"]["test_stems"] == val


def test_choose_schedule_logs_the_learning_rate_and_steps_of_two_real_curves(split_data, tmp_path):
    common = ["--data", split_data, "--split", "train", "--shots", "3", "--model", "unet-tiny", "--seeds", "0",
              "--set", "seg.size=32", "--set", "seg.batch_size=4", "--set", "seg.threads=1", "--set", "seg.warmup_steps=1",
              "--steps", "1,2"]
    log = tmp_path / "protocol.jsonl"
    for lr in ("0.001", "0.01"):
        done = _script(*common, "--set", f"seg.lr={lr}", "--out", tmp_path / lr, "--protocol-log", log,
                       "--decision", f"seg.steps[unet-tiny, lr {lr}]")
        assert done.returncode == 0, done.stderr
    assert [e["decision"] for e in read_protocol(log)] == ["seg.steps[unet-tiny, lr 0.001]", "seg.steps[unet-tiny, lr 0.01]"]
    beat = [sys.executable, str(REPO / "experiments" / "beat_copypaste" / "beat_copypaste.py"), "choose-schedule",
            "--curve", tmp_path / "0.001", "--curve", tmp_path / "0.01", "--log", log]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(list(map(str, beat)), capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    curves = [json.loads((tmp_path / lr / "curve.json").read_text()) for lr in ("0.001", "0.01")]
    want, steps = choose_schedule(curves, "miou_defect", 0.01)
    assert done.stdout.split() == [f"{want['config']['seg']['lr']:g}", str(steps)]
    entry = read_protocol(log)[-1]
    assert entry["decision"] == "seg.schedule[unet-tiny]" and entry["split"] == "val"
    assert entry["chosen"] == {"lr": want["config"]["seg"]["lr"], "steps": steps}
    assert set(entry["evidence"]) == {f"lr {lr}, {n} steps" for lr in ("0.001", "0.01") for n in (1, 2)}
    missing = subprocess.run(list(map(str, beat[:-2] + ["--curve", tmp_path / "none", "--log", log])), capture_output=True, text=True,
                             env=env, cwd=REPO)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "curve.json").write_text("{not json")
    broken = subprocess.run(list(map(str, beat[:-2] + ["--curve", tmp_path / "broken", "--log", log])), capture_output=True,
                            text=True, env=env, cwd=REPO)
    assert broken.returncode == 2 and "broken/curve.json: not a steps curve" in broken.stderr and "Traceback" not in broken.stderr
