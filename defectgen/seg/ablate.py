"""The ablation grid: sources × usage modes × ratios × models × seeds, resumable, with table, plot and report.

A cell is one trained-and-scored segmenter. Ratio 0 (real pairs only) is one cell per model and
seed, shared by every source and usage mode, and is the baseline of the paired gains. Each finished cell is written
to ``OUT/cells/<id>.json`` at once, so an interrupted run picks up where it stopped; a cell whose
stored protocol differs from the current config is refused rather than silently mixed in.

Outputs: ``results.csv`` (one row per cell), ``summary.csv`` (mean ± std and paired gain per
model/source/usage/ratio), ``miou_vs_ratio.png`` and ``report.md``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectgen.config import ConfigError, save_config, to_dict
from defectgen.data.selection import SelectionKeys
from defectgen.data import DefectDataset, PairRecord
from defectgen.io import atomic_write_bytes, atomic_write_json, atomic_write_text, safe_name
from defectgen.seg.evaluate import Log, RealData, environment, load_real, test_records, train_and_score
from defectgen.seg.metrics import SCALAR_METRICS
from defectgen.data.samples import MANIFEST, SyntheticSet, open_synthetic
from defectgen.seg.mixing import check_no_leak
from defectgen.seg.models import MODELS
from defectgen.seg.stats import mean_std, paired_gain
from defectgen.seg.store import open_store, protocol, result_key
from defectgen.seg.train import SegConfig
from defectgen.seg.usage import UsageConfig
from defectgen.tables import MISSING, csv_text, markdown_table, pct, png_bytes, pyplot

REAL = "real"  # the source name of ratio-0 cells

logger = logging.getLogger(__name__)


@dataclass
class AblateConfig(SelectionKeys):
    """The grid and the real-data selection it shares with the generator."""

    test_split: str = "test"
    test_list: str | None = None
    sources: dict[str, str] = field(default_factory=dict)  # name -> sample folder; an empty folder name skips it
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])
    usages: list[UsageConfig] = field(default_factory=lambda: [UsageConfig()])  # how synthetic pairs are used
    models: list[str] = field(default_factory=lambda: ["deeplabv3plus-r18", "unet-small"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    balanced: bool = True
    detect_min_area: float = 0.005
    seg: SegConfig = field(default_factory=SegConfig)  # seg.model is set per cell from ``models``


@dataclass(frozen=True)
class Cell:
    model: str
    source: str
    ratio: float
    seed: int
    usage: str = "mix"  # UsageConfig.label(); "" for the real-only cells

    @property
    def id(self) -> str:
        suffix = f"__{self.usage}" if self.usage not in ("", "mix") else ""  # mix keeps the ids of earlier grids
        return f"{self.model}__{self.source}__r{self.ratio:g}__s{self.seed}{suffix}"


def check_config(cfg: AblateConfig) -> None:
    """Refuse a config that cannot run, naming the key; drops sources given an empty folder."""
    if not cfg.data:
        raise ConfigError("config key 'data': the real data folder is required")
    if not isinstance(cfg.sources, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in cfg.sources.items()):
        raise ConfigError("config key 'sources': expected a mapping of name -> sample folder")
    cfg.sources = {k: v for k, v in cfg.sources.items() if v}  # `--set sources.NAME=` leaves a source out
    for name in cfg.sources:  # a source name becomes part of a file name under OUT/cells/
        safe_name(name, "config key 'sources': source name")
    if REAL in cfg.sources:
        raise ConfigError(f"config key 'sources': '{REAL}' is reserved for the ratio-0 cells")
    for m in cfg.models:
        if m not in MODELS:
            raise ConfigError(f"config key 'models': unknown model '{m}' (choose from {', '.join(MODELS)})")
    if not cfg.ratios or not cfg.models:  # an empty grid would write empty tables and call it done
        raise ConfigError(f"config key '{'ratios' if not cfg.ratios else 'models'}': at least one, got []")
    if any(r < 0 for r in cfg.ratios):
        raise ConfigError("config key 'ratios': ratios must be >= 0")
    if len(set(cfg.ratios)) != len(cfg.ratios):
        raise ConfigError(f"config key 'ratios': the same ratio twice ({cfg.ratios})")
    if any(r > 0 for r in cfg.ratios) and not cfg.sources:
        raise ConfigError("config key 'sources': ratios above 0 need at least one synthetic source")
    if not cfg.seeds:
        raise ConfigError("config key 'seeds': at least one seed")
    if not cfg.usages:
        raise ConfigError("config key 'usages': at least one usage mode (e.g. [{mode: mix}])")
    for i, u in enumerate(cfg.usages):
        u.check(f"usages[{i}]")
    cfg.seg.check("seg")
    labels = [u.label() for u in cfg.usages]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"config key 'usages': the same usage twice ({labels})")


def grid(cfg: AblateConfig) -> list[Cell]:
    """Seed-major order, so that a partial run already holds whole tables for its first seeds."""
    cells = []
    for seed in cfg.seeds:
        for model in cfg.models:
            if 0 in cfg.ratios:
                cells.append(Cell(model, REAL, 0.0, seed, ""))
            for source in cfg.sources:
                for u in cfg.usages:
                    cells += [Cell(model, source, float(r), seed, u.label()) for r in cfg.ratios if r > 0]
    return cells


def cell_key(cell: Cell, cfg: AblateConfig, real: RealData, syn: SyntheticSet | None) -> str:
    """The store key of a cell: its model's training settings, ratio, seed, stems and synthetic manifest."""
    # mix cells keep the keys of grids made before usage modes existed
    usage = {} if cell.usage in ("", "mix") else {"usage": to_dict(usage_of(cfg, cell))}
    return result_key(
        seg=protocol({**to_dict(cfg.seg), "model": cell.model}), ratio=cell.ratio, seed=cell.seed,
        balanced=cfg.balanced, detect_min_area=cfg.detect_min_area, train=real.train_stems, test=real.test_stems,
        synthetic=syn.manifest_sha256 if syn is not None and cell.ratio > 0 else None, **usage)


def usage_of(cfg: AblateConfig, cell: Cell) -> UsageConfig:
    """The usage mode of a cell (mix for the real-only cells, where it makes no difference)."""
    return next((u for u in cfg.usages if u.label() == cell.usage), UsageConfig())


def open_sources(cfg: AblateConfig, ds: DefectDataset, train: list[PairRecord],
                 test: list[PairRecord]) -> dict[str, SyntheticSet]:
    """Every synthetic source, checked against the real data and for leaks before anything is written."""
    sources: dict[str, SyntheticSet] = {}
    for name, folder in cfg.sources.items():
        syn = open_synthetic(folder)
        syn.class_map.check_compatible(ds.class_map, str(syn.root / MANIFEST))
        check_no_leak([r.stem for r in train], [r.stem for r in test], syn)
        sources[name] = syn
    return sources


def run_cell(cell: Cell, cfg: AblateConfig, real: RealData, syn: SyntheticSet | None, key: str, device: str | None,
             log: Log | None) -> dict[str, Any]:
    """Train and score one cell; the record its file holds."""
    seg = SegConfig(**{**to_dict(cfg.seg), "model": cell.model})
    run = train_and_score(real, syn, cell.ratio, cell.seed, seg, cfg.balanced, cfg.detect_min_area, device, log,
                          usage=usage_of(cfg, cell))
    return {"cell": vars(cell) | {"id": cell.id}, "key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **run}


def run_ablation(cfg: AblateConfig, out: str | Path, device: str | None = None, overwrite: bool = False,
                 log: Log | None = logger.info) -> list[dict[str, Any]]:
    """Run (or resume) the grid in ``out``; returns the finished cells and writes the tables, plot and report."""
    check_config(cfg)
    out = Path(out)
    ds, train = cfg.selection.select(log=False)
    test, test_source = test_records(ds, train, cfg.test_split, cfg.test_list)
    sources = open_sources(cfg, ds, train, test)
    store = open_store(out, "cells", overwrite, "ablation")
    real = load_real(ds, train, test, cfg.seg)
    save_config(cfg, out / "config.yaml")
    atomic_write_json(out / "selection.json", {
        "data": str(Path(ds.root).resolve()), "class_map": ds.class_map.to_dict(), "test_source": test_source,
        "train_stems": real.train_stems, "test_stems": real.test_stems,
        "sources": {n: s.identity() for n, s in sources.items()}, "environment": environment(device),
    })
    cells, tested = grid(cfg), f"{len(real.test_stems)} test pairs ({test_source})"
    finished: list[dict[str, Any]] = []
    for i, cell in enumerate(cells):
        key = cell_key(cell, cfg, real, sources.get(cell.source))
        done = store.finished(cell.id, key)
        if done is None:
            if log:
                log(f"[{i + 1}/{len(cells)}] {cell.id}")
            done = store.keep(cell.id, run_cell(cell, cfg, real, sources.get(cell.source), key, device, log))
            write_summary(out, cfg, finished + [done], len(real.train_stems), tested, len(cells))
        finished.append(done)
    write_summary(out, cfg, finished, len(real.train_stems), tested, len(cells))
    return finished


# ---- tables, plot, report -------------------------------------------------------------------


def summarize(cfg: AblateConfig, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, source, usage, ratio): mean ± std over seeds and the paired gain over ratio 0."""
    by: dict[tuple, dict[int, dict]] = {}
    for c in cells:
        usage = c["cell"].get("usage", "mix" if c["cell"]["ratio"] > 0 else "")
        by.setdefault((c["cell"]["model"], c["cell"]["source"], usage, c["cell"]["ratio"]), {})[c["seed"]] = c["metrics"]
    rows = []
    for (model, source, usage, ratio), runs in by.items():
        row: dict[str, Any] = {"model": model, "source": source, "usage": usage, "ratio": ratio, "seeds": len(runs)}
        for k in ("miou_all", "miou_defect", "mdice_defect", "pixel_fp_rate", "pixel_fn_rate", "image_recall", "image_fp_rate"):
            s = mean_std([m[k] for m in runs.values()])
            row[f"{k}_mean"], row[f"{k}_std"] = s["mean"], s["std"]
        base = by.get((model, REAL, "", 0.0), {})
        common = sorted(set(runs) & set(base))
        for k in ("miou_all", "miou_defect"):
            g = paired_gain([runs[s][k] for s in common], [base[s][k] for s in common]) if ratio > 0 and common else None
            row[f"gain_{k}"] = g["mean"] if g else None
            row[f"gain_{k}_ci_low"] = g["ci_low"] if g else None
            row[f"gain_{k}_ci_high"] = g["ci_high"] if g else None
        rows.append(row)
    order = {m: i for i, m in enumerate(cfg.models)}
    src_order = {s: i for i, s in enumerate([REAL, *cfg.sources])}
    use_order = {u.label(): i for i, u in enumerate(cfg.usages)}
    return sorted(rows, key=lambda r: (order.get(r["model"], 99), r["ratio"] > 0, src_order.get(r["source"], 99),
                                       use_order.get(r["usage"], 99), r["ratio"]))


def cell_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        m = c["metrics"]
        row = {"model": c["cell"]["model"], "source": c["cell"]["source"], "usage": c["cell"].get("usage", ""),
               "ratio": c["cell"]["ratio"], "seed": c["seed"],
               "num_real": c["num_real"], "num_synthetic": c["num_synthetic"]}
        row.update({k: m[k] for k in SCALAR_METRICS})
        row.update({f"iou_{n}": v["iou"] for n, v in m["per_class"].items()})
        row["train_seconds"] = c["train_seconds"]
        rows.append(row)
    return rows


def _gain(row: dict[str, Any], k: str) -> str:
    if row[f"gain_{k}"] is None:
        return MISSING
    lo, hi = row[f"gain_{k}_ci_low"], row[f"gain_{k}_ci_high"]
    ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None else ""
    return f"{100 * row[f'gain_{k}']:+.1f}{ci}"


SUMMARY_HEAD = ("model", "source", "usage", "ratio", "seeds", "mIoU defect", "mIoU all", "gain defect [95% CI]",
                "gain all [95% CI]", "pixel FP", "pixel FN", "image recall")


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The summary rows as the report's Markdown table (per cent, mean ± std over seeds, gains in points)."""
    return markdown_table(SUMMARY_HEAD, [
        [r["model"], r["source"], r.get("usage") or MISSING, f"{r['ratio']:g}", r["seeds"],
         pct(r["miou_defect_mean"], r["miou_defect_std"]), pct(r["miou_all_mean"], r["miou_all_std"]),
         _gain(r, "miou_defect"), _gain(r, "miou_all"), pct(r["pixel_fp_rate_mean"]), pct(r["pixel_fn_rate_mean"]),
         pct(r["image_recall_mean"])]
        for r in rows])


def plot(cfg: AblateConfig, rows: list[dict[str, Any]]) -> bytes:
    """mIoU (defect-only and all classes) against ratio, one panel per model, one line per source."""
    plt = pyplot()
    models = [m for m in cfg.models if any(r["model"] == m for r in rows)]
    fig, axes = plt.subplots(2, max(1, len(models)), figsize=(4.2 * max(1, len(models)), 6.4), squeeze=False, sharex=True)
    for col, model in enumerate(models):
        base = [r for r in rows if r["model"] == model and r["source"] == REAL]
        for row_i, key in enumerate(("miou_defect", "miou_all")):
            ax = axes[row_i][col]
            for source in cfg.sources:
                for usage in [u.label() for u in cfg.usages]:
                    mine = [r for r in rows if r["model"] == model and r["source"] == source and r["usage"] == usage]
                    pts = sorted(base + mine, key=lambda r: r["ratio"])
                    pts = [p for p in pts if p[f"{key}_mean"] is not None]
                    if mine and pts:
                        name = source if len(cfg.usages) == 1 else f"{source}, {usage}"
                        ax.errorbar([p["ratio"] for p in pts], [100 * p[f"{key}_mean"] for p in pts],
                                    yerr=[100 * (p[f"{key}_std"] or 0) for p in pts], marker="o", capsize=3, label=name)
            if not cfg.sources and base:
                ax.errorbar([0], [100 * base[0][f"{key}_mean"]], yerr=[100 * (base[0][f"{key}_std"] or 0)], marker="o", label=REAL)
            ax.set_title(f"{model}" if row_i == 0 else "")
            ax.set_ylabel("mIoU defect classes (%)" if key == "miou_defect" else "mIoU all classes (%)")
            ax.grid(alpha=0.3)
            if row_i == 1:
                ax.set_xlabel("synthetic pairs per real pair (0 = real only)")
    if axes[0][0].get_legend_handles_labels()[0]:  # a partial grid may have no synthetic cell yet
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def write_summary(out: Path, cfg: AblateConfig, cells: list[dict[str, Any]], n_train: int, test: str,
                  total: int | None = None) -> None:
    """Tables, plot and report of the ``cells`` finished so far; the report's first line says when the grid of
    ``total`` cells is unfinished."""
    rows = summarize(cfg, cells)
    unfinished = total is not None and len(cells) < total
    atomic_write_text(out / "results.csv", csv_text(cell_rows(cells)))
    atomic_write_text(out / "summary.csv", csv_text(rows))
    atomic_write_bytes(out / "miou_vs_ratio.png", plot(cfg, rows))
    seg = cfg.seg
    seconds = [c["train_seconds"] for c in cells]
    report = (
        (f"# UNFINISHED: {len(cells)} of {total} cells; rerun the same `defectgen ablate` to continue\n\n"
         if unfinished else "")
        + "# Segmentation with synthetic pairs: ablation\n\n"
        f"- Real data: `{cfg.data}`, {n_train} training pairs "
        f"({f'{cfg.shots} per defect class' if cfg.list_file is None and cfg.shots else 'selection: ' + str(cfg.list_file or 'all')}"
        f"{', split ' + cfg.split if cfg.split else ''}, selection seed {cfg.selection_seed}); "
        f"{test}.\n"
        f"- Sources: {', '.join(f'{k} = `{v}`' for k, v in cfg.sources.items()) or 'none'}; ratio = synthetic pairs per real pair"
        f"{', drawn balanced over defect classes' if cfg.balanced else ''}; "
        f"usage modes: {', '.join(u.label() for u in cfg.usages)} (see docs/evaluation.md).\n"
        f"- Training (identical for every cell): {seg.steps} steps, batch {seg.batch_size}, {seg.size} px, AdamW lr {seg.lr:g} "
        f"with {seg.warmup_steps}-step warm-up and cosine decay, flips/90° turns, "
        f"{'encoder from ' + seg.encoder_weights_path if seg.encoder_weights_path else 'from scratch'}; "
        f"the last step is scored, no checkpoint picking.\n"
        f"- Seeds: {', '.join(map(str, sorted({c['seed'] for c in cells})))}; values are mean ± std over seeds in %; "
        "gain = paired difference to ratio 0 of the same model and seed, mean [95% t-interval] in points.\n"
        "- mIoU all = mmseg-style mean over all classes incl. background (the paper's number); mIoU defect = defect classes only.\n"
        f"- {len(cells)} cells, {sum(seconds) / max(1, len(seconds)):.0f} s training per cell on average.\n\n"
        + summary_markdown(rows)
        + "\n![mIoU against ratio](miou_vs_ratio.png)\n"
    )
    atomic_write_text(out / "report.md", report)
