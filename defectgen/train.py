"""Training one stage (the large or the small UNet) on image ⊕ one-hot mask pairs.

Built on accelerate. Every step draws its batch, augmentation, timesteps and noise from a
generator seeded by (seed, step), so a run resumed from a checkpoint reaches the same weights as
an uninterrupted one. Checkpoints are written to a temporary folder and renamed in one step.
"""
from __future__ import annotations

import json
import pickle
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from tqdm.auto import tqdm

from defectgen.data import ClassMap
from defectgen.data.geometry import CropSet
from defectgen.generator_config import GeneratorConfig, TrainConfig
from defectgen.io import atomic_dir, atomic_save_image, atomic_write_text
from defectgen.models import build_unet
from defectgen.pipeline import DefectGenPipeline, sample_seed
from defectgen.viz import pair_grid


def make_scheduler(cfg: GeneratorConfig) -> DDPMScheduler:
    d = cfg.diffusion
    return DDPMScheduler(
        num_train_timesteps=d.num_train_timesteps,
        beta_schedule=d.beta_schedule,
        prediction_type=d.prediction_type,
        clip_sample=d.clip_sample,
        rescale_betas_zero_snr=d.rescale_betas_zero_snr,
        timestep_spacing="trailing",  # sampling starts from the top timestep, pure noise
    )


def augment(x: torch.Tensor, g: torch.Generator, cfg: TrainConfig) -> torch.Tensor:
    """Random flips and 90° rotations, applied to image and mask channels together."""
    out = []
    for xi in x:
        if cfg.flip and torch.rand((), generator=g) < 0.5:
            xi = xi.flip(-1)
        if cfg.flip and torch.rand((), generator=g) < 0.5:
            xi = xi.flip(-2)
        if cfg.rot90:
            xi = torch.rot90(xi, int(torch.randint(4, (), generator=g)), dims=(-2, -1))
        out.append(xi)
    return torch.stack(out)


def target_for(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"unknown prediction_type '{kind}'")


def draw_batch(data: torch.Tensor, cfg: TrainConfig, scheduler: DDPMScheduler, key: int):
    """Batch, timesteps and noise for one micro-step, from a generator seeded by ``key`` alone."""
    g = torch.Generator().manual_seed(key)
    idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
    x0 = augment(data.crops(idx, g) if isinstance(data, CropSet) else data[idx], g, cfg)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    return x0, t, noise


def _checkpoints(stage_dir: Path) -> list[Path]:
    return sorted((stage_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(stage_dir: Path) -> Path | None:
    found = [p for p in _checkpoints(stage_dir) if (p / "trainer_state.json").is_file()]
    return found[-1] if found else None


class CheckpointError(ValueError):
    """A checkpoint folder holds something a checkpoint must not (a pickle, a stray file)."""


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
    """Write weights, optimizer, EMA and the scheduler/step state to ``checkpoints/step_N`` in one rename."""
    target = stage_dir / "checkpoints" / f"step_{step:07d}"
    acc = parts.accelerator
    if acc.is_main_process:
        scaler = acc.scaler.state_dict() if getattr(acc, "scaler", None) is not None else None
        state = {"step": step, "lr_scheduler": parts.lr_sched.state_dict(), "scaler": scaler}
        with atomic_dir(target) as tmp:
            save_model(acc.unwrap_model(parts.unet), str(tmp / "model.safetensors"))
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
            "optimizer": torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True),
            "ema": torch.load(ckpt / "ema.pt", map_location="cpu", weights_only=True)}


def load_checkpoint(parts: TrainParts, stage_dir: Path) -> int:
    """Restore the newest intact checkpoint; return its step (0: none). A damaged newest one is skipped."""
    for ckpt in reversed(_checkpoints(stage_dir)):
        try:
            saved = _read_checkpoint(ckpt)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError, SafetensorError) as err:
            print(f"[defectgen] skipping damaged checkpoint {ckpt}: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                  file=sys.stderr)
            continue
        parts.accelerator.unwrap_model(parts.unet).load_state_dict(saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.lr_sched.load_state_dict(saved["state"]["lr_scheduler"])
        if saved["state"].get("scaler") and getattr(parts.accelerator, "scaler", None) is not None:
            parts.accelerator.scaler.load_state_dict(saved["state"]["scaler"])
        parts.ema.load_state_dict(saved["ema"])
        return saved["step"]
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
    gens = [torch.Generator().manual_seed(sample_seed(1234, i)) for i in range(n)]
    was_training = unet.training
    unet.eval()
    out = pipe(gens, sampler="ddim", num_inference_steps=cfg.train.sample_steps, progress=False)
    unet.train(was_training)
    atomic_save_image(path, pair_grid(out.images, out.masks, ncols=4, scale=max(1, 128 // cfg.size), names=names))


def train_stage(
    cfg: GeneratorConfig,
    data: torch.Tensor | CropSet,
    class_map: ClassMap,
    stage_dir: Path,
    stage: str,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> UNet2DModel:
    """Train the ``stage`` UNet on encoded pairs ``data`` (N,C,H,W); return the EMA model.

    ``stop_after`` ends this call after that many steps (training in chunks on a machine with a
    time limit); ``resume=True`` continues from the newest checkpoint.
    """
    tc = cfg.train
    steps = tc.large_steps if stage == "large" else tc.small_steps
    torch.manual_seed(tc.seed)
    unet = build_unet(cfg.large if stage == "large" else cfg.small, data.shape[1], cfg.size)
    scheduler = make_scheduler(cfg)
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, gradient_accumulation_steps=tc.grad_accum)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, tc.warmup_steps, max(steps, 1))
    ema = EMAModel(unet.parameters(), decay=tc.ema_decay, use_ema_warmup=tc.ema_warmup,
                   model_cls=UNet2DModel, model_config=unet.config)
    unet, optimizer, lr_sched = accelerator.prepare(unet, optimizer, lr_sched)
    ema.to(accelerator.device)
    parts = TrainParts(accelerator, unet, optimizer, lr_sched, ema)
    log_path = stage_dir / "log.jsonl"
    start = load_checkpoint(parts, stage_dir) if resume else 0
    if start:
        _trim_log(log_path, start)
    stage_dir.mkdir(parents=True, exist_ok=True)
    unet.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {stage}", disable=not progress)
    t0, window = time.time(), []
    for step in bar:
        for micro in range(tc.grad_accum):
            x0, t, noise = draw_batch(data, tc, scheduler, sample_seed(tc.seed, step * tc.grad_accum + micro))
            x0, t, noise = x0.to(accelerator.device), t.to(accelerator.device), noise.to(accelerator.device)
            with accelerator.accumulate(unet):
                pred = unet(scheduler.add_noise(x0, noise, t), t).sample
                loss = F.mse_loss(pred.float(), target_for(scheduler, x0, noise, t).float())
                accelerator.backward(loss)
                if accelerator.sync_gradients and tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(unet.parameters(), tc.max_grad_norm)
                optimizer.step()
                lr_sched.step()
                optimizer.zero_grad()
            window.append(loss.item())
        ema.step(accelerator.unwrap_model(unet).parameters())
        done = step + 1
        if done % tc.log_every == 0 or done == steps:
            rec = {"step": done, "loss": float(np.mean(window)), "lr": lr_sched.get_last_lr()[0],
                   "ema_decay": ema.cur_decay_value, "seconds": round(time.time() - t0, 3)}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            window = []
        if tc.sample_every > 0 and (done % tc.sample_every == 0 or done == steps):
            ema_model = ema_unet(ema, accelerator.unwrap_model(unet))
            preview(ema_model, scheduler, cfg, stage, stage_dir / "samples" / f"step_{done:07d}.png", class_map.names)
        if tc.checkpoint_every > 0 and (done % tc.checkpoint_every == 0 or done == steps):
            save_checkpoint(parts, stage_dir, done, tc.keep_checkpoints)
        if stop_after is not None and done >= stop_after:
            break
    return ema_unet(ema, accelerator.unwrap_model(unet))


def ema_unet(ema: EMAModel, like: UNet2DModel) -> UNet2DModel:
    """A separate UNet holding the EMA weights (the training model is left untouched)."""
    model = UNet2DModel.from_config(like.config)
    model.load_state_dict(like.state_dict())
    ema.copy_to(model.parameters())
    return model.to(like.device).eval()
