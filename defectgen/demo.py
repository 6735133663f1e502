"""Built-in demo data: procedural textured surfaces with scratches, spots and patches.

Every mask is exact because the defect is drawn from it. Written in the ``index`` layout
(``images/``, ``masks/``, ``labels.txt``) so the demo runs the same code path as real data, plus
defect-free surfaces in ``good/`` for painting defects onto (``defectgen sample --onto``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from defectgen.seg.train import SegConfig
from defectgen.timing import Timer

if TYPE_CHECKING:
    from defectgen.generator_config import GeneratorConfig

DEMO_CLASSES = ("background", "scratch", "spot", "patch")


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed-metal-like grey texture: smooth shading, directional streaks, fine grain."""
    coarse = rng.normal(0, 1, (4, 4))
    shade = np.asarray(Image.fromarray(coarse.astype(np.float32)).resize((size, size), Image.BICUBIC))
    streaks = np.repeat(rng.normal(0, 1, (size, 1)), size, axis=1)
    if rng.random() < 0.5:
        streaks = streaks.T
    grain = rng.normal(0, 1, (size, size))
    base = 128 + rng.uniform(-20, 20)
    return base + 12 * shade + 6 * streaks + 5 * grain


def _scratch(rng: np.random.Generator, size: int) -> np.ndarray:
    m = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(m)
    pts = [tuple(rng.uniform(0.1, 0.9, 2) * size)]
    angle = rng.uniform(0, np.pi)
    for _ in range(3):
        angle += rng.normal(0, 0.2)
        step = rng.uniform(0.1, 0.25) * size
        x, y = pts[-1]
        pts.append((float(np.clip(x + step * np.cos(angle), 0, size - 1)), float(np.clip(y + step * np.sin(angle), 0, size - 1))))
    draw.line(pts, fill=1, width=max(1, size // 24))
    return np.asarray(m) > 0


def _spot(rng: np.random.Generator, size: int) -> np.ndarray:
    m = Image.new("L", (size, size), 0)
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    rx, ry = rng.uniform(0.04, 0.1, 2) * size
    ImageDraw.Draw(m).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=1)
    return np.asarray(m) > 0


def _patch(rng: np.random.Generator, size: int) -> np.ndarray:
    field = rng.normal(0, 1, (6, 6)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(field).resize((size, size), Image.BICUBIC))
    yy, xx = np.mgrid[:size, :size] / size
    cx, cy = rng.uniform(0.3, 0.7, 2)
    r = rng.uniform(0.15, 0.25)
    return ((xx - cx) ** 2 + (yy - cy) ** 2) < (r + 0.06 * smooth) ** 2


def render_sample(rng: np.random.Generator, size: int, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One grey image (as RGB uint8) and its class-id mask with the given defect classes drawn."""
    img = _texture(rng, size)
    mask = np.zeros((size, size), np.uint8)
    for cid in classes:
        region = {1: _scratch, 2: _spot, 3: _patch}[cid](rng, size)
        if cid == 1:
            img[region] += rng.choice([-1, 1]) * rng.uniform(45, 70)
        elif cid == 2:
            img[region] -= rng.uniform(50, 80)
        else:
            img[region] = img[region] * 0.7 + 10 * rng.normal(0, 1, region.sum())
        mask[region] = cid
    grey = np.clip(img, 0, 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), mask


def make_demo_dataset(out: Path, per_class: int = 8, size: int = 64, seed: int = 0, good: int = 8) -> Path:
    """Write ``per_class`` images per defect class (a quarter also carry a second defect) and ``good`` defect-free ones."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k = 0
    for cid in (1, 2, 3):
        for _ in range(per_class):
            classes = [cid]
            if rng.random() < 0.25:
                classes.append(int(rng.choice([c for c in (1, 2, 3) if c != cid])))
            img, mask = render_sample(rng, size, sorted(classes, key=lambda c: c != 3))
            Image.fromarray(img).save(out / "images" / f"demo_{k:04d}.png")
            Image.fromarray(mask).save(out / "masks" / f"demo_{k:04d}.png")
            k += 1
    (out / "labels.txt").write_text("\n".join(DEMO_CLASSES) + "\n")
    if good > 0:
        (out / "good").mkdir(exist_ok=True)
        good_rng = np.random.default_rng([seed, 1])  # its own stream: the defect images do not change
        for k in range(good):
            img, _ = render_sample(good_rng, size, [])
            Image.fromarray(img).save(out / "good" / f"good_{k:04d}.png")
    return out


# ---- the demo command: the whole loop on this data ---------------------------------------------


def _demo_seg() -> SegConfig:
    return SegConfig(model="unet-small", size=32, steps=100, batch_size=8, warmup_steps=5)


@dataclass
class DemoConfig:
    """What ``defectgen demo`` does around the generator (whose config is ``configs/demo.yaml``)."""

    per_class: int = 16  # demo images per defect class (64 px)
    shots: int = 8  # images per class the generator and the segmenters train on; the rest is the test set
    parallel_stages: bool = True  # train the two UNets in two processes at once (when there are 2+ cores)
    num_samples: int = 32  # generated pairs (unconditional)
    onto_good: int = 24  # pairs painted onto the demo's defect-free images (guided sampling; 0 = skip), evaluated too
    metrics: bool = True  # FID/KID, memorisation, diversity, mask agreement, class statistics
    ratio: float = 1.0  # synthetic pairs per real pair in the evaluation (against real only)
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    seg: SegConfig = field(default_factory=_demo_seg)

    def check(self) -> None:
        """Each evaluated set must hold ``ratio`` synthetic pairs per real training pair (3 classes x ``shots``)."""
        from defectgen.config import need
        from defectgen.seg.mixing import num_synthetic

        if not self.seeds:
            return
        wanted = num_synthetic(3 * self.shots, self.ratio)
        need(self.num_samples >= wanted, "num_samples", f"must be at least ratio x {3 * self.shots} training pairs "
             f"= {wanted} for the evaluation (or seeds=[] to skip it)", self.num_samples)
        need(self.onto_good == 0 or self.onto_good >= wanted, "onto_good", f"must be 0 or at least {wanted} (ratio x "
             f"{3 * self.shots} training pairs) for the evaluation", self.onto_good)


def run_demo(out: Path, gen_cfg: "GeneratorConfig", cfg: DemoConfig, progress: bool = True) -> Timer:
    """Data → train both stages → sample (unconditional, and onto good images) → metrics → evaluate
    (real only vs real + synthetic) into ``out``.

    Returns the phase timings (also written to ``out/timing.json``); ``out`` must exist and be empty.
    """
    from defectgen.config import save_config
    from defectgen.data import SelectionConfig
    from defectgen.export import export_samples
    from defectgen.io import atomic_write_json
    from defectgen.run import RunFolder, load_generator, selection_info, train_generator
    from defectgen.schedule import sampler_scheduler

    out = Path(out)
    timer = Timer()
    save_config(cfg, out / "demo.yaml")
    with timer.phase("data"):
        data = make_demo_dataset(out / "data", per_class=cfg.per_class, size=64, seed=0)
        selection = SelectionConfig(data=str(data), shots=cfg.shots)
        ds, records = selection.select(log=False)
    sel = selection_info(ds, records, selection)
    parallel = cfg.parallel_stages and (os.cpu_count() or 1) >= 2
    with timer.phase("train (2 processes)" if parallel else "train"):
        train_generator(out / "run", gen_cfg, ds, records, sel, progress=progress, parallel=parallel)
    for stage, steps in (("large", gen_cfg.train.large_steps), ("small", gen_cfg.train.small_steps)):
        timer.add(stage, json.loads((out / "run" / stage / "timing.json").read_text())["seconds"], steps=steps)
    with timer.phase("sample", pairs=cfg.num_samples):
        pipe = load_generator(out / "run")
        pipe.scheduler = sampler_scheduler(pipe.scheduler, gen_cfg.sample.sampler)
        identity = RunFolder.find(out / "run").identity()
        export_samples(pipe, out / "samples", cfg.num_samples, seed=0, steps=gen_cfg.sample.steps,
                       batch_size=gen_cfg.sample.batch_size, identity=identity, progress=progress)
    if cfg.onto_good:
        with timer.phase("sample onto good", pairs=cfg.onto_good):
            _sample_onto_good(out, pipe, data, gen_cfg, cfg.onto_good, identity, progress)
    if cfg.metrics:
        with timer.phase("metrics", pairs=cfg.num_samples):
            _metrics(out, data, gen_cfg.size, cfg)
    if cfg.seeds:
        with timer.phase("evaluate", segmenters=2 * len(cfg.seeds)):
            _evaluate(out, data, cfg)
    atomic_write_json(out / "timing.json", timer.to_dict())
    return timer


def _sample_onto_good(out: Path, pipe, data: Path, gen_cfg: "GeneratorConfig", num: int, identity: dict,
                      progress: bool) -> None:
    """Defects painted onto the demo's good images, with masks drawn from the training pairs."""
    from defectgen.export import export_samples
    from defectgen.pipelines.defectgen.conditions import build_conditions
    from defectgen.pipelines.defectgen.request import GuidedRequest

    request = GuidedRequest("onto", "train", good=data / "good")
    condition, num = build_conditions(request, out / "run", pipe.class_map, gen_cfg.size, gen_cfg.image_channels,
                                      num, 0)
    export_samples(pipe, out / "samples_onto_good", num, seed=0, steps=gen_cfg.sample.steps,
                   batch_size=gen_cfg.sample.batch_size, identity=identity, progress=progress, condition=condition,
                   request=request)


def _metrics(out: Path, data: Path, size: int, cfg: DemoConfig) -> None:
    from defectgen.quality.compute import MetricsConfig, compute_metrics

    mcfg = MetricsConfig(size=size, device="cpu", kid_subsets=50)
    compute_metrics(out / "samples", data, mcfg, out=out / "metrics", seg_config=cfg.seg)


def _evaluate(out: Path, data: Path, cfg: DemoConfig) -> None:
    """Real only vs real + synthetic pairs (defects painted onto the good images, and unconditional ones):
    the ablation grid with one ratio, one model and the demo's seeds."""
    from defectgen.seg.ablate import AblateConfig, run_ablation

    sources = {"defect-gen-onto-good": str(out / "samples_onto_good")} if cfg.onto_good else {}
    sources["defect-gen"] = str(out / "samples")
    grid = AblateConfig(data=str(data), split=None, shots=cfg.shots, selection_seed=0, sources=sources, ratios=[0.0, cfg.ratio],
                        models=[cfg.seg.model], seeds=list(cfg.seeds), seg=cfg.seg)
    run_ablation(grid, out / "eval", device="cpu", log=None)
