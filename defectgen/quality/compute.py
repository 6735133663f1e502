"""All generation-quality metrics for one synthetic set against the real training subset.

``evaluate`` works on arrays (the tests and other code call it); ``compute_metrics`` opens a
synthetic folder and the real data, picks the real images the generator trained on, and optionally
writes the report. The network runs once per image: the same EfficientNet-Lite0 features serve FID,
KID, memorisation and diversity (with Inception, FID/KID alone go through torch-fidelity's Inception).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from defectgen.config import need, need_side, to_dict
from defectgen.data.selection import SelectionConfig
from defectgen.quality.class_stats import class_statistics, compare_class_statistics
from defectgen.quality.diversity import diversity
from defectgen.quality.features import (EFFICIENTNET_NAME, FEATURE_EXTRACTORS, INCEPTION_NAME, FeatureEncoder,
                                        FeatureExtractorName, extractor_label)
from defectgen.quality.fidelity import fid_kid, fid_kid_from_features, inception_state, resolve_inception_weights
from defectgen.quality.mask_agreement import Predictor, mask_agreement, real_data_segmenter
from defectgen.quality.memorisation import memorisation

logger = logging.getLogger(__name__)


@dataclass
class MetricsConfig:
    """Settings of ``defectgen metrics``; saved into ``metrics.json``."""

    size: int = 64  # both sets are resized to size x size before any comparison
    feature_extractor: FeatureExtractorName = EFFICIENTNET_NAME  # for FID/KID
    inception_weights: str | None = None  # local Inception-v3 file; else torch-fidelity's cache
    kid_subsets: int = 100
    kid_subset_size: int | None = None  # None: min(1000, n_real, n_generated)
    memorisation_percentile: float = 5.0  # memorised: NN distance <= this percentile of train LOO NN distances
    nearest_pairs: int = 8  # pairs per distance space in nearest_neighbours.png
    mask_agreement: bool = True
    batch_size: int = 32
    seed: int = 0
    device: str | None = None

    def check(self) -> None:
        """Refuse values that cannot score, naming the key (``load_config`` calls this)."""
        need(self.feature_extractor in FEATURE_EXTRACTORS, "feature_extractor",
             f"must be one of {', '.join(FEATURE_EXTRACTORS)}", self.feature_extractor)
        need_side(self.size, "size")
        need(self.kid_subsets >= 1, "kid_subsets", "must be at least 1 (KID is a mean over subsets)", self.kid_subsets)
        need(self.kid_subset_size is None or self.kid_subset_size >= 2, "kid_subset_size",
             "must be null (adaptive) or at least 2", self.kid_subset_size)
        need(0.0 <= self.memorisation_percentile <= 100.0, "memorisation_percentile", "must be in [0, 100]",
             self.memorisation_percentile)
        need(self.nearest_pairs >= 0, "nearest_pairs", "must not be negative", self.nearest_pairs)
        need(self.batch_size >= 1, "batch_size", "must be at least 1", self.batch_size)


@dataclass
class QualityResult:
    """The metrics dict plus what the figures need."""

    metrics: dict[str, Any]
    neighbours: dict[str, Any] = field(repr=False)
    real_class_stats: dict[str, Any] = field(repr=False)
    generated_class_stats: dict[str, Any] = field(repr=False)


def check_config(cfg: MetricsConfig) -> None:
    """Refuse bad values or unavailable Inception weights before any slow work (the weights are read here,
    safely: see ``defectgen.quality.fidelity.inception_state``)."""
    cfg.check()
    need(cfg.inception_weights is None or cfg.feature_extractor == INCEPTION_NAME, "inception_weights",
         f"is read only with feature_extractor {INCEPTION_NAME}", cfg.inception_weights)
    if cfg.feature_extractor != EFFICIENTNET_NAME:
        inception_state(resolve_inception_weights(cfg.inception_weights))


def evaluate(
    real_images: np.ndarray,
    real_masks: np.ndarray,
    generated_images: np.ndarray,
    generated_masks: np.ndarray,
    class_names: tuple[str, ...],
    cfg: MetricsConfig | None = None,
    predictor: Predictor | None = None,
    ignore_index: int = 255,
    encoder: FeatureEncoder | None = None,
    seg_config: Any = None,
    log: Callable[[str], None] | None = logger.info,
) -> QualityResult:
    """Every metric for arrays at a common size: images (N,H,W,3) uint8, masks (N,H,W) uint8 class ids.

    ``predictor`` (generated images -> class ids) drives mask agreement; without one, the real-data
    segmenter (``seg_config``, default ``SegConfig()``) is trained when ``cfg.mask_agreement`` is set.
    Its IoU on its own training images is reported beside the agreement: if it cannot even fit
    those, low agreement says little about the generated pairs.
    """
    cfg = cfg or MetricsConfig()
    check_config(cfg)
    log = log or (lambda msg: None)
    timings: dict[str, float] = {}
    log(f"features of {len(real_images)} real and {len(generated_images)} generated images")
    t = time.perf_counter()
    encoder = encoder or FeatureEncoder(cfg.device)
    f_real = encoder(real_images, cfg.batch_size)
    f_gen = encoder(generated_images, cfg.batch_size)
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    kid = {"kid_subsets": cfg.kid_subsets, "kid_subset_size": cfg.kid_subset_size, "seed": cfg.seed}
    if cfg.feature_extractor == EFFICIENTNET_NAME:
        fk = fid_kid_from_features(f_real, f_gen, **kid)
    else:
        fk = fid_kid(real_images, generated_images, cfg.feature_extractor, cfg.inception_weights,
                     batch_size=cfg.batch_size, device=cfg.device, **kid)
    timings["fid_kid"] = time.perf_counter() - t

    t = time.perf_counter()
    nn = memorisation(generated_images, real_images, f_gen, f_real, cfg.memorisation_percentile)
    div = {"features": encoder.label, **diversity(f_gen, f_real, "cosine")}
    timings["memorisation_diversity"] = time.perf_counter() - t

    t = time.perf_counter()
    real_cs = class_statistics(real_masks, class_names, ignore_index)
    gen_cs = class_statistics(generated_masks, class_names, ignore_index)
    agreement = _agreement(real_images, real_masks, generated_images, generated_masks, class_names,
                           cfg, predictor, seg_config, ignore_index, log)
    timings["class_stats_mask_agreement"] = time.perf_counter() - t

    metrics = {
        "feature_extractor": {**extractor_label(cfg.feature_extractor), "memorisation_features": encoder.label},
        "counts": {"n_real": int(len(real_images)), "n_generated": int(len(generated_images))},
        "fid_kid": fk,
        "memorisation": {space: r.summary() for space, r in nn.items()},
        "diversity": div,
        "mask_agreement": agreement,
        "class_stats": compare_class_statistics(real_cs, gen_cs),
        "config": to_dict(cfg),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    return QualityResult(metrics, nn, real_cs, gen_cs)


def _agreement(real_images, real_masks, gen_images, gen_masks, class_names, cfg, predictor, seg_config,
               ignore_index, log) -> dict[str, Any]:
    if predictor is None and not cfg.mask_agreement:
        return {"skipped": "disabled (--no-mask-agreement)"}
    info: dict[str, Any] = {"segmenter": "given predictor"}
    if predictor is None:
        log(f"training the real-data segmenter on {len(real_images)} images (mask agreement; on a CPU this takes "
            "minutes: --seg-set model=unet-small or --no-mask-agreement are faster)")
        predictor, seg_info = real_data_segmenter(real_images, real_masks, len(class_names), cfg.seed, seg_config,
                                                  cfg.device, log)
        info = {"segmenter": seg_info}
    fit = mask_agreement(predictor, real_images, real_masks, class_names, ignore_index)
    out = mask_agreement(predictor, gen_images, gen_masks, class_names, ignore_index)
    out["segmenter_iou_on_its_training_images"] = fit["mean_iou_defects"]
    return {**out, **info}


def real_records(ds, manifest: dict[str, Any], sel: SelectionConfig):
    """The real training subset: the explicit selection if given, else the manifest's ``train_stems``."""
    from defectgen.data import DataError

    if sel.explicit or not manifest.get("train_stems"):
        how = ("list file" if sel.list_file is not None else f"{sel.shots} shots, seed {sel.seed}" if sel.shots is not None
               else "all images")
        return sel.records(ds), how + (f" of split {sel.split}" if sel.split else "")
    index = {r.stem: r for r in ds.records}
    missing = [s for s in manifest["train_stems"] if s not in index]
    if missing:
        raise DataError(f"{ds.root}: the synthetic manifest's train_stems are not in this data: {missing[:5]}")
    return [index[s] for s in manifest["train_stems"]], "manifest train_stems"


def compute_metrics(
    synthetic: str | Path,
    real: SelectionConfig | str | Path,
    cfg: MetricsConfig | None = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    predictor: Predictor | None = None,
    seg_config: Any = None,
    encoder: FeatureEncoder | None = None,
    log: Callable[[str], None] | None = logger.info,
) -> dict[str, Any]:
    """Metrics of the synthetic folder ``synthetic`` (``images/``, ``masks/``, ``manifest.json``) against
    the real training subset of ``real``; with ``out``, also writes the report there.

    ``real`` is the real data and its selection (a bare path: the whole folder). The real subset is
    the selection's stem list or shots when given, else exactly the manifest's ``train_stems``, else
    every image of its split (or of the whole data). Pass one
    ``encoder`` to reuse the feature network across many calls (e.g. one per comparison row).
    """
    from defectgen.data import load_pairs
    from defectgen.data.samples import open_synthetic, read_manifest
    from defectgen.io import ensure_empty_output, refuse_existing
    from defectgen.quality.report import class_stats_png, nearest_neighbours_png, write_report

    cfg = cfg or MetricsConfig()
    check_config(cfg)
    synthetic = Path(synthetic)
    sel = real if isinstance(real, SelectionConfig) else SelectionConfig(data=str(real))
    if out is not None:
        refuse_existing(Path(out), overwrite)  # raises now rather than after minutes of work
    syn = open_synthetic(synthetic)  # the one reader of sample folders: evaluate, mix, filter and metrics
    manifest = read_manifest(synthetic)
    ds = sel.open(log=False)
    ds.class_map.check_compatible(syn.class_map, f"{synthetic} vs {sel.data}")
    real_recs, chosen_by = real_records(ds, manifest, sel)
    real_images, real_masks = load_pairs(real_recs, ds.class_map, cfg.size)
    gen_images, gen_masks = load_pairs(syn.records, syn.class_map, cfg.size)
    result = evaluate(real_images, real_masks, gen_images, gen_masks, ds.class_map.names, cfg, predictor,
                      ds.class_map.ignore_index, encoder=encoder, seg_config=seg_config, log=log)
    m = result.metrics
    m["inputs"] = {
        "synthetic": str(synthetic),
        "real": str(sel.data),
        "real_chosen_by": chosen_by,
        "real_stems": [r.stem for r in real_recs],
        "generator": {k: manifest[k] for k in ("switch", "sampler", "steps") if k in manifest},
    }
    m["diversity"]["intra_cluster"]["group_sizes"] = {
        real_recs[int(k)].stem: v for k, v in m["diversity"]["intra_cluster"]["group_sizes"].items()
    }
    gen_names = [r.stem for r in syn.records]
    real_names = [r.stem for r in real_recs]
    m["memorisation"]["closest"] = _closest_table(result.neighbours, gen_names, real_names, cfg.nearest_pairs)
    if out is not None:
        ensure_empty_output(Path(out), overwrite)  # an earlier report survives a failed run
        write_report(
            Path(out),
            m,
            nearest_neighbours_png(gen_images, real_images, result.neighbours, cfg.nearest_pairs, gen_names, real_names),
            class_stats_png(result.real_class_stats, result.generated_class_stats),
        )
    return m


def _closest_table(neighbours, gen_names, real_names, k) -> dict[str, list[dict[str, Any]]]:
    table = {}
    for space, nn in neighbours.items():
        order = np.argsort(nn.nn_distance, kind="stable")[:k]
        table[space] = [
            {"generated": gen_names[g], "train": real_names[int(nn.nn_index[g])],
             "distance": float(nn.nn_distance[g]), "memorised": bool(nn.memorised[g])}
            for g in order
        ]
    return table
