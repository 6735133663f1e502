"""Real-only validation mIoU against training steps: the step count is chosen on val, never on test.

Every point is a full training run of ``steps`` steps (its own warm-up and cosine decay to zero),
scored once on the validation split, so the curve shows what ``seg.steps = N`` would give, not the
intermediate checkpoints of one long run. The chosen step count is the smallest one whose mean
(over seeds) is within ``tolerance`` of the best mean on the curve: the point where more steps stop
paying. The choice and its numbers go to the protocol log. With ``until_flat`` the curve is extended
only as far as it rises: step counts are run in increasing order, and once a point's mean gains no more than
``tolerance`` over the best earlier mean the larger counts are not run (listed as ``not_run``).

    OUT/cells/steps<N>__s<seed>.json   one trained-and-scored run (resumable)
    OUT/curve.json  OUT/curve.csv  OUT/curve.md  OUT/curve.png
"""
from __future__ import annotations

import logging
import dataclasses
from pathlib import Path
from typing import Any

from defectgen.config import ConfigError, to_dict
from defectgen.data import DefectDataset, PairRecord
from defectgen.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from defectgen.seg.evaluate import EvalConfig, Log, RealData, environment, load_real, test_records, train_and_score
from defectgen.seg.protocol import TEST_SPLITS, log_decision
from defectgen.seg.stats import mean_std
from defectgen.seg.store import ResultStore, open_store, protocol, result_key
from defectgen.tables import csv_text, markdown_table, pct_stat, png_bytes, pyplot

METRICS = ("miou_defect", "miou_all")

logger = logging.getLogger(__name__)


def choose_converged(points: list[dict[str, Any]], metric: str, tolerance: float) -> int:
    """The smallest step count whose mean ``metric`` is within ``tolerance`` of the best mean."""
    scored = [p for p in points if p[metric]["mean"] is not None]
    if not scored:
        raise ConfigError(f"no step count has a defined mean {metric}")
    best = max(p[metric]["mean"] for p in scored)
    return min(p["steps"] for p in scored if p[metric]["mean"] >= best - tolerance)


def choose_schedule(curves: list[dict[str, Any]], metric: str, tolerance: float) -> tuple[dict[str, Any], int]:
    """Across curves of one model and selection that differ in their settings (e.g. the peak learning rate):
    the curve and step count with the fewest steps whose mean ``metric`` is within ``tolerance`` of the best mean
    on any curve (at equal steps, the higher mean)."""
    for c in curves[1:]:
        if (c["model"], c["selection"], c["scored_on"]) != (curves[0]["model"], curves[0]["selection"], curves[0]["scored_on"]):
            raise ConfigError("the curves to choose among must share the model, the training and the scored images")
    scored = [(c, p) for c in curves for p in c["points"] if p[metric]["mean"] is not None]
    if not scored:
        raise ConfigError(f"no point has a defined mean {metric}")
    best = max(p[metric]["mean"] for _, p in scored)
    curve, point = min(((c, p) for c, p in scored if p[metric]["mean"] >= best - tolerance),
                       key=lambda cp: (cp[1]["steps"], -cp[1][metric]["mean"]))
    return curve, point["steps"]


def cell_key(cfg: EvalConfig, steps: int, seed: int, train: list[str], scored: list[str]) -> str:
    """The store key of one point's run: the training settings at ``steps``, the seed and the stems."""
    negatives = {"negatives": cfg.negatives} if cfg.negatives else {}
    return result_key(seg=protocol({**to_dict(cfg.seg), "steps": steps}), seed=seed,
                      detect_min_area=cfg.detect_min_area, train=train, scored=scored, **negatives)


def flattened(points: list[dict[str, Any]], metric: str, tolerance: float) -> bool:
    """Whether the newest point gains no more than ``tolerance`` over the best mean before it (the curve is flat).

    The same boundary as ``choose_converged``: a flat point's predecessor counts as converged."""
    *earlier, last = [p[metric]["mean"] for p in points]
    earlier = [m for m in earlier if m is not None]
    return bool(earlier) and last is not None and last <= max(earlier) + tolerance


def _check(dataset: DefectDataset, cfg: EvalConfig, steps: list[int], metric: str, tolerance: float,
           scored: list[PairRecord]) -> None:
    """Refuse a curve that would choose on test, or cannot run, before anything is written."""
    if not steps or any(s < 1 for s in steps):
        raise ConfigError(f"steps must be positive integers, got {steps}")
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {list(METRICS)}, got '{metric}'")
    if not tolerance >= 0:
        raise ConfigError(f"the tolerance must not be negative, got {100 * tolerance:g} points")
    if not cfg.seeds:
        raise ConfigError("no seeds given")
    on_test = sorted({r.stem for r in scored} & {s for t in TEST_SPLITS for s in dataset.splits.get(t, [])})
    if on_test:
        raise ConfigError(f"{len(on_test)} scored image(s) belong to the test split, e.g. {on_test[:3]}; "
                          "the step count is chosen on validation images only")


def _point(n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One point of the curve: mean ± std over the seeds' runs at ``n`` steps."""
    return {
        "steps": n, "seeds": [r["seed"] for r in runs],
        **{m: mean_std([r["metrics"][m] for r in runs]) for m in METRICS},
        "per_seed": {str(r["seed"]): {m: r["metrics"][m] for m in METRICS} for r in runs},
        "train_seconds": mean_std([r["train_seconds"] for r in runs])["mean"],
    }


def _runs_at(n: int, store: ResultStore, cfg: EvalConfig, real: RealData, source: str, device: str | None,
             log: Log | None) -> list[dict[str, Any]]:
    """Every seed's real-only run of ``n`` steps, read back from ``store`` when it finished earlier."""
    runs = []
    for seed in cfg.seeds:
        name, key = f"steps{n}__s{seed}", cell_key(cfg, n, seed, real.train_stems, real.test_stems)
        done = store.finished(name, key)
        if done is None:
            if log:
                log(f"{cfg.seg.model}, {n} steps, seed {seed}: real only, scored on {source}")
            seg = dataclasses.replace(cfg.seg, steps=n, warmup_steps=min(cfg.seg.warmup_steps, n))
            run = train_and_score(real, None, 0.0, seed, seg, cfg.balanced, cfg.detect_min_area, device, log, cfg.negatives)
            done = store.keep(name, {"key": key, **run})
        runs.append(done)
    return runs


def run_steps_curve(
    dataset: DefectDataset,
    train: list[PairRecord],
    cfg: EvalConfig,
    steps: list[int],
    out: str | Path,
    metric: str = "miou_defect",
    tolerance: float = 0.01,
    protocol_log: str | Path | None = None,
    device: str | None = None,
    log: Log | None = logger.info,
    overwrite: bool = False,
    until_flat: bool = False,
    decision: str | None = None,
) -> dict[str, Any]:
    """Real-only runs at each step count and seed, scored on ``cfg.test_split`` (a validation split).

    Returns (and writes to ``out/curve.json``) the points, the chosen step count and the rule;
    appends the decision ``decision`` (default ``seg.steps[model]``) to ``protocol_log`` (default
    ``out/protocol.jsonl``).
    """
    if cfg.test_list is None and cfg.test_split in TEST_SPLITS:
        raise ConfigError(f"the step count is chosen on a validation split, not on '{cfg.test_split}' (use --score-split val)")
    out = Path(out)
    scored, source = test_records(dataset, train, cfg.test_split, cfg.test_list)
    _check(dataset, cfg, steps, metric, tolerance, scored)
    store = open_store(out, "cells", overwrite, "steps curve")
    real = load_real(dataset, train, scored, cfg.seg)
    points, todo = [], sorted(set(steps))
    while todo and not (until_flat and len(points) > 1 and flattened(points, metric, tolerance)):
        n = todo.pop(0)
        points.append(_point(n, _runs_at(n, store, cfg, real, source, device, log)))
    chosen = choose_converged(points, metric, tolerance)
    rule = f"smallest step count whose mean {metric} is within {100 * tolerance:g} mIoU points of the best mean"
    if until_flat:
        rule += f"; extended until a point gained no more than {100 * tolerance:g} points over the best earlier mean"
    curve = {
        "command": "steps-curve", "model": cfg.seg.model, "scored_on": source, "metric": metric, "tolerance": tolerance,
        "chosen_steps": chosen, "rule": rule, "points": points, "not_run": todo, "config": to_dict(cfg),
        "selection": {"data": str(Path(dataset.root).resolve()), "train_stems": real.train_stems,
                      "scored_stems": real.test_stems},
        "environment": environment(device),
    }
    write_outputs(out, curve)
    log_decision(protocol_log or out / "protocol.jsonl", decision or f"seg.steps[{cfg.seg.model}]", chosen,
                 split=cfg.test_split or "list", rule=rule,
                 evidence={str(p["steps"]): p[metric]["mean"] for p in points}, source=str(out / "curve.json"),
                 note=f"real only, {cfg.seg.model}, seeds {list(cfg.seeds)}, {len(real.train_stems)} training pairs")
    return curve


def write_outputs(out: Path, curve: dict[str, Any]) -> None:
    """curve.json, curve.csv, curve.md and curve.png."""
    atomic_write_json(out / "curve.json", curve)
    rows = [{"steps": p["steps"], "seeds": len(p["seeds"]), **{f"{m}_{k}": p[m][k] for m in METRICS for k in ("mean", "std")},
             "train_seconds": p["train_seconds"]} for p in curve["points"]]
    atomic_write_text(out / "curve.csv", csv_text(rows))
    table = markdown_table(["steps", "seeds", "mIoU defect", "mIoU all", "train s/run"], [
        [f"{p['steps']}{' (chosen)' if p['steps'] == curve['chosen_steps'] else ''}", len(p["seeds"]),
         pct_stat(p["miou_defect"]), pct_stat(p["miou_all"]), f"{p['train_seconds']:.0f}"] for p in curve["points"]])
    seg = curve["config"]["seg"]
    atomic_write_text(out / "curve.md", (
        f"# Real-only segmentation: {curve['scored_on']} mIoU against training steps\n\n"
        f"- Model `{curve['model']}`, {len(curve['selection']['train_stems'])} real training pairs, {seg['size']} px, "
        f"batch {seg['batch_size']}, AdamW lr {seg['lr']:g}, each point a full run with its own warm-up and cosine decay.\n"
        f"- Scored on {curve['scored_on']} ({len(curve['selection']['scored_stems'])} images), never on test; "
        "values are mean ± std over seeds in %.\n"
        f"- Chosen: **{curve['chosen_steps']} steps** ({curve['rule']}).\n"
        + (f"- Not run: {', '.join(map(str, curve['not_run']))} steps (the curve had flattened).\n"
           if curve.get("not_run") else "") + "\n" + table + "\n![curve](curve.png)\n"))
    atomic_write_bytes(out / "curve.png", _plot(curve))


def _plot(curve: dict[str, Any]) -> bytes:
    """Both mIoUs against the step count (log axis), the chosen count marked."""
    fig, ax = pyplot().subplots(figsize=(5.5, 3.6))
    for m, label in (("miou_defect", "mIoU defect classes"), ("miou_all", "mIoU all classes")):
        pts = [p for p in curve["points"] if p[m]["mean"] is not None]
        ax.errorbar([p["steps"] for p in pts], [100 * p[m]["mean"] for p in pts],
                    yerr=[100 * (p[m]["std"] or 0) for p in pts], marker="o", capsize=3, label=label)
    ax.axvline(curve["chosen_steps"], color="grey", ls="--", lw=1, label=f"chosen: {curve['chosen_steps']}")
    ax.set_xscale("log", base=2)
    steps = [p["steps"] for p in curve["points"]]
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("training steps (each a full schedule)")
    ax.set_ylabel(f"mIoU on {curve['scored_on']} (%)")
    ax.set_title(curve["model"], fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)
