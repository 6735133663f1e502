"""Training one stage (the large or the small UNet) on image ⊕ one-hot mask pairs.

Built on accelerate. Every step draws its batch, augmentation, timesteps and noise from a
generator seeded by (seed, step), so a run resumed from a checkpoint reaches the same weights as
an uninterrupted one. Checkpoints are written to a temporary folder and renamed in one step.

Several processes (one per GPU)::

    torchrun --nproc_per_node 4 -m defectgen.cli -- train --config configs/neu64_gpu.yaml ...
    accelerate launch --multi_gpu --num_processes 4 -m defectgen.cli train ...

split each step's global batch (``train.batch_size``) between them: the result equals one process.
"""
from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from tqdm.auto import tqdm

from defectgen.data.geometry import CropSet
from defectgen.errors import CheckpointError, ConfigError, DivergedError
from defectgen.generator_config import GeneratorConfig, TrainConfig
from defectgen.io import atomic_dir, atomic_save_image, atomic_write_text
from defectgen.models import build_unet
from defectgen.pairs import flip_turn
from defectgen.pipelines.defectgen.pipeline_defectgen import DefectGenPipeline
from defectgen.schedule import sample_generators, sample_seed, target_for
from defectgen.viz import pair_grid

logger = logging.getLogger(__name__)


def augment(x: torch.Tensor, draws: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Random flips and 90° rotations of image and mask channels together, for the whole batch at once.

    ``draws`` (B, 3) holds each row's horizontal flip, vertical flip (0/1) and quarter turns (0-3).
    """
    flips = (draws[:, 0], draws[:, 1]) if cfg.flip else (None, None)
    return flip_turn(x, *flips, turns=draws[:, 2] if cfg.rot90 else None)


def draw_batch(
    data: torch.Tensor | CropSet, cfg: TrainConfig, scheduler: DDPMScheduler, key: int, rank: int = 0,
    world: int = 1, device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Process ``rank``'s share of one micro-step's global batch: images, timesteps and noise.

    The whole global batch (``cfg.batch_size`` rows) is drawn from a generator seeded by ``key``
    alone, in one batched draw per quantity, and each of ``world`` processes keeps its own
    contiguous rows; so N processes see exactly the batch one process would, and resume is exact.
    Noise is drawn on ``device`` (default: the data's), so a GPU needs no host work per step.
    """
    n = cfg.batch_size
    device = device or (data.device if isinstance(data, torch.Tensor) else torch.device("cpu"))
    rows = slice(rank * n // world, (rank + 1) * n // world)
    g = torch.Generator().manual_seed(key)
    idx = torch.randint(len(data), (n,), generator=g)
    if isinstance(data, CropSet):
        x0 = data.crops(idx, g)[rows].to(device)  # every process crops the whole batch: the draws stay in step
    else:
        x0 = data[idx[rows].to(data.device)].to(device)
    draws = torch.cat([torch.randint(2, (n, 2), generator=g), torch.randint(4, (n, 1), generator=g)], dim=1)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=g)
    noise = torch.randn((n, *data.shape[1:]), generator=torch.Generator(device).manual_seed(key), device=device)
    return augment(x0, draws[rows], cfg), t[rows].to(device), noise[rows]


def _checkpoints(stage_dir: Path) -> list[Path]:
    return sorted((stage_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(stage_dir: Path) -> Path | None:
    found = [p for p in _checkpoints(stage_dir) if (p / "trainer_state.json").is_file()]
    return found[-1] if found else None


# What a checkpoint holds: tensors in safetensors / weights-only form and plain JSON, nothing that
# unpickles code. The RNG state is not saved: every step's draws are keyed by (seed, step).
CHECKPOINT_FILES = {"model.safetensors", "optimizer.pt", "ema.pt", "trainer_state.json"}


@dataclass
class TrainParts:
    """The objects a checkpoint saves and restores."""

    accelerator: Accelerator
    unet: UNet2DModel
    optimizer: torch.optim.Optimizer
    lr_sched: torch.optim.lr_scheduler.LRScheduler
    ema: EMAModel


def save_checkpoint(parts: TrainParts, stage_dir: Path, step: int, keep: int) -> Path:
    """Write weights, optimizer, EMA and the scheduler/step state to ``checkpoints/step_N`` in one rename.

    Only the main process writes (DDP keeps every process's weights and optimizer equal); the
    others wait until the folder is in place."""
    target = stage_dir / "checkpoints" / f"step_{step:07d}"
    acc = parts.accelerator
    if acc.is_main_process:
        scaler = acc.scaler.state_dict() if getattr(acc, "scaler", None) is not None else None
        state = {"step": step, "lr_scheduler": parts.lr_sched.state_dict(), "scaler": scaler}
        with atomic_dir(target) as tmp:
            save_model(acc.unwrap_model(parts.unet, keep_torch_compile=False), str(tmp / "model.safetensors"))
            torch.save(parts.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(parts.ema.state_dict(), tmp / "ema.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(state))
        for old in _checkpoints(stage_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return target


def _read_checkpoint(ckpt: Path) -> dict:
    """Every part of ``ckpt`` read into memory (nothing applied yet); refuses unexpected files."""
    stray = sorted(p.name for p in ckpt.iterdir() if p.name not in CHECKPOINT_FILES)
    if any(name.endswith(".pkl") for name in stray) and (ckpt / "optimizer.bin").is_file():
        raise CheckpointError(f"{ckpt}: written by an older defectgen (accelerate state with pickled RNG files), which "
                              "is no longer loaded because a pickle can run code; start this stage again in a new --out")
    if stray:
        raise CheckpointError(f"{ckpt}: unexpected file(s) {', '.join(stray)}; a checkpoint holds only "
                              f"{', '.join(sorted(CHECKPOINT_FILES))} and nothing else is loaded (no pickles). "
                              "Remove this folder to resume from an earlier checkpoint")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return {"state": state, "step": int(state["step"]), "model": load_file(str(ckpt / "model.safetensors")),
            "optimizer": _load_tensors(ckpt / "optimizer.pt"), "ema": _load_tensors(ckpt / "ema.pt")}


def ema_unet_from_checkpoint(cfg: GeneratorConfig, stage: str, channels: int, ckpt: Path) -> tuple[UNet2DModel, int]:
    """The ``stage`` UNet carrying checkpoint ``ckpt``'s EMA weights, and the step they are from: what
    ``final/`` would hold had training stopped there."""
    unet = build_unet(cfg.large if stage == "large" else cfg.small, channels, cfg.size)
    saved = _read_checkpoint(ckpt)
    ema = EMAModel(unet.parameters(), decay=cfg.train.ema_decay, use_ema_warmup=cfg.train.ema_warmup)
    ema.load_state_dict(saved["ema"])
    ema.copy_to(unet.parameters())
    return unet, saved["step"]


def _load_tensors(path: Path) -> dict:
    """A torch file of tensors and plain containers; anything else (a damaged file, a pickle) is refused, not run."""
    try:
        with warnings.catch_warnings():  # the weights-only unpickler's notes on a foreign pickle protocol
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except EOFError as err:
        raise pickle.UnpicklingError(f"{path.name}: empty or cut short") from err
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(f"{path.name}: not a file of tensors only (damaged, or a pickle that could run "
                                     "code; not read)") from err


def load_checkpoint(parts: TrainParts, stage_dir: Path) -> int:
    """Restore the newest intact checkpoint; return its step (0: none). A damaged newest one is skipped,
    but when every checkpoint is damaged the stage is not silently trained again from step 0."""
    damaged = []
    for ckpt in reversed(_checkpoints(stage_dir)):
        try:
            saved = _read_checkpoint(ckpt)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError, SafetensorError) as err:
            damaged.append(f"{ckpt.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            logger.warning(f"skipping damaged checkpoint {ckpt}: {damaged[-1].split(': ', 1)[1]}")
            continue
        parts.accelerator.unwrap_model(parts.unet, keep_torch_compile=False).load_state_dict(saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.lr_sched.load_state_dict(saved["state"]["lr_scheduler"])
        if saved["state"].get("scaler") and getattr(parts.accelerator, "scaler", None) is not None:
            parts.accelerator.scaler.load_state_dict(saved["state"]["scaler"])
        parts.ema.load_state_dict(saved["ema"])
        parts.ema.to(parts.accelerator.device)  # the saved shadow weights were read onto the CPU
        return saved["step"]
    if damaged:
        raise CheckpointError(f"{stage_dir / 'checkpoints'}: none of the {len(damaged)} checkpoints can be read (newest "
                              f"{damaged[0]}); resuming would train this stage again from step 0. Remove that folder "
                              "to do so, or put back an intact checkpoint")
    return 0


def _trim_log(log_path: Path, upto: int) -> None:
    """After a resume, drop log lines from steps the crashed run did past its last checkpoint."""
    if log_path.is_file():
        keep = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= upto]
        atomic_write_text(log_path, "".join(k + "\n" for k in keep))


def preview(unet: UNet2DModel, scheduler: DDPMScheduler, cfg: GeneratorConfig, stage: str, path: Path,
            names: tuple[str, ...] | None = None) -> None:
    """A grid of pairs from this stage's model alone, with fixed seeds (comparable across steps)."""
    large = stage == "large"
    pipe = DefectGenPipeline(unet if large else None, None if large else unet, scheduler, 0.0 if large else 1.0,
                             cfg.image_channels)
    n = cfg.train.sample_count
    gens = sample_generators(1234, range(n))
    was_training = unet.training
    unet.eval()
    out = pipe(gens, sampler="ddim", num_inference_steps=cfg.train.sample_steps, progress=False)
    unet.train(was_training)
    atomic_save_image(path, pair_grid(out.images, out.masks, ncols=4, scale=max(1, 128 // cfg.size), names=names))


def check_batch_memory(cfg: GeneratorConfig, channels: int, device: torch.device | str | None = None) -> None:
    """Refuse a batch whose tensors cannot fit, before the run folder is made (a lower bound: the pair
    tensors of a step and the UNets' first-level activations; the real peak is higher)."""
    from defectgen.device import need_memory

    width = max(cfg.large.base_channels, cfg.small.base_channels)
    per_pair = cfg.size**2 * (6 * channels + 4 * width) * 4  # x0, noise, noisy, output, target, gradient; fp32
    need_memory(cfg.train.batch_size * per_pair, f"config key 'train.batch_size': a batch of {cfg.train.batch_size} pairs "
                f"of {channels}x{cfg.size}x{cfg.size}", device)


class _Divergence:
    """The first step whose loss was not finite, tracked on the device (read back only when checked)."""

    def __init__(self, device: torch.device) -> None:
        self.step = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet
        self.loss = torch.zeros((), device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        first = (self.step == 0) & ~torch.isfinite(loss)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss.float(), self.loss)

    def check(self, accelerator: Accelerator, stage: str) -> None:
        """Stop every process when any has seen a non-finite loss; called before anything is written."""
        steps, losses = accelerator.gather(self.step[None]), accelerator.gather(self.loss[None])
        if bool((steps > 0).any()):
            i = int(torch.where(steps > 0, steps, steps.max() + 1).argmin())
            raise DivergedError(f"{stage} stage: the loss became {losses[i].item()} at step {int(steps[i])}; training "
                                "stopped before writing a checkpoint or a model from that step (lower train.lr, "
                                "raise train.warmup_steps, or check the data)")


def _check_world(tc: TrainConfig, world: int) -> None:
    if tc.batch_size % world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is the global batch and must be divisible by the "
                          f"number of processes ({world})")


def _accelerate(unet: UNet2DModel, tc: TrainConfig, device: torch.device) -> UNet2DModel:
    """The GPU speed options: channels-last memory layout and ``torch.compile`` (CUDA only)."""
    if tc.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if tc.compile and device.type == "cuda":
        unet = torch.compile(unet)
    return unet


def train_stage(
    cfg: GeneratorConfig,
    data: torch.Tensor | CropSet,
    stage_dir: Path,
    stage: str,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    names: tuple[str, ...] | None = None,
) -> UNet2DModel:
    """Train the ``stage`` UNet on encoded pairs ``data`` (N,C,H,W); return the EMA model.

    ``train.batch_size`` is the global batch: under ``torchrun`` each process trains on its share
    and DDP averages the gradients, so the weights match a single-process run. ``stop_after`` ends
    this call after that many steps (training in chunks on a machine with a time limit);
    ``resume=True`` continues from the newest checkpoint; ``names`` label the classes in the
    preview grids. Only the main process writes.
    """
    tc = cfg.train
    steps = tc.large_steps if stage == "large" else tc.small_steps
    torch.manual_seed(tc.seed)
    unet = build_unet(cfg.large if stage == "large" else cfg.small, data.shape[1], cfg.size)
    scheduler = cfg.diffusion.make_scheduler()
    # The schedule is stepped by hand once per optimizer step: a prepared scheduler that follows the
    # optimizer would be stepped once per process, running the schedule num_processes times too fast.
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, gradient_accumulation_steps=tc.grad_accum,
                              step_scheduler_with_optimizer=False)
    _check_world(tc, accelerator.num_processes)
    main = accelerator.is_main_process
    optimizer = torch.optim.AdamW(unet.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, tc.warmup_steps, max(steps, 1))
    ema = EMAModel(unet.parameters(), decay=tc.ema_decay, use_ema_warmup=tc.ema_warmup,
                   model_cls=UNet2DModel, model_config=unet.config, foreach=True)
    unet = _accelerate(unet, tc, accelerator.device)
    unet, optimizer, lr_sched = accelerator.prepare(unet, optimizer, lr_sched)
    ema.to(accelerator.device)
    if isinstance(data, torch.Tensor):  # a few-shot set fits on the device; crops are cut on the host
        data = data.to(accelerator.device)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    parts = TrainParts(accelerator, unet, optimizer, lr_sched, ema)
    log_path = stage_dir / "log.jsonl"
    start = load_checkpoint(parts, stage_dir) if resume else 0
    if start and main:
        _trim_log(log_path, start)
    stage_dir.mkdir(parents=True, exist_ok=True)
    unet.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {stage}",
               disable=not (progress and main))
    t0, loss_sum, micro_steps, rows = time.time(), torch.zeros((), device=accelerator.device), 0, 0
    diverged = _Divergence(accelerator.device)
    for step in bar:
        for micro in range(tc.grad_accum):
            key = sample_seed(tc.seed, step * tc.grad_accum + micro)
            x0, t, noise = draw_batch(data, tc, scheduler, key, accelerator.process_index, accelerator.num_processes,
                                      accelerator.device)
            with accelerator.accumulate(unet):
                noisy = scheduler.add_noise(x0, noise, t).contiguous(memory_format=memory_format)
                pred = unet(noisy, t).sample
                loss = F.mse_loss(pred.float(), target_for(scheduler, x0, noise, t).float())
                accelerator.backward(loss)
                if accelerator.sync_gradients and tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(unet.parameters(), tc.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    lr_sched.step()
                optimizer.zero_grad()
            loss_sum += loss.detach()  # stays on the device: no host sync until a log line is due
            diverged.update(loss.detach(), step + 1)
            micro_steps += 1
            rows += len(x0)
        ema.step(accelerator.unwrap_model(unet).parameters())
        done = step + 1
        logs = done % tc.log_every == 0 or done == steps
        previews = tc.sample_every > 0 and (done % tc.sample_every == 0 or done == steps)
        saves = tc.checkpoint_every > 0 and (done % tc.checkpoint_every == 0 or done == steps)
        stops = stop_after is not None and done >= stop_after
        if logs or previews or saves or stops:
            diverged.check(accelerator, stage)  # a host sync only when something is about to be written
        if logs:
            mean_loss = accelerator.reduce(loss_sum / micro_steps, reduction="mean").item()
            batch = accelerator.reduce(torch.tensor(rows, device=accelerator.device), reduction="sum").item()
            if main:
                rec = {"step": done, "loss": mean_loss, "batch": batch * tc.grad_accum // micro_steps,
                       "lr": lr_sched.get_last_lr()[0],
                       "ema_decay": ema.cur_decay_value, "seconds": round(time.time() - t0, 3)}
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            loss_sum.zero_()
            micro_steps = rows = 0
        if main and previews:
            ema_model = ema_unet(ema, accelerator.unwrap_model(unet))
            preview(ema_model, scheduler, cfg, stage, stage_dir / "samples" / f"step_{done:07d}.png", names)
        if saves:
            save_checkpoint(parts, stage_dir, done, tc.keep_checkpoints)
        if stops:
            break
    return ema_unet(ema, accelerator.unwrap_model(unet, keep_torch_compile=False))


def ema_unet(ema: EMAModel, like: UNet2DModel) -> UNet2DModel:
    """A separate UNet holding the EMA weights (the training model is left untouched)."""
    like = getattr(like, "_orig_mod", like)  # a torch.compile wrapper
    model = UNet2DModel.from_config(like.config)
    model.load_state_dict(like.state_dict())
    ema.copy_to(model.parameters())
    return model.to(like.device).eval()
