"""Augment-and-evaluate: train on real (+ synthetic) pairs, score on the held-out test split.

One evaluation = one model, one synthetic source, one ratio, several seeds. For each seed a model is
trained from scratch with exactly the same steps, schedule and augmentation as at every other ratio
(see ``train.py``), then scored once on the test split. Results: per-seed metrics, mean ± std over
seeds and, when a ratio-0 result of the same protocol is given, the paired gain with a 95% CI.

    from defectgen.data import open_dataset, select_records
    ds = open_dataset("../shared/data/neu_seg")
    train = select_records(ds, split="train", shots=10, seed=0)
    results = run_evaluation(ds, train, EvalConfig(ratio=1.0), synthetic="runs/samples")
"""
from __future__ import annotations

import json
import logging
import platform
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from defectgen.config import need, save_config, to_dict
from defectgen.data import ClassMap, DataError, DefectDataset, PairRecord, load_pairs, read_stem_list
from defectgen.data.geometry import load_scaled
from defectgen.io import atomic_write_json
from defectgen.seg.metrics import SCALAR_METRICS, SegMetrics
from defectgen.data.samples import MANIFEST, SyntheticSet, open_synthetic
from defectgen.seg.mixing import check_no_leak, choose_synthetic, num_synthetic
from defectgen.seg.stats import mean_std, paired_gain
from defectgen.seg.store import ResultStore, open_store, protocol, result_key
from defectgen.device import resolve_device
from defectgen.seg.train import SegConfig, predict, predict_whole
from defectgen.seg.usage import UsageConfig, fit_with_usage

Log = Callable[[str], None]

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """The protocol around one segmenter: mixing ratio, usage mode, seeds, test split, detection threshold."""

    ratio: float = 0.0  # synthetic pairs per real training pair (0 = real only)
    usage: UsageConfig = field(default_factory=UsageConfig)  # mix | pretrain | weighted (see seg/usage.py)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    balanced: bool = True  # draw synthetic pairs balanced over defect classes
    test_split: str = "test"  # split naming the scored stems (ImageSets/Segmentation/<name>.txt); val for choices
    test_list: str | None = None  # or a file of exact test stems
    detect_min_area: float = 0.005  # image flagged defective when predicted defect area > this fraction
    negatives: int = 0  # defect-free images added to training (all-background masks), drawn per seed
    seg: SegConfig = field(default_factory=SegConfig)

    def check(self) -> None:
        """Refuse values that cannot run, naming the key (``load_config`` calls this)."""
        need(self.ratio >= 0, "ratio", "must not be negative", self.ratio)
        need(self.negatives >= 0, "negatives", "must not be negative", self.negatives)
        need(0.0 <= self.detect_min_area <= 1.0, "detect_min_area", "must be in [0, 1]", self.detect_min_area)
        self.usage.check("usage")
        self.seg.check("seg")


@dataclass
class RealData:
    """The real training and test pairs, loaded once at the model size."""

    class_map: ClassMap
    train_stems: list[str]
    test_stems: list[str]
    train_images: np.ndarray
    train_masks: np.ndarray
    test_images: np.ndarray
    test_masks: np.ndarray
    good: list[PairRecord] = field(default_factory=list)  # defect-free images that may serve as negatives


def test_records(
    ds: DefectDataset, train: list[PairRecord], split: str | None = "test", list_file: str | Path | None = None
) -> tuple[list[PairRecord], str]:
    """The held-out test pairs and a description of where they came from.

    From ``list_file`` if given, else the named split; a dataset without any split files is tested
    on every image outside the training selection. Defect-free images named by the split are test
    images too (they score false alarms).
    """
    if list_file is not None:
        stems = read_stem_list(Path(list_file))
        return [ds.by_stem(s) for s in stems], f"list {list_file}"
    if ds.splits:
        if split not in ds.splits:
            raise DataError(f"{ds.root}: no test split '{split}' (available: {', '.join(sorted(ds.splits))})")
        keep = set(ds.splits[split])
        return [r for r in ds.records + ds.good if r.stem in keep], f"split {split}"
    chosen = {r.stem for r in train}
    rest = [r for r in ds.records if r.stem not in chosen]
    if not rest:
        raise DataError(f"{ds.root}: no images left for testing outside the training selection")
    return rest, "all images outside the training selection (the data has no split files)"


def load_for(records: list[PairRecord], class_map: ClassMap, cfg: SegConfig | int, native: bool = False) -> tuple[Any, Any]:
    """Pairs as the segmenter sees them: arrays at ``size``², or (crop mode) lists of scaled images.

    ``native``: synthetic windows, already at the scale the generator was trained on. Full-size
    synthetic pairs are not native: they are read exactly as real pairs are.
    """
    if isinstance(cfg, int) or cfg.resize_mode != "crop":
        return load_pairs(records, class_map, cfg if isinstance(cfg, int) else cfg.size)
    return load_scaled(records, class_map, None if native else cfg.long_side, cfg.size)


def _concat(a: Any, b: Any) -> Any:
    return list(a) + list(b) if isinstance(a, list) else np.concatenate([a, b])


def load_real(ds: DefectDataset, train: list[PairRecord], test: list[PairRecord], size: int | SegConfig) -> RealData:
    """The real training and test pairs; ``size`` is the square side, or a SegConfig (crop mode)."""
    check_no_leak([r.stem for r in train], [r.stem for r in test])
    tr_x, tr_y = load_for(train, ds.class_map, size)
    te_x, te_y = load_for(test, ds.class_map, size)
    test_stems = {r.stem for r in test}
    good = [r for r in ds.good if r.stem not in test_stems]
    return RealData(ds.class_map, [r.stem for r in train], [r.stem for r in test], tr_x, tr_y, te_x, te_y, good)


def choose_negatives(real: RealData, count: int, seed: int) -> list[PairRecord]:
    """``count`` defect-free training images drawn from ``seed`` (never a test image)."""
    if count <= 0:
        return []
    if count > len(real.good):
        raise DataError(f"negatives: {count} defect-free images asked for, the data has {len(real.good)} outside the test "
                        "set (good/ or *Free* folders, empty masks, or --good DIR)")
    return sorted(random.Random(seed).sample(real.good, count), key=lambda r: r.stem)


def mixed_training_set(
    real: RealData, synthetic: SyntheticSet | None, ratio: float, seed: int, balanced: bool, size: int | SegConfig,
    negatives: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Real pairs, ``negatives`` defect-free images and ``ratio`` × as many synthetic pairs as real
    ones, drawn from ``seed``; also the chosen synthetic files."""
    neg = choose_negatives(real, negatives, seed)
    if neg:
        neg_x, neg_y = load_for(neg, real.class_map, size)
        real = replace(real, train_images=_concat(real.train_images, neg_x), train_masks=_concat(real.train_masks, neg_y))
    count = num_synthetic(len(real.train_stems), ratio)
    if count == 0:
        return real.train_images, real.train_masks, []
    if synthetic is None:
        raise DataError(f"ratio {ratio} needs a synthetic set (--synthetic DIR)")
    chosen = [synthetic.records[i] for i in choose_synthetic(synthetic.classes, count, seed, balanced)]
    syn_x, syn_y = load_for(chosen, synthetic.class_map, size, native=not synthetic.full_size)
    return (
        _concat(real.train_images, syn_x), _concat(real.train_masks, syn_y),
        [r.image.name for r in chosen],
    )


def train_and_score(
    real: RealData,
    synthetic: SyntheticSet | None,
    ratio: float,
    seed: int,
    cfg: SegConfig,
    balanced: bool = True,
    detect_min_area: float = 0.005,
    device: str | None = None,
    log: Log | None = None,
    negatives: int = 0,
    usage: UsageConfig | None = None,
) -> dict[str, Any]:
    """One seed: draw the defect-free and synthetic pairs, train for the fixed number of steps as
    ``usage`` says (default: mix; defect-free images count as real), predict the test split once, score."""
    usage = usage or UsageConfig()
    x, y, files = mixed_training_set(real, synthetic, ratio, seed, balanced, cfg, negatives)
    neg_stems = [r.stem for r in choose_negatives(real, negatives, seed)]
    n_real = len(x) - len(files)  # real (+ defect-free) pairs first, the synthetic ones last
    losses: list[dict] = []
    start = time.perf_counter()
    model, phases = fit_with_usage(x[:n_real], y[:n_real], x[n_real:], y[n_real:], usage, cfg, real.class_map.num_classes,
                                   seed, device, real.class_map.ignore_index, losses.append)
    train_seconds = time.perf_counter() - start
    scorer = SegMetrics(real.class_map.names, real.class_map.ignore_index, detect_min_area)
    if isinstance(real.test_images, list):  # crop mode: whole scaled images, sliding window
        for p, t in zip(predict_whole(model, real.test_images, cfg.size), real.test_masks):
            scorer.update(p, t)
    else:
        scorer.update(predict(model, real.test_images, cfg.eval_batch_size), real.test_masks)
    metrics = scorer.compute()
    if log:
        log(
            f"seed {seed}: {len(real.train_images)} real + {len(neg_stems)} defect-free + {len(files)} synthetic"
            f"{f' ({usage.label()})' if files else ''}, {train_seconds:.0f}s, "
            f"mIoU all {metrics['miou_all']:.4f} defect {metrics['miou_defect']:.4f}"
        )
    return {
        "seed": seed, "num_real": len(real.train_images), "num_negatives": len(neg_stems), "negative_stems": neg_stems,
        "num_synthetic": len(files), "synthetic_files": files,
        "usage": usage.label() if files else "real-only", "phases": phases,
        "train_seconds": round(train_seconds, 2), "final_loss": losses[-1]["loss"] if losses else None, "metrics": metrics,
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every scalar metric and of the per-class IoU."""
    out: dict[str, Any] = {k: mean_std([r["metrics"][k] for r in runs]) for k in SCALAR_METRICS}
    names = runs[0]["metrics"]["per_class"].keys() if runs else []
    out["per_class_iou"] = {n: mean_std([r["metrics"]["per_class"][n]["iou"] for r in runs]) for n in names}
    return out


def protocol_key(results: dict[str, Any]) -> dict[str, Any]:
    """What must match between a result and its ratio-0 baseline for a paired gain to be honest."""
    return {
        "seg": protocol(results["config"]["seg"]), "train_stems": results["selection"]["train_stems"], "test_stems": results["selection"]["test_stems"],
        "detect_min_area": results["config"]["detect_min_area"], "negatives": results["config"].get("negatives", 0),
    }


def gain_over(results: dict[str, Any], baseline: dict[str, Any], where: str) -> dict[str, Any]:
    """Paired gain (per seed) of ``results`` over a ratio-0 ``baseline`` of the same protocol.

    Same protocol: training settings (model, steps, ...), selection, scored stems and every seed of
    this run. The usage mode is not part of it: at ratio 0 every mode is the same real-only training.
    """
    if baseline["config"]["ratio"] != 0:
        raise DataError(f"{where}: the baseline must be a ratio-0 run, it has ratio {baseline['config']['ratio']}")
    mine, theirs = protocol_key(results), protocol_key(baseline)
    for key in mine:
        if mine[key] != theirs[key]:
            raise DataError(f"{where}: the baseline differs in '{key}'; a paired gain needs the same protocol")
    base = {r["seed"]: r["metrics"] for r in baseline["per_seed"]}
    seeds = [r["seed"] for r in results["per_seed"]]
    lacking = [s for s in seeds if s not in base]
    if lacking:
        raise DataError(f"{where}: the baseline lacks seed(s) {lacking}; a paired gain needs every seed of this run")
    mets = {r["seed"]: r["metrics"] for r in results["per_seed"]}
    return {
        "baseline": where, "seeds": seeds,
        **{k: paired_gain([mets[s][k] for s in seeds], [base[s][k] for s in seeds]) for k in ("miou_all", "miou_defect", "mdice_defect")},
    }


def read_baseline(path: str | Path) -> dict[str, Any]:
    """A ratio-0 ``results.json`` to pair gains with, checked before any seed is trained."""
    try:
        baseline = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable results.json ({str(err).splitlines()[0]})") from err
    try:
        ok = (isinstance(baseline["per_seed"], list) and all("seed" in r and "metrics" in r for r in baseline["per_seed"])
              and baseline["selection"]["train_stems"] is not None and "seg" in baseline["config"])
        ratio = baseline["config"]["ratio"]
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise DataError(f"{path}: not the results.json of a `defectgen evaluate` run (no per_seed, config or selection)")
    if ratio != 0:
        raise DataError(f"{path}: the baseline must be a ratio-0 run, it has ratio {ratio}")
    return baseline


def seed_key(cfg: EvalConfig, real: RealData, syn: SyntheticSet | None, seed: int) -> str:
    """The store key of one seed: the whole evaluation config (but its seed list), this seed, the stems and
    the synthetic manifest."""
    synthetic = syn.manifest_sha256 if syn is not None and cfg.ratio > 0 else None
    return result_key(**protocol(to_dict(cfg), drop=("seeds",)), seeds=None, seed=seed, train=real.train_stems,
                      test=real.test_stems, synthetic=synthetic)


def run_seed(real: RealData, syn: SyntheticSet | None, cfg: EvalConfig, seed: int, device: str | None,
             log: Log | None, progress_dir: Path | None) -> dict[str, Any]:
    """One seed's run; with ``progress_dir`` it is kept there (``seed_<s>.json``) as it ends and read back on a rerun."""
    store = None if progress_dir is None else ResultStore(Path(progress_dir), "seed")
    name, key = f"seed_{seed}", seed_key(cfg, real, syn, seed)
    done = store.finished(name, key) if store else None
    if done is not None:
        if log:
            log(f"seed {seed}: finished earlier ({store.path(name)})")
        return done["run"]
    run = train_and_score(real, syn, cfg.ratio, seed, cfg.seg, cfg.balanced, cfg.detect_min_area, device, log,
                          cfg.negatives, cfg.usage)
    return store.keep(name, {"key": key, "run": run})["run"] if store else run


def environment(device: str | None) -> dict[str, Any]:
    import segmentation_models_pytorch as smp
    import torch

    import defectgen

    return {
        "device": str(resolve_device(device)), "torch": torch.__version__, "smp": smp.__version__,
        "defectgen": defectgen.__version__, "python": platform.python_version(),
    }


def run_evaluation(
    dataset: DefectDataset,
    train: list[PairRecord],
    cfg: EvalConfig,
    synthetic: str | Path | SyntheticSet | None = None,
    test: list[PairRecord] | None = None,
    baseline: str | Path | dict[str, Any] | None = None,
    device: str | None = None,
    log: Log | None = logger.info,
    progress_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate one (model, synthetic source, ratio) over ``cfg.seeds``; returns the results dict.

    ``progress_dir``: each finished seed is written there at once, and a rerun reads it back
    instead of training again (a killed evaluation continues where it stopped).

    ``train`` is the real training selection (the generator's). ``test`` defaults to ``cfg.test_split``
    / ``cfg.test_list``. Refuses to start when a test image is in the training selection or in the
    generator's training list. ``baseline`` (a ratio-0 results.json or dict) adds the paired gain.
    """
    if test is None:
        test, test_source = test_records(dataset, train, cfg.test_split, cfg.test_list)
    else:
        test_source = "given"
    syn = open_synthetic(synthetic) if isinstance(synthetic, (str, Path)) else synthetic
    if syn is not None:
        syn.class_map.check_compatible(dataset.class_map, str(syn.root / MANIFEST))
    check_no_leak([r.stem for r in train], [r.stem for r in test], syn)
    if cfg.ratio > 0 and syn is None:
        raise DataError(f"ratio {cfg.ratio} needs a synthetic set (--synthetic DIR)")
    if not cfg.seeds:
        raise DataError("no seeds given")
    cfg.usage.check()
    where = "given dict" if isinstance(baseline, dict) else str(baseline)
    if baseline is not None and not isinstance(baseline, dict):
        baseline = read_baseline(baseline)  # before any seed is trained
    real = load_real(dataset, train, test, cfg.seg)
    if log:
        log(f"{cfg.seg.model}, ratio {cfg.ratio}, usage {cfg.usage.label()}: {len(train)} real training pairs, "
            f"{len(test)} scored pairs ({test_source})")
    runs = [run_seed(real, syn, cfg, s, device, log, progress_dir) for s in cfg.seeds]
    results: dict[str, Any] = {
        "command": "evaluate",
        "config": to_dict(cfg),
        "class_map": dataset.class_map.to_dict(),
        "selection": {
            "data": str(Path(dataset.root).resolve()), "format": dataset.format, "test_source": test_source,
            "train_stems": real.train_stems, "test_stems": real.test_stems,
            "defect_free_available": len(real.good),
        },
        "synthetic": None,
        "environment": environment(device),
        "per_seed": runs,
        "aggregate": aggregate(runs),
        "paired_gain": None,
    }
    if syn is not None:
        ident = syn.identity()
        ident["same_real_images"] = sorted(ident.pop("train_stems")) == sorted(real.train_stems)
        if log and not ident["same_real_images"]:
            log("note: the generator was trained on other real images than this training selection")
        results["synthetic"] = ident
    if baseline is not None:
        results["paired_gain"] = gain_over(results, baseline, where)
    return results


def evaluate_into(out: str | Path, dataset: DefectDataset, train: list[PairRecord], cfg: EvalConfig,
                  synthetic: str | Path | SyntheticSet | None = None, baseline: str | Path | dict[str, Any] | None = None,
                  device: str | None = None, overwrite: bool = False, selection: dict[str, Any] | None = None,
                  log: Log | None = logger.info) -> dict[str, Any]:
    """:func:`run_evaluation` into the folder ``out``: ``seeds/`` keeps every finished seed (a killed run
    continues where it stopped), then ``results.json`` and ``config.yaml``.

    A finished ``out`` is refused unless ``overwrite``; its earlier results are replaced only once the new
    ones exist. ``selection``: how the training pairs were chosen, recorded beside their stems.
    """
    out = Path(out)
    store = open_store(out, "seeds", overwrite, "evaluation", done_file="results.json", cell="seed")
    try:
        results = run_evaluation(dataset, train, cfg, synthetic=synthetic, baseline=baseline, device=device, log=log,
                                 progress_dir=store.folder)
    except BaseException:
        store.discard_if_empty()
        raise
    results["selection"].update(selection or {})
    for old in (out.iterdir() if overwrite else ()):
        if old != store.folder:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    save_config(cfg, out / "config.yaml")
    atomic_write_json(out / "results.json", results)
    return results
