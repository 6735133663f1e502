"""The generator's sampling job: sharded across processes, resumable, written pair by pair.

The folder is a sample folder (``defectgen.data.samples``: images/, masks/, manifest.json,
grid.png), written through that module. Until the manifest is written it is unfinished and also
holds ``JOB_FILE`` (the arguments) and ``DONE_DIR/NNNNNN.json`` (one record per finished pair), the
names ``defectgen.data.manifest`` gives them.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from defectgen import __version__
from defectgen.data import samples
from defectgen.data.samples import DONE_DIR, JOB_FILE
from defectgen.distributed import process_state, shard
from defectgen.errors import ConfigError, OutputExistsError, RunError
from defectgen.generator_config import PRECISIONS
from defectgen.io import atomic_write_json, clean_stale_tmp, ensure_empty_output, refuse_existing
from defectgen.pipelines.defectgen.full_size import FullCondition
from defectgen.pipelines.defectgen.guidance import Condition, init_batch, known_batch
from defectgen.pipelines.defectgen.pipeline_defectgen import DefectGenPipeline
from defectgen.pipelines.defectgen.request import PASTE_STRENGTH, GuidedRequest
from defectgen.schedule import sample_generators, sample_seed, sampler_name, window_seed

logger = logging.getLogger(__name__)


def export_samples(
    pipe: DefectGenPipeline,
    out: Path,
    num: int,
    seed: int = 0,
    switch: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    batch_size: int = 16,
    overwrite: bool = False,
    identity: dict[str, object] | None = None,
    progress: bool = True,
    condition: Callable[[int], Condition] | None = None,
    request: GuidedRequest | None = None,
    precision: str = "fp32",
) -> dict[str, object]:
    """Sample ``num`` pairs (sample i seeded by (seed, i)) and write them to ``out``; return the manifest.

    The sampler is ``pipe.scheduler`` (``sampler``: a scheduler of that kind instead, e.g. "dpmsolver++");
    ``steps`` None: every training timestep.

    Guided sampling: ``condition(i)`` says what sample i must keep (``pipelines.defectgen.conditions``) and
    ``request`` holds the blend band and resampling; a given mask is written exactly as given. A
    full-size condition (``FullCondition``, on a crop-mode run) is sampled window by window, every
    window of the batch in one pipeline call, and written as the whole image.

    Several processes (torchrun) each sample every N-th index; one process gives the same pairs.
    Each pair is written atomically and then recorded as done, so a killed run started again with
    the same arguments samples only the missing indices. The main process writes the manifest and
    the grid once every index is done. ``precision="bf16"`` runs the UNets in bf16 on CUDA.
    """
    out = Path(out)
    if pipe.class_map is None:
        raise ValueError("the pipeline has no class names (config class_names); build it with class_names=...")
    switch = pipe.config.switch if switch is None else switch
    precision = _precision(precision, pipe.device)
    full = bool(getattr(condition, "full_size", False))
    name = sampler or sampler_name(pipe.scheduler)
    job = json.loads(json.dumps({"num": num, "seed": seed, "switch": switch, "sampler": name, "steps": steps,
                                 "precision": precision, "guided": _request_info(request), "model": identity or {},
                                 **({"full_size": True} if full else {})}))
    state = process_state()
    if state.is_main_process:
        _open_job(out, job, overwrite)
    state.wait_for_everyone()
    done = _done_indices(out)
    todo = [i for i in shard(range(num), state.process_index, state.num_processes) if i not in done]
    t0 = time.time()
    batches = [todo[k : k + batch_size] for k in range(0, len(todo), batch_size)]
    logger.debug(f"{out}: {len(todo)} pairs to sample in {len(batches)} batches on process {state.process_index} "
                 f"({len(done)} done earlier), sampler {name}, switch {switch}")
    run = _Sampling(pipe, switch, sampler, steps, precision)
    for idx in tqdm(batches, desc="sample", disable=not (progress and state.is_main_process)):
        _sample_batch(run, out, idx, seed, condition, request)
    state.wait_for_everyone()
    if state.is_main_process:
        _finish(out, pipe, job, sampler, condition, request, time.time() - t0, len(done))
    state.wait_for_everyone()
    return samples.read_manifest(out)


def check_output(out: Path, overwrite: bool = False) -> None:
    """Fail before any work unless ``out`` is new, empty, to be replaced (``overwrite``) or an
    unfinished sample run (which ``export_samples`` resumes if the arguments match)."""
    out = Path(out)
    if samples.is_unfinished(out):
        return
    refuse_existing(out, overwrite)


def _precision(precision: str, device: torch.device) -> str:
    """The precision that will actually run: bf16 only on CUDA (elsewhere it would only be slower)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "bf16" and device.type != "cuda":
        logger.warning(f"bf16 sampling needs CUDA; sampling in fp32 on {device.type}")
        return "fp32"
    return precision


def _open_job(out: Path, job: dict[str, object], overwrite: bool) -> None:
    """Start the sample folder, or continue an unfinished one that was started with the same job."""
    job_file = out / JOB_FILE
    if not overwrite and samples.is_unfinished(out):
        old = json.loads(job_file.read_text())
        if old != job:
            diff = sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k))
            raise OutputExistsError(f"{out} holds an unfinished sample run with other arguments ({', '.join(diff)}); "
                                    "run that command again to finish it, or pass --overwrite")
        for tmp in [*(out / samples.IMAGES).glob(".*"), *(out / samples.MASKS).glob(".*")]:
            tmp.unlink()  # temporary files of a killed write; their pair is not recorded as done
        return
    clean_stale_tmp(out.parent, out.name)  # a killed writer's temporary folder beside ``out``
    ensure_empty_output(out, overwrite)
    samples.make_folders(out)
    (out / DONE_DIR).mkdir()
    atomic_write_json(job_file, job)


def _done_indices(out: Path) -> set[int]:
    """Indices whose pair was completely written (their record exists; the PNGs were written first)."""
    return {int(p.stem) for p in (out / DONE_DIR).glob("*.json")}


@dataclass(frozen=True)
class _Sampling:
    """The pipeline and the job's sampling settings: one pipeline call per batch."""

    pipe: DefectGenPipeline
    switch: float
    sampler: str | None
    steps: int | None
    precision: str

    def __call__(self, generators: list[torch.Generator], **guided):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.pipe(generator=generators, switch=self.switch, sampler=self.sampler,
                             num_inference_steps=self.steps, progress=False, **guided)


def _sample_batch(run: _Sampling, out: Path, idx: list[int], seed: int, condition: Callable[[int], Condition] | None,
                  request: GuidedRequest | None) -> None:
    pipe = run.pipe
    names = pipe.class_map.names
    seeds = [sample_seed(seed, i) for i in idx]
    # on a GPU the noise comes from per-sample CUDA generators: same (seed, index) rule, no host draws
    gens = sample_generators(seed, idx, pipe.device if pipe.device.type == "cuda" else "cpu")
    conds = [condition(i) for i in idx] if condition is not None else None
    if conds and isinstance(conds[0], FullCondition):
        return _sample_full(run, out, idx, seed, conds, request)
    guided = {} if conds is None else {
        "known": known_batch(conds, pipe.class_map, pipe.config.image_channels, request.blend),
        "resample": request.resample}
    res = run(gens, **guided)
    masks = res.masks if conds is None else [c.mask if c.mask is not None else m for c, m in zip(conds, res.masks)]
    for j, (i, s, img, mask) in enumerate(zip(idx, seeds, res.images, masks)):
        entry = {**samples.save_pair(out, i, img, mask, names), "seed": s, **(conds[j].info if conds else {})}
        atomic_write_json(out / DONE_DIR / f"{i:06d}.json", entry, sync=False)


def _sample_full(run: _Sampling, out: Path, idx: list[int], seed: int, fulls: list[FullCondition],
                 request: GuidedRequest) -> None:
    """Full-size samples: every window of the batch in one pipeline call, each window seeded by
    (seed, index, window), then each image composed whole and written."""
    pipe = run.pipe
    cmap, size = pipe.class_map, pipe.sample_size
    wins = [(j, k, c) for j, fc in enumerate(fulls) for k, c in enumerate(fc.window_conditions(size, cmap))]
    device = pipe.device if pipe.device.type == "cuda" else "cpu"
    gens = [torch.Generator(device).manual_seed(window_seed(seed, idx[j], k)) for j, k, _ in wins]
    conds = [c for *_, c in wins]
    known = known_batch(conds, cmap, pipe.config.image_channels, request.blend)
    init = init_batch(conds, cmap, pipe.config.image_channels)
    strength = 1.0 if init is None else request.strength or PASTE_STRENGTH
    res = run(gens, known=known, resample=request.resample, init=init, strength=strength)
    for j, (i, fc) in enumerate(zip(idx, fulls)):
        outs = [(res.images[n], res.masks[n], c) for n, (jj, _, c) in enumerate(wins) if jj == j]
        image, mask, windows = fc.compose(outs, size, request.blend, cmap)
        entry = {**samples.save_pair(out, i, image, mask, cmap.names), "seed": sample_seed(seed, i), **fc.info,
                 "windows": windows}
        atomic_write_json(out / DONE_DIR / f"{i:06d}.json", entry, sync=False)


def _finish(out: Path, pipe: DefectGenPipeline, job: dict[str, object], sampler: str | None,
            condition: Callable[[int], Condition] | None, request: GuidedRequest | None, seconds: float,
            resumed: int) -> None:
    """The manifest and grid from the done records; then the job's bookkeeping goes."""
    num = int(job["num"])
    missing = sorted(set(range(num)) - _done_indices(out))
    if missing:
        raise RunError(f"{out}: pairs {missing[:5]} were not written; run the same command again to fill them")
    entries = [json.loads((out / DONE_DIR / f"{i:06d}.json").read_text()) for i in range(num)]
    paste = request is not None and request.mask_source == "paste"  # the trajectories started part-way down
    strength = request.strength or PASTE_STRENGTH if paste else 1.0
    _, _, large_ts, small_ts = pipe.plan(job["steps"], float(job["switch"]), strength, sampler)
    manifest = {
        "defectgen_version": __version__,
        "class_map": pipe.class_map.to_dict(),
        "model": job["model"],
        "train_stems": list(job["model"].get("train_stems", [])),
        "switch": job["switch"],
        "switch_timestep": job["switch"] * pipe.scheduler.config.num_train_timesteps,
        "sampler": job["sampler"],
        "precision": job["precision"],
        "mode": request.mode if request else "unconditional",
        "full_size": bool(job.get("full_size", False)),  # pairs at their backgrounds' own size (else size x size)
        "window": pipe.sample_size,
        "guided": job["guided"],
        "steps": len(large_ts) + len(small_ts),
        "timesteps": {"large": large_ts, "small": small_ts},
        "seed": job["seed"],
        "num_samples": num,
        "seconds": round(seconds, 2),  # this invocation's wall time, all processes together
        "seconds_per_sample": round(seconds / max(num - resumed, 1), 4),
        "resumed_pairs": resumed,
        "samples": entries,
    }
    _write_grid(out, pipe, entries[: samples.GRID_PAIRS], condition, request)
    samples.write_manifest(out, manifest)
    shutil.rmtree(out / DONE_DIR, ignore_errors=True)
    (out / JOB_FILE).unlink(missing_ok=True)


def _write_grid(out: Path, pipe: DefectGenPipeline, entries: list[dict], condition: Callable[[int], Condition] | None,
                request: GuidedRequest | None) -> None:
    if not entries:
        return
    if getattr(condition, "full_size", False):
        pairs = [samples.read_pairs(out, [e["file"]]) for e in entries]
        samples.write_full_grids(out, [i[0] for i, _ in pairs], [m[0] for _, m in pairs],
                                 [condition(e["index"]).image for e in entries], [e["windows"] for e in entries],
                                 pipe.class_map.names)
        return
    imgs, masks = samples.read_pairs(out, [e["file"] for e in entries])
    bgs = None
    if condition is not None and request is not None and request.mode != "masks":
        bgs = np.stack([_background(condition(e["index"]), img) for e, img in zip(entries, imgs)])
    samples.write_grid(out, imgs, masks, pipe.class_map.names, bgs)


def _background(cond: Condition, image: np.ndarray) -> np.ndarray:
    """The grid's first panel of a guided sample: the background it was painted onto (black: none)."""
    return cond.image if cond.image is not None else np.zeros_like(image)


def _request_info(request: GuidedRequest | None) -> dict[str, object] | None:
    if request is None:
        return None
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(request).items()}
