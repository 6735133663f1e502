"""A generator run folder: its config, the chosen real images, both stages and the final pipeline.

Layout::

    RUN/config.yaml         effective config
    RUN/selection.json      data folder, format and the exact stems trained on
    RUN/class_map.json
    RUN/large/  RUN/small/  log.jsonl, samples/step_*.png, checkpoints/step_*/, final/ (EMA UNet)
    RUN/pipeline/           DefectGenPipeline.save_pretrained: both UNets, scheduler, switch, class names

``RunFolder`` is the one reader of a run (for sampling, guided requests, the scripts);
``train_generator`` writes one, ``load_generator`` loads its pipeline after checking it file by file.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from diffusers import UNet2DModel

from defectgen import logs
from defectgen.config import MAX_SIDE, MAX_TIMESTEPS, from_dict, save_config, to_dict
from defectgen.data import ClassMap, DefectDataset, PairRecord, SelectionConfig, load_pairs, open_dataset
from defectgen.data.geometry import CropSet, load_scaled
from defectgen.distributed import process_state
from defectgen.errors import DataError, RunError
from defectgen.generator_config import STAGES, GeneratorConfig, SampleConfig
from defectgen.io import atomic_dir, atomic_write_json, clean_stale_tmp
from defectgen.pairs import encode_pairs
from defectgen.pipelines.defectgen.pipeline_defectgen import LEGACY_CLASS_MAP, DefectGenPipeline, load_pipeline
from defectgen.train import check_batch_memory, ema_unet_from_checkpoint, latest_checkpoint, train_stage

logger = logging.getLogger(__name__)
FROM_CHECKPOINT = "from_checkpoint.json"  # in a final/ that finalize_run made of a checkpoint: the step it is from


@dataclass
class RunFolder:
    """A generator run as every reader sees it: config, selection, class map, pipeline.

    ``RunFolder.find`` takes the run folder or its pipeline folder. A pipeline folder standing alone
    reads as a run without config, selection or class map (None, or the defaults where there are some).
    """

    root: Path
    pipeline: Path  # where model_index.json is, once the run has a pipeline

    @classmethod
    def find(cls, path: str | Path | RunFolder) -> RunFolder:
        if isinstance(path, RunFolder):
            return path
        path = Path(path)
        if (path / "model_index.json").is_file():
            return cls(path.parent, path)
        return cls(path, path / "pipeline")

    def trained(self) -> RunFolder:
        """This run, refused (``RunError``) unless it holds a trained pipeline."""
        if not (self.pipeline / "model_index.json").is_file():
            raise RunError(f"{self.root}: no trained generator here (expected {self.pipeline}/model_index.json); "
                           "train first")
        return self

    @property
    def pipeline_path(self) -> Path:
        """The trained pipeline's folder; a run without one is a ``RunError``."""
        return self.trained().pipeline

    def _read(self, name: str, what: str, parse: Callable[[str], Any]) -> Any:
        """The run's file ``name`` parsed; None when there is none; an unreadable one is a ``RunError``."""
        path = self.root / name
        if not path.is_file():
            return None
        try:
            return parse(path.read_text())
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise RunError(f"{path}: the run's {what} cannot be read ({err})") from err

    @cached_property
    def config(self) -> GeneratorConfig | None:
        """``config.yaml`` read through the dataclass (a key added since the run was made keeps its default)."""
        if not (self.root / "config.yaml").is_file():
            return None
        return from_dict(GeneratorConfig, self._read("config.yaml", "config", yaml.safe_load) or {})

    def config_dict(self) -> dict | None:
        """The config as a plain mapping; None when there is none or it cannot be read (for comparing)."""
        try:
            return None if self.config is None else to_dict(self.config)
        except (RunError, ValueError):
            return None

    @property
    def sample_config(self) -> SampleConfig:
        """The ``sample:`` section: the defaults of the ``sample`` command's flags."""
        return SampleConfig() if self.config is None else self.config.sample

    @property
    def resize_mode(self) -> str:
        return "resize" if self.config is None else self.config.resize_mode

    @property
    def crop_mode(self) -> bool:
        """Trained on crops of images at their own aspect (``resize_mode: crop``): guided pairs are full-size."""
        return self.resize_mode == "crop"

    @cached_property
    def selection(self) -> dict | None:
        """``selection.json``: the data folder, how it was read and the stems trained on (None: none saved)."""
        return self._read("selection.json", "selection", json.loads)

    @property
    def train_stems(self) -> list[str]:
        """Stems the generator was trained on (empty when the pipeline folder stands alone)."""
        return [] if self.selection is None else list(self.selection["stems"])

    @property
    def class_map(self) -> ClassMap | None:
        path = self.root / "class_map.json"
        return ClassMap.load(path) if path.is_file() else None

    def identity(self) -> dict[str, object]:
        """What a sample folder's manifest records of its generator (``model``): the pipeline and its training stems."""
        return {"pipeline": str(self.pipeline_path.resolve()), "train_stems": self.train_stems}

    def training_records(self, class_map: ClassMap) -> list[PairRecord]:
        """The records of the generator's own training pairs, from the data folder named in the run."""
        sel = self.selection
        if sel is None:
            raise DataError(f"{self.root}: no selection.json; training masks and images need the run folder, "
                            "not a bare pipeline")
        ds = open_dataset(sel["data"], sel.get("format"), sel.get("mask_suffix"), threshold=sel.get("threshold"))
        ds.class_map.check_compatible(class_map, str(sel["data"]))
        return [ds.by_stem(s) for s in sel["stems"]]

    def training_pairs(self, class_map: ClassMap, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The generator's own training pairs at ``size``², resized the way the run's training data was."""
        records = self.training_records(class_map)
        images, masks = load_pairs(records, class_map, size, self.resize_mode)
        return images, masks, [r.stem for r in records]


def selection_info(ds: DefectDataset, records: list[PairRecord], sel: SelectionConfig) -> dict[str, object]:
    """``selection.json``: the data, the selection options and the exact stems trained on."""
    return {"data": str(Path(ds.root).resolve()), "format": ds.format, "mask_suffix": sel.mask_suffix,
            "threshold": sel.threshold, "options": sel.options(), "stems": [r.stem for r in records]}


def prepare_run(out: Path, cfg: GeneratorConfig, selection: dict[str, object], class_map: ClassMap) -> None:
    """Create the run folder, or check that an existing one was made with this config and data."""
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, *(out / s for s in STAGES), *(out / s / "checkpoints" for s in STAGES)):
        clean_stale_tmp(folder)  # half-written checkpoints, finals and pipelines of a killed run
    cfg_path, sel_path = out / "config.yaml", out / "selection.json"
    if cfg_path.is_file():
        same_cfg, same_data = _same_run(RunFolder(out, out / "pipeline"), cfg, selection)
        if not (same_cfg and same_data) and not has_trained_stage(out):
            logger.info(f"{out} holds no trained stage yet; its config and selection are written anew")
            for stale in (cfg_path, sel_path, out / "class_map.json"):
                stale.unlink(missing_ok=True)
    if cfg_path.is_file():
        if not same_cfg:
            raise RunError(f"{cfg_path}: this run was made with a different config; choose another --out")
        if not same_data:
            raise RunError(f"{sel_path}: this run was trained on other images; choose another --out")
        ClassMap.load(out / "class_map.json").check_compatible(class_map, str(out))
        return
    if any(out.iterdir()):
        raise RunError(f"{out} exists, is not empty and is not a defectgen run; choose another --out")
    save_config(cfg, cfg_path)
    atomic_write_json(sel_path, selection)
    class_map.save(out / "class_map.json")


def _same_run(run: RunFolder, cfg: GeneratorConfig, selection: dict[str, object]) -> tuple[bool, bool]:
    """Whether ``run`` was made with this config, and on these images (an unreadable file: not the same)."""
    try:
        stems = (run.selection or {}).get("stems")
    except RunError:
        stems = None
    return run.config_dict() == to_dict(cfg), stems == selection["stems"]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def has_trained_stage(out: Path) -> bool:
    """Whether any stage of ``out`` has a checkpoint or a final model (so its config and data are fixed)."""
    return any((out / stage / "final").exists() or latest_checkpoint(out / stage) is not None for stage in STAGES)


def train_generator(
    out: Path,
    cfg: GeneratorConfig,
    ds: DefectDataset,
    records: list[PairRecord],
    selection: dict[str, object],
    stages: tuple[str, ...] = STAGES,
    resume: bool = False,
    progress: bool = True,
    parallel: bool = False,
) -> Path:
    """Train the requested stages into ``out`` and (re)assemble ``out/pipeline``.

    Under ``torchrun`` every process trains; the main process alone writes the run folder,
    ``final/`` and ``pipeline/``, and the others wait for each write before reading on. In one
    process, ``parallel`` trains the small UNet in a second process (same thread count) while this
    one trains the large one: the two UNets do not depend on each other, and two 1-thread processes
    use both cores without the thread barriers that slow a 2-thread step on a busy machine (benchmarks/results/demo/).
    """
    data = training_data(records, ds.class_map, cfg)  # bad data fails here, before the run folder is made
    state = process_state()
    check_batch_memory(cfg, cfg.image_channels + ds.class_map.num_classes, state.device)
    if cfg.diffusion.prediction_type == "epsilon" and cfg.diffusion.rescale_betas_zero_snr and state.is_main_process:
        logger.warning("warning: epsilon prediction with rescale_betas_zero_snr cannot give an image at t = T "
                       "(alpha_bar = 0, the x0 estimate divides by zero); on NEU its samples were noise "
                       "(experiments/neu_pay/results/levers.md). Use diffusion.prediction_type v_prediction or sample.")
    with state.main_process_first():  # the main process creates the folder, the others then check it
        prepare_run(out, cfg, selection, ds.class_map)
    todo = [s for s in stages if _needs_training(out / s, s, resume, state.is_main_process)]
    background = None
    if parallel and len(todo) > 1 and state.num_processes == 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        background = pool.submit(_train_stage_job, out, cfg, records, ds.class_map, todo.pop(), resume,
                                 logs.configured_level())
    try:
        for stage in todo:
            train_one_stage(out, cfg, data, ds.class_map, stage, resume, progress)
        if background is not None:
            background.result()  # re-raises the worker's error here
    finally:
        if background is not None:
            pool.shutdown()
    if state.is_main_process:
        assemble_pipeline(out, cfg)
    state.wait_for_everyone()
    return out / "pipeline"


def _needs_training(stage_dir: Path, stage: str, resume: bool, say: bool = True) -> bool:
    if (stage_dir / "final" / "config.json").is_file():
        if say:
            logger.info(f"{stage} stage already finished in {stage_dir}; skipping")
        return False
    if latest_checkpoint(stage_dir) is not None and not resume:
        raise RunError(f"{stage_dir} has checkpoints of an unfinished run; pass --resume latest to continue it")
    return True


def train_one_stage(out: Path, cfg: GeneratorConfig, data: torch.Tensor | CropSet, class_map: ClassMap, stage: str,
                    resume: bool, progress: bool) -> None:
    """Train ``stage`` on encoded pairs; the main process writes its EMA UNet to ``out/stage/final`` and its timing."""
    stage_dir, state = out / stage, process_state()
    t0 = time.time()
    model = train_stage(cfg, data, stage_dir, stage, resume=resume, progress=progress, names=class_map.names)
    if state.is_main_process:
        with atomic_dir(stage_dir / "final") as tmp:
            model.save_pretrained(tmp)
        atomic_write_json(stage_dir / "timing.json", {"seconds": round(time.time() - t0, 2), "resumed": resume,
                                                      "processes": state.num_processes})
    state.wait_for_everyone()


def _train_stage_job(out: Path, cfg: GeneratorConfig, records: list[PairRecord], class_map: ClassMap, stage: str,
                     resume: bool, log_level: int | None = None) -> None:
    """One stage in a worker process: load the pairs, train, save (logging as the parent process does)."""
    from defectgen.timing import set_cpu_threads

    set_cpu_threads()
    if log_level is not None:
        logs.configure(log_level)
    data = training_data(records, class_map, cfg)
    train_one_stage(out, cfg, data, class_map, stage, resume, progress=False)


def training_data(records: list[PairRecord], class_map: ClassMap, cfg: GeneratorConfig) -> torch.Tensor | CropSet:
    """Encoded pairs: all at ``size``² (resize, center-crop), or scaled images drawn as crops (crop)."""
    if cfg.resize_mode != "crop":
        images, masks = load_pairs(records, class_map, cfg.size, cfg.resize_mode)
        return encode_pairs(images, masks, class_map.num_classes, cfg.image_channels)
    images, masks = load_scaled(records, class_map, cfg.long_side, cfg.size)
    items = [encode_pairs(i[None].copy(), m[None], class_map.num_classes, cfg.image_channels)[0] for i, m in zip(images, masks)]
    return CropSet(items, masks, cfg.size, cfg.crop_defect_prob, class_map.num_classes)


def assemble_pipeline(out: Path, cfg: GeneratorConfig) -> Path:
    """Write ``out/pipeline`` from whichever stages have finished."""
    models: dict[str, UNet2DModel | None] = {}
    for stage in STAGES:
        final = out / stage / "final"
        models[stage] = load_final(final) if (final / "config.json").is_file() else None
    if not any(models.values()):
        raise RunError(f"{out}: no finished stage to assemble")
    names = RunFolder(out, out / "pipeline").class_map.names
    pipe = DefectGenPipeline(models["large"], models["small"], cfg.diffusion.make_scheduler(), cfg.sample.switch,
                             cfg.image_channels, list(names))
    with atomic_dir(out / "pipeline") as tmp:
        pipe.save_pretrained(tmp)
    return out / "pipeline"


def finalize_run(run: Path) -> dict[str, int]:
    """Finish a run cut short: every unfinished stage gets its newest checkpoint's EMA weights as ``final/``
    (marked by ``FROM_CHECKPOINT``, holding the step), then the pipeline is assembled.

    Returns the step each stage's final weights are from (a stage finished earlier: its last logged step,
    -1 without a log; a stage without checkpoint: 0). A run whose config cannot be read returns {}.
    """
    run = Path(run)
    folder = RunFolder(run, run / "pipeline")
    cfg = folder.config if folder.config_dict() is not None else None
    if cfg is None:
        return {}  # the run never started (its error is in the training log)
    channels = cfg.image_channels + folder.class_map.num_classes
    reached = {stage: _finalize_stage(run / stage, cfg, stage, channels) for stage in STAGES}
    if any(reached.values()):
        assemble_pipeline(run, cfg)
    return reached


def _finalize_stage(stage_dir: Path, cfg: GeneratorConfig, stage: str, channels: int) -> int:
    if (stage_dir / "final" / "config.json").is_file():
        log = stage_dir / "log.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        return json.loads(lines[-1])["step"] if lines else -1
    ckpt = latest_checkpoint(stage_dir)
    if ckpt is None:
        return 0
    unet, step = ema_unet_from_checkpoint(cfg, stage, channels, ckpt)
    with atomic_dir(stage_dir / "final") as tmp:
        unet.save_pretrained(tmp)
        (tmp / FROM_CHECKPOINT).write_text(json.dumps({"step": step}))
    return step


def load_final(final: Path) -> UNet2DModel:
    """A stage's finished UNet from its safetensors file; a pickled weights file is never read (it could run code)."""
    weights = final / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        pickled = sorted(p.name for p in final.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        why = f"; {pickled[0]} beside it is a pickled weights file, which is not read (it could run code)" if pickled else ""
        raise RunError(f"{weights}: missing{why}. Train this stage again (remove {final})")
    try:
        return UNet2DModel.from_pretrained(final, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise RunError(f"{final}: the stage's model cannot be loaded ({str(err).splitlines()[0]})") from err


def check_pipeline_folder(path: Path) -> None:
    """Refuse a damaged pipeline folder before diffusers reads it, naming the file at fault."""
    from safetensors import SafetensorError, safe_open

    index_path = path / "model_index.json"
    try:
        text = index_path.read_text()
        if not text.strip():
            raise ValueError("the file is empty")
        index = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunError(f"{index_path}: not valid JSON ({err}); the pipeline folder is damaged") from err
    if not isinstance(index, dict) or "scheduler" not in index:
        raise RunError(f"{index_path}: not a DefectGen pipeline index (no scheduler entry)")
    if index.get("class_names") is None and not (path / LEGACY_CLASS_MAP).is_file():
        raise RunError(f"{index_path}: no class_names (nor an older defectgen's {LEGACY_CLASS_MAP}); "
                       "without them the pipeline's classes have no names")
    _check_index(index, index_path)
    parts = [name for name in ("unet", "unet_2") if (index.get(name) or [None])[0] is not None]
    if not parts:
        raise RunError(f"{index_path}: names neither UNet (unet, unet_2); nothing to sample with")
    for name in parts:
        folder = path / name
        if not (folder / "config.json").is_file():
            raise RunError(f"{folder / 'config.json'}: missing; the pipeline's {name} folder is incomplete")
        weights = folder / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():
            raise RunError(f"{weights}: missing; the pipeline's {name} weights are gone")
        try:
            with safe_open(str(weights), "pt") as f:
                for key in f.keys():
                    f.get_slice(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise RunError(f"{weights}: not a readable safetensors file ({err}); the weights are damaged") from err
    _check_sizes(path, parts)


# What a DefectGen pipeline folder is made of: model_index.json may name nothing else, so no other code is imported.
_COMPONENTS = {"unet": ("UNet2DModel",), "unet_2": ("UNet2DModel",),
               "scheduler": ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler")}


def _check_index(index: dict, index_path: Path) -> None:
    """The index's own values: its components, the switch, the image channels, the class names."""
    for name, classes in _COMPONENTS.items():
        entry = index.get(name)
        if name != "scheduler" and entry in (None, [None, None]):
            continue
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "diffusers" and entry[1] in classes):
            raise RunError(f"{index_path}: component '{name}' is {entry!r}; a DefectGen pipeline holds "
                           f"{' or '.join(f'diffusers.{c}' for c in classes)} there")
    switch, channels, names = index.get("switch", 0.4), index.get("image_channels", 3), index.get("class_names")
    if not (isinstance(switch, (int, float)) and not isinstance(switch, bool) and 0.0 <= switch <= 1.0):
        raise RunError(f"{index_path}: switch must be a number in [0, 1], got {switch!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise RunError(f"{index_path}: image_channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise RunError(f"{index_path}: class_names must be a list of names, got {names!r}")


def _check_sizes(path: Path, parts: list[str]) -> None:
    """Both UNets sample the size they were trained at, the one in the run's config.yaml (a hand-edited
    ``sample_size`` would silently give pairs of another size), and the schedule has a sane length."""
    sizes = {}
    for name in parts:
        cfg_path = path / name / "config.json"
        size = _read_json(cfg_path) or {}
        size = size.get("sample_size") if isinstance(size, dict) else None
        if not (isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= MAX_SIDE):
            raise RunError(f"{cfg_path}: sample_size must be a side of 8 to {MAX_SIDE} pixels, got {size!r}")
        sizes[name] = size
    trained = (RunFolder.find(path).config_dict() or {}).get("size")
    for name, size in sizes.items():
        if trained is not None and size != trained:
            raise RunError(f"{path / name / 'config.json'}: sample_size {size} differs from the run's config.yaml size "
                           f"({trained}); the model was trained at that size")
    if len(set(sizes.values())) > 1:
        raise RunError(f"{path}: the UNets' sample_size differ ({', '.join(f'{n} {v}' for n, v in sizes.items())}); "
                       "both were trained at one size, so a config.json was edited")
    scheduler = _read_json(path / "scheduler" / "scheduler_config.json") or {}
    steps = scheduler.get("num_train_timesteps", 1000) if isinstance(scheduler, dict) else None
    if not (isinstance(steps, int) and 2 <= steps <= MAX_TIMESTEPS):
        raise RunError(f"{path / 'scheduler' / 'scheduler_config.json'}: num_train_timesteps must be 2 to {MAX_TIMESTEPS}, "
                       f"got {steps!r}")


def load_generator(run: Path | RunFolder, device: str | torch.device = "cpu") -> DefectGenPipeline:
    """The trained pipeline of ``run`` (a run or pipeline folder), checked file by file so that a damaged
    folder is one clear error."""
    path = RunFolder.find(run).pipeline_path
    check_pipeline_folder(path)
    try:
        pipe = load_pipeline(path)  # also checks the UNets' channels against image channels + classes
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise RunError(f"{path}: the pipeline cannot be loaded ({str(err).splitlines()[0]})") from err
    return pipe.to(device)
