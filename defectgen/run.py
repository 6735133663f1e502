"""A generator run folder: its config, the chosen real images, both stages and the final pipeline.

Layout::

    RUN/config.yaml         effective config
    RUN/selection.json      data folder, format and the exact stems trained on
    RUN/class_map.json
    RUN/large/  RUN/small/  log.jsonl, samples/step_*.png, checkpoints/step_*/, final/ (EMA UNet)
    RUN/pipeline/           DefectGenPipeline.save_pretrained: both UNets, scheduler, switch, class names
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import yaml
from diffusers import UNet2DModel

from defectgen.config import MAX_SIDE, MAX_TIMESTEPS, from_dict, save_config, to_dict
from defectgen.data import ClassMap, DefectDataset, PairRecord, SelectionConfig, load_pairs
from defectgen.data.geometry import CropSet, load_scaled
from defectgen.distributed import process_state
from defectgen.errors import RunError
from defectgen.generator_config import STAGES, GeneratorConfig, SampleConfig
from defectgen.io import atomic_dir, atomic_write_json, clean_stale_tmp
from defectgen.pairs import encode_pairs
from defectgen.pipeline import LEGACY_CLASS_MAP, DefectGenPipeline, load_pipeline
from defectgen.train import check_batch_memory, latest_checkpoint, train_stage


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
        same_cfg = _saved_config(cfg_path) == to_dict(cfg)
        same_data = (_read_json(sel_path) or {}).get("stems") == selection["stems"]
        if not (same_cfg and same_data) and not has_trained_stage(out):
            print(f"[defectgen] {out} holds no trained stage yet; its config and selection are written anew")
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


def _saved_config(path: Path) -> dict | None:
    """The run's config read through the dataclass (a key added since the run was made keeps its default)."""
    try:
        return to_dict(from_dict(GeneratorConfig, yaml.safe_load(path.read_text()) or {}))
    except (OSError, yaml.YAMLError, ValueError):
        return None


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
    use both cores without the thread barriers that slow a 2-thread step on a busy machine (results/demo/).
    """
    data = training_data(records, ds.class_map, cfg)  # bad data fails here, before the run folder is made
    state = process_state()
    check_batch_memory(cfg, cfg.image_channels + ds.class_map.num_classes, state.device)
    if cfg.diffusion.prediction_type == "epsilon" and cfg.diffusion.rescale_betas_zero_snr and state.is_main_process:
        print("[defectgen] warning: epsilon prediction with rescale_betas_zero_snr cannot give an image at t = T "
              "(alpha_bar = 0, the x0 estimate divides by zero); on NEU its samples were noise "
              "(results/neu_pay/levers.md). Use diffusion.prediction_type v_prediction or sample.", file=sys.stderr)
    with state.main_process_first():  # the main process creates the folder, the others then check it
        prepare_run(out, cfg, selection, ds.class_map)
    todo = [s for s in stages if _needs_training(out / s, s, resume, state.is_main_process)]
    background = None
    if parallel and len(todo) > 1 and state.num_processes == 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        background = pool.submit(_train_stage_job, out, cfg, records, ds.class_map, todo.pop(), resume)
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
            print(f"[defectgen] {stage} stage already finished in {stage_dir}; skipping")
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
                     resume: bool) -> None:
    """One stage in a worker process: load the pairs, train, save."""
    from defectgen.timing import set_cpu_threads

    set_cpu_threads()
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
    names = ClassMap.load(out / "class_map.json").names
    pipe = DefectGenPipeline(models["large"], models["small"], cfg.diffusion.make_scheduler(), cfg.sample.switch,
                             cfg.image_channels, list(names))
    with atomic_dir(out / "pipeline") as tmp:
        pipe.save_pretrained(tmp)
    return out / "pipeline"


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


def pipeline_path(run: Path) -> Path:
    """Accept a run folder or a pipeline folder."""
    run = Path(run)
    for candidate in (run, run / "pipeline"):
        if (candidate / "model_index.json").is_file():
            return candidate
    raise RunError(f"{run}: no trained generator here (expected {run}/pipeline/model_index.json); train first")


def train_stems(run: Path) -> list[str]:
    """Stems the generator was trained on (empty when the pipeline folder stands alone)."""
    for sel in (Path(run) / "selection.json", Path(run).parent / "selection.json"):
        if sel.is_file():
            return list(json.loads(sel.read_text())["stems"])
    return []


def run_config(run: Path) -> GeneratorConfig | None:
    """The generator config saved in a run folder (given the run or its pipeline folder); None for a
    pipeline folder standing alone."""
    run = Path(run)
    for path in (run / "config.yaml", *((run.parent / "config.yaml",) if (run / "model_index.json").is_file() else ())):
        if path.is_file():
            try:
                return from_dict(GeneratorConfig, yaml.safe_load(path.read_text()) or {})
            except (OSError, yaml.YAMLError) as err:
                raise RunError(f"{path}: the run's config cannot be read ({err})") from err
    return None


def run_sample_config(run: Path) -> SampleConfig:
    """The ``sample:`` section of the run's config.yaml (defaults when the pipeline stands alone)."""
    from defectgen.config import from_dict

    for cfg_path in (Path(run) / "config.yaml", pipeline_path(run).parent / "config.yaml"):
        if cfg_path.is_file():
            return from_dict(SampleConfig, (yaml.safe_load(cfg_path.read_text()) or {}).get("sample", {}))
    return SampleConfig()


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
    trained = (_saved_config(path.parent / "config.yaml") or {}).get("size")
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


def load_generator(run: Path, device: str | torch.device = "cpu") -> DefectGenPipeline:
    """The trained pipeline of ``run``, checked file by file so that a damaged folder is one clear error."""
    path = pipeline_path(run)
    check_pipeline_folder(path)
    try:
        pipe = load_pipeline(path)  # also checks the UNets' channels against image channels + classes
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise RunError(f"{path}: the pipeline cannot be loaded ({str(err).splitlines()[0]})") from err
    return pipe.to(device)
