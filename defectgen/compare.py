"""``defectgen compare``: the method against its alternatives, same data, budget and sample count.

Rows: vanilla DDPM (large model only, switch 0), small model only (switch 1), two-stage at several
switch points, a receptive-field ablation of the small model (two-stage at ``variant_switch``),
and copy-paste. Every row gets the same number of pairs, then generation-quality metrics and the
downstream segmentation gain at one ratio over the real-only baseline (paired over seeds).

    OUT/generator/            the two-stage run (or ``run:`` names an existing one)
    OUT/variants/<name>/      small models of other receptive fields (the large one is shared)
    OUT/rows/<row>/samples/   pairs;  metrics/metrics.json;  eval.json
    OUT/results.csv  OUT/report.md  OUT/gain_vs_switch.png  OUT/memorisation_vs_switch.png

Every step's output is checked before it runs, so an interrupted compare resumes where it stopped.
``--only generate`` stops after sampling (e.g. on a GPU machine); ``--only score`` scores what exists.
"""
from __future__ import annotations

import logging
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defectgen.config import MAX_PAIRS, ConfigError, load_config, need, save_config, to_dict
from defectgen.data import DefectDataset, PairRecord, load_pairs
from defectgen.data.selection import SelectionConfig, SelectionKeys
from defectgen.data.samples import is_complete
from defectgen.generator_config import GeneratorConfig
from defectgen.io import atomic_write_bytes, atomic_write_json, atomic_write_text, safe_name
from defectgen.quality.compute import MetricsConfig
from defectgen.schedule import Sampler
from defectgen.seg.evaluate import EvalConfig, Log
from defectgen.seg.store import ResultStore, protocol
from defectgen.tables import MISSING, csv_text, fmt, markdown_table, pct, png_bytes, pyplot

logger = logging.getLogger(__name__)


@dataclass
class CompareConfig(SelectionKeys):
    generator_config: str = "configs/neu64.yaml"
    generator_overrides: list[str] = field(default_factory=list)
    run: str | None = None  # reuse a trained two-stage run folder instead of training one
    num_samples: int = 300
    sampler: Sampler = "ddpm"
    steps: int | None = None
    sample_seed: int = 0
    sample_batch_size: int = 100
    switches: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.4, 0.6])
    small_variants: dict[str, list[str]] = field(default_factory=dict)  # name -> overrides of `small`
    variant_switch: float = 0.4
    copy_paste: bool = True
    # produce just these rows (names as in results.csv; [] = all). Not part of the comparison's identity,
    # so several processes or machines can share out one folder's rows.
    only_rows: list[str] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(ratio=1.0))
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def check(self) -> None:
        """Refuse values that cannot run before any row is trained or written (``load_config`` calls this);
        names that become folders are single path components."""
        for v in self.small_variants:
            safe_name(v, "config key 'small_variants': variant name")
        need(1 <= self.num_samples <= MAX_PAIRS, "num_samples", f"must be 1 to {MAX_PAIRS} pairs per row", self.num_samples)
        need(self.steps is None or self.steps >= 1, "steps", "must be at least 1 (or null: every timestep)", self.steps)
        need(self.sample_batch_size >= 1, "sample_batch_size", "must be at least 1", self.sample_batch_size)
        for i, u in enumerate(self.switches):
            need(0.0 <= u <= 1.0, f"switches[{i}]", "must be in [0, 1] (a fraction of the schedule)", u)
        need(len(set(self.switches)) == len(self.switches), "switches", "must not name a switch twice", self.switches)
        need(0.0 <= self.variant_switch <= 1.0, "variant_switch", "must be in [0, 1]", self.variant_switch)
        self.eval.check()
        self.metrics.check()

    def generator(self, extra: list[str] = ()) -> GeneratorConfig:
        """The generator config this comparison trains: ``generator_config`` with its overrides, then ``extra``."""
        return load_config(GeneratorConfig, self.generator_config, [*self.generator_overrides, *extra])


@dataclass
class Row:
    name: str
    kind: str  # vanilla | small-only | two-stage | rf-variant | copy-paste
    switch: float | None = None
    variant: str | None = None


def rows(cfg: CompareConfig) -> list[Row]:
    cfg.check()
    out = [Row("vanilla-ddpm", "vanilla", 0.0), Row("small-only", "small-only", 1.0)]
    out += [Row(f"two-stage-u{u:.2f}", "two-stage", u) for u in cfg.switches]
    out += [Row(f"two-stage-u{cfg.variant_switch:.2f}-{v}", "rf-variant", cfg.variant_switch, v)
            for v in cfg.small_variants]
    if cfg.copy_paste:
        out.append(Row("copy-paste", "copy-paste"))
    unknown = sorted(set(cfg.only_rows) - {r.name for r in out})
    if unknown:
        raise ConfigError(f"only_rows: no row named {unknown}; this config's rows are {[r.name for r in out]}")
    return [r for r in out if r.name in cfg.only_rows] if cfg.only_rows else out


# ---- generate ------------------------------------------------------------------------------

def train_main(cfg: CompareConfig, out: Path, ds: DefectDataset, recs: list[PairRecord], log: Log) -> Path:
    """The two-stage run (or the one named by ``run:``)."""
    from defectgen.run import train_generator

    if cfg.run:
        return Path(cfg.run)
    main = out / "generator"
    log(f"training the two-stage generator in {main}")
    train_generator(main, cfg.generator(), ds, recs, _sel(cfg, ds, recs), resume=True, progress=False)
    return main


def train_variant(cfg: CompareConfig, out: Path, name: str, ds: DefectDataset, recs: list[PairRecord],
                  log: Log) -> Path:
    """A small model of another receptive field (the large model is shared with the main run)."""
    from defectgen.run import train_generator

    vdir = out / "variants" / name
    overrides = cfg.small_variants[name]
    log(f"training small-model variant {name} ({', '.join(overrides)}) in {vdir}")
    train_generator(vdir, cfg.generator(overrides), ds, recs, _sel(cfg, ds, recs), stages=("small",),
                    resume=True, progress=False)
    return vdir


def _sel(cfg: CompareConfig, ds: DefectDataset, recs: list[PairRecord]) -> dict:
    from defectgen.run import selection_info

    return selection_info(ds, recs, cfg.selection)


def _pipeline_for(row: Row, main: Path, variant: Path | None, device: str):
    from defectgen.run import load_final, load_generator

    pipe = load_generator(main, device)
    if variant is not None:
        pipe.unet_2 = load_final(variant / "small" / "final").to(device)
    return pipe


def generate_rows(cfg: CompareConfig, out: Path, ds: DefectDataset, recs: list[PairRecord], device: str,
                  log: Log) -> None:
    """Cheap rows first, then the main generator's rows, then each variant: an interrupted run
    leaves the most useful rows finished."""
    from defectgen.export import export_samples
    from defectgen.seg.copypaste import run_copypaste

    size = cfg.generator().size
    def priority(r: Row) -> int:  # the method's own row right after the cheap one
        if r.kind == "two-stage" and r.switch == cfg.variant_switch:
            return 1
        return {"copy-paste": 0, "rf-variant": 3}.get(r.kind, 2)

    order = sorted(rows(cfg), key=priority)
    main = None
    for row in order:
        target = out / "rows" / row.name / "samples"
        if is_complete(target):
            continue
        if row.kind == "copy-paste":
            log(f"copy-paste: {cfg.num_samples} pairs")
            images, masks = load_pairs(recs, ds.class_map, size)
            run_copypaste(images, masks, [r.stem for r in recs], ds.class_map, target, cfg.num_samples,
                          seed=cfg.sample_seed)
            continue
        main = main or train_main(cfg, out, ds, recs, log)
        variant = train_variant(cfg, out, row.variant, ds, recs, log) if row.variant else None
        log(f"sampling {cfg.num_samples} pairs for {row.name}")
        pipe = _pipeline_for(row, main, variant, device)
        identity = {"pipeline": str(main), "variant": row.variant, "train_stems": [r.stem for r in recs]}
        export_samples(pipe, target, cfg.num_samples, seed=cfg.sample_seed, switch=row.switch, sampler=cfg.sampler,
                       steps=cfg.steps, batch_size=cfg.sample_batch_size, identity=identity, progress=False)


# ---- score ---------------------------------------------------------------------------------

def score_rows(cfg: CompareConfig, out: Path, ds: DefectDataset, recs: list[PairRecord], device: str | None,
               log: Log) -> None:
    """Quality metrics and the segmentation gain of every row with samples; finished ones are read back."""
    from defectgen.quality.compute import compute_metrics
    from defectgen.quality.features import FeatureEncoder

    store = ResultStore(out / "rows", "row")
    baseline = _evaluation(store, "real-only", dataclasses.replace(cfg.eval, ratio=0.0), ds, recs, None, None, device,
                           log, "segmentation baseline: real pairs only")
    encoder, predictor = None, None
    for row in rows(cfg):
        rdir = out / "rows" / row.name
        if not is_complete(rdir / "samples"):
            log(f"{row.name}: no samples yet (run compare without --only score first)")
            continue
        if not (rdir / "metrics" / "metrics.json").is_file():
            log(f"metrics for {row.name}")
            encoder = encoder or FeatureEncoder(cfg.metrics.device)
            predictor = predictor or _real_segmenter(cfg, ds, recs, device)  # one segmenter serves every row
            real = SelectionConfig(data=cfg.data, format=cfg.format, mask_suffix=cfg.mask_suffix,
                                   list_file=str(_stem_file(out, recs)))  # exactly the generator's images
            compute_metrics(rdir / "samples", real, cfg.metrics, out=rdir / "metrics", encoder=encoder, overwrite=True,
                            predictor=predictor, log=None)
        _evaluation(store, row.name, cfg.eval, ds, recs, rdir / "samples", baseline, device,
                    log, f"segmentation with {row.name} at ratio {cfg.eval.ratio}")


def _evaluation(store: ResultStore, row: str, cfg: EvalConfig, ds: DefectDataset, recs: list[PairRecord],
                synthetic: Path | None, baseline: dict[str, Any] | None, device: str | None,
                log: Log, announce: str) -> dict[str, Any]:
    """The row's ``rows/<row>/eval.json``: read back when it exists (the folder's config is its key), else
    ``run_evaluation`` with each seed kept in ``rows/<row>/seeds/`` as it ends."""
    from defectgen.seg.evaluate import run_evaluation

    done = store.finished(f"{row}/eval")
    if done is None:
        log(announce)
        done = store.keep(f"{row}/eval", run_evaluation(ds, recs, cfg, synthetic=synthetic, baseline=baseline,
                                                         device=device, log=None, progress_dir=store.folder / row / "seeds"))
    return done


def _real_segmenter(cfg: CompareConfig, ds: DefectDataset, recs: list[PairRecord], device: str | None):
    """The real-data segmenter of mask agreement, at the metrics' size, with the evaluation's training settings."""
    from defectgen.quality.mask_agreement import segmenter_for

    return segmenter_for(recs, ds.class_map, cfg.metrics.size, cfg.metrics.seed, cfg.eval.seg, device).predict


def _stem_file(out: Path, recs: list[PairRecord]) -> Path:
    path = out / "train_stems.txt"
    atomic_write_text(path, "\n".join(r.stem for r in recs) + "\n")
    return path


# ---- summarise -----------------------------------------------------------------------------

def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def summarise(cfg: CompareConfig, out: Path) -> list[dict[str, Any]]:
    """Every row of the comparison (whatever ``only_rows`` this invocation produced), finished or not."""
    table = []
    base = _read(out / "rows" / "real-only" / "eval.json")
    if base:
        table.append({"row": "real-only", "kind": "baseline",
                      "miou_defect": _get(base, "aggregate", "miou_defect", "mean"),
                      "miou_defect_std": _get(base, "aggregate", "miou_defect", "std")})
    for row in rows(dataclasses.replace(cfg, only_rows=[])):
        m = _read(out / "rows" / row.name / "metrics" / "metrics.json") or {}
        e = _read(out / "rows" / row.name / "eval.json") or {}
        gain = _get(e, "paired_gain", "miou_defect") or {}
        table.append({
            "row": row.name, "kind": row.kind, "switch": row.switch, "variant": row.variant,
            "fid": _get(m, "fid_kid", "fid"), "kid": _get(m, "fid_kid", "kid_mean"),
            "memorised_feature": _get(m, "memorisation", "feature", "share_memorised"),
            "memorised_pixel": _get(m, "memorisation", "pixel", "share_memorised"),
            "nn_feature_median": _get(m, "memorisation", "feature", "nn_distance_median"),
            "diversity": _get(m, "diversity", "mean_pairwise"),
            "ic_diversity": _get(m, "diversity", "intra_cluster", "value"),
            "mask_agreement": _get(m, "mask_agreement", "mean_iou_defects"),
            "miou_defect": _get(e, "aggregate", "miou_defect", "mean"),
            "miou_defect_std": _get(e, "aggregate", "miou_defect", "std"),
            "gain": gain.get("mean"), "gain_ci_low": gain.get("ci_low"), "gain_ci_high": gain.get("ci_high"),
        })
    return table


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


COMPARE_HEAD = ("row", "FID*", "KID*", "memorised (feat / pix)", "diversity", "IC-div", "mask agr.", "mIoU defect",
                "gain [95% CI]")


def _cells(r: dict[str, Any]) -> list[str]:
    gain = MISSING if r.get("gain") is None else (
        f"{100 * r['gain']:+.1f} [{pct(r.get('gain_ci_low'))}, {pct(r.get('gain_ci_high'))}]")
    mem = f"{pct(r.get('memorised_feature'))}% / {pct(r.get('memorised_pixel'))}%"
    return [r["row"], fmt(r.get("fid"), 3), fmt(r.get("kid"), 3), mem if r.get("memorised_feature") is not None else MISSING,
            fmt(r.get("diversity"), 3), fmt(r.get("ic_diversity"), 3), pct(r.get("mask_agreement")),
            f"{pct(r.get('miou_defect'))} ± {pct(r.get('miou_defect_std'))}", gain]


def markdown(table: list[dict[str, Any]], extractor: str) -> str:
    """The comparison as the report's Markdown table, with the note on what its numbers are."""
    note = (f"\n*FID/KID computed with {extractor} features: not comparable to published Inception FID. "
            "mIoU and gains in points (defect classes, mean over seeds); gain is paired per seed over real-only.\n")
    return markdown_table(COMPARE_HEAD, [_cells(r) for r in table]) + note


def plots(table: list[dict[str, Any]], out: Path) -> None:
    """The gain and the memorised share against the switch point, copy-paste as a line."""
    plt = pyplot()
    curve = sorted((r for r in table if r["kind"] in ("vanilla", "small-only", "two-stage")), key=lambda r: r["switch"])
    cp = next((r for r in table if r["kind"] == "copy-paste"), None)
    for key, ylabel, fname in (("gain", "mIoU gain over real only (points)", "gain_vs_switch.png"),
                               ("memorised_feature", "memorised share (feature NN)", "memorisation_vs_switch.png")):
        xs = [r["switch"] for r in curve if r.get(key) is not None]
        ys = [100 * r[key] if key == "gain" else r[key] for r in curve if r.get(key) is not None]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        if key == "gain":
            lo = [100 * (r["gain"] - r["gain_ci_low"]) if r.get("gain_ci_low") is not None else 0
                  for r in curve if r.get(key) is not None]
            hi = [100 * (r["gain_ci_high"] - r["gain"]) if r.get("gain_ci_high") is not None else 0
                  for r in curve if r.get(key) is not None]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label="two-stage (0 = vanilla, 1 = small only)")
            ax.axhline(0, color="grey", lw=0.8)
        else:
            ax.plot(xs, ys, marker="o", label="two-stage (0 = vanilla, 1 = small only)")
        if cp and cp.get(key) is not None:
            ax.axhline(100 * cp[key] if key == "gain" else cp[key], color="tab:red", ls="--", label="copy-paste")
        ax.set_xlabel("switch point (fraction of the schedule)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_write_bytes(out / fname, png_bytes(fig))


def write_results(cfg: CompareConfig, out: Path) -> list[dict[str, Any]]:
    table = summarise(cfg, out)
    cols = sorted({k for r in table for k in r}, key=lambda k: list(table[-1]).index(k) if k in table[-1] else 99)
    atomic_write_text(out / "results.csv", csv_text(table, cols))
    atomic_write_json(out / "results.json", table)
    atomic_write_text(out / "report.md", "# defectgen compare\n\n" + markdown(table, cfg.metrics.feature_extractor))
    plots(table, out)
    return table


def _identity(cfg: CompareConfig) -> dict[str, Any]:
    """What must match for two invocations to share an output folder (``only_rows`` shares one out)."""
    return protocol(to_dict(cfg), drop=("only_rows",))


def run_compare(cfg: CompareConfig, out: Path, only: str = "all", device: str | None = None,
                log: Log = logger.info) -> list[dict[str, Any]]:
    """Train/sample (``generate``), score (``score``) or both (``all``); always rewrite the tables."""
    if not cfg.data:
        raise ConfigError("compare config needs 'data' (the real data folder)")
    from defectgen.device import resolve_device

    dev = str(resolve_device(device))
    rows(cfg)  # names, only_rows, the device and the data are checked before anything is written
    gen = cfg.generator()
    need(cfg.steps is None or cfg.steps <= gen.diffusion.num_train_timesteps, "steps",
         f"must be at most the generator's {gen.diffusion.num_train_timesteps} training timesteps", cfg.steps)
    ds, recs = cfg.selection.select(log=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "config.yaml").is_file():  # read through the dataclass: options added later keep their defaults
        if _identity(load_config(CompareConfig, out / "config.yaml")) != _identity(cfg):
            raise ConfigError(f"{out}/config.yaml: this comparison was made with a different config; "
                              "choose another --out")
    else:
        save_config(cfg, out / "config.yaml")
    t0 = time.time()
    if only in ("all", "generate"):
        generate_rows(cfg, out, ds, recs, dev, log)
    if only in ("all", "score"):
        score_rows(cfg, out, ds, recs, dev, log)
    log(f"compare step '{only}' took {time.time() - t0:.0f} s")
    return write_results(cfg, out)
