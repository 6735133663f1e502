"""Where does a demo training step spend its time? Small, interleaved measurements on the CPU.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/probe_demo_speed.py --rounds 5 --steps 10

Times one training step of the demo's large UNet (configs/demo.yaml) in several configurations:
threads, batch size, attention, memory format, bf16 autocast, and the parts of the real training
step (batch drawing with augmentation, forward, backward, optimizer, EMA). Configurations are run
in interleaved rounds and reported as the median s/step and the ratio to the baseline, so a
machine shared with other jobs shifts all of them alike. Writes benchmarks/results/demo/probe_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from defectgen.config import load_config
from defectgen.demo import make_demo_dataset
from defectgen.data import load_pairs, open_dataset
from defectgen.generator_config import GeneratorConfig
from defectgen.models import build_unet, count_parameters
from defectgen.pairs import encode_pairs
from defectgen.schedule import sample_seed
from defectgen.train import draw_batch

ROOT = Path(__file__).resolve().parents[1]


def setup(cfg: GeneratorConfig, data: torch.Tensor, variant: dict) -> dict:
    ucfg = cfg.large if variant.get("stage", "large") == "large" else cfg.small
    if variant.get("no_attention"):
        ucfg = type(ucfg)(**{**vars(ucfg), "attention_levels": (), "mid_attention": False})
    if "base_channels" in variant:
        ucfg = type(ucfg)(**{**vars(ucfg), "base_channels": variant["base_channels"]})
    unet = build_unet(ucfg, data.shape[1], cfg.size)
    if variant.get("channels_last"):
        unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    ema = EMAModel(unet.parameters(), decay=0.995) if variant.get("ema") else None
    return {"unet": unet, "opt": opt, "ema": ema, "params": count_parameters(unet)}


def one_step(cfg: GeneratorConfig, data: torch.Tensor, sched, state: dict, variant: dict, step: int) -> None:
    tc = cfg.train
    bs = variant.get("batch_size", BASE_BATCH)
    tc2 = type(tc)(**{**vars(tc), "batch_size": bs})
    x0, t, noise = draw_batch(data, tc2, sched, sample_seed(0, step))
    if variant.get("draw_only"):
        return
    if variant.get("channels_last"):
        x0, noise = x0.contiguous(memory_format=torch.channels_last), noise.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if variant.get("bf16") else nullcontext()
    unet, opt = state["unet"], state["opt"]
    with ctx:
        pred = unet(sched.add_noise(x0, noise, t), t).sample
    loss = F.mse_loss(pred.float(), x0)
    if variant.get("forward_only"):
        return
    loss.backward()
    opt.step()
    opt.zero_grad()
    if state["ema"] is not None:
        state["ema"].step(unet.parameters())


BASE_BATCH = 16  # the batch of the demo the issue timed (1200 steps per stage at batch 16)
VARIANTS: dict[str, dict] = {
    "baseline (large, b16, 1 thread)": {},
    "draw_batch only (augment)": {"draw_only": True},
    "forward only": {"forward_only": True},
    "+ EMA step": {"ema": True},
    "batch 8": {"batch_size": 8},
    "batch 4": {"batch_size": 4},
    "no attention": {"no_attention": True},
    "channels_last": {"channels_last": True},
    "bf16 autocast": {"bf16": True},
    "2 threads": {"threads": 2},
    "base_channels 16": {"base_channels": 16},
    "small stage (b16)": {"stage": "small"},
}


def step_gflops(cfg: GeneratorConfig, data: torch.Tensor, sched, state: dict, variant: dict) -> float:
    """Floating-point operations of one step (forward and backward), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    if variant.get("draw_only"):
        return 0.0
    with FlopCounterMode(display=False) as counter:
        one_step(cfg, data, sched, state, {**variant, "ema": False}, 0)
    return counter.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration and round")
    ap.add_argument("--only", nargs="*", default=None, help="names of variants to run (default all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo")
    args = ap.parse_args()
    cfg = load_config(GeneratorConfig, ROOT / "configs" / "demo.yaml")
    data_dir = make_demo_dataset(Path("/tmp/probe_demo_data"), per_class=8, size=64, seed=0)
    ds = open_dataset(data_dir)
    images, masks = load_pairs(ds.records, ds.class_map, cfg.size)
    data = encode_pairs(images, masks, ds.class_map.num_classes, cfg.image_channels)
    sched = cfg.diffusion.make_scheduler()
    names = [n for n in VARIANTS if args.only is None or n in args.only]
    states = {n: setup(cfg, data, VARIANTS[n]) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            v = VARIANTS[n]
            torch.set_num_threads(v.get("threads", 1))
            one_step(cfg, data, sched, states[n], v, 0)  # warm-up
            t0 = time.perf_counter()
            for s in range(args.steps):
                one_step(cfg, data, sched, states[n], v, s + 1)
            times[n].append((time.perf_counter() - t0) / args.steps)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    base = statistics.median(times[names[0]])
    flops = {n: step_gflops(cfg, data, sched, states[n], VARIANTS[n]) for n in names}
    rows = [{"variant": n, "params": states[n]["params"], "gflop_per_step": round(flops[n], 2),
             "s_per_step": round(statistics.median(times[n]), 4),
             "ratio": round(statistics.median(times[n]) / base, 3), "rounds": [round(x, 4) for x in times[n]]}
            for n in names]
    load = Path("/proc/loadavg").read_text().split()[:3]
    report = {"torch": torch.__version__, "loadavg_end": load, "rounds": args.rounds, "steps": args.steps, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    md = ["| configuration | parameters | GFLOP/step | s/step (median) | × baseline |", "|---|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['params']:,} | {r['gflop_per_step']:.1f} | {r['s_per_step']:.4f} | {r['ratio']:.2f} |"
           for r in rows]
    md.append(f"\ntorch {torch.__version__}; {args.rounds} interleaved rounds of {args.steps} steps; "
              f"load average at the end {' '.join(load)} (shared machine).")
    (args.out / "probe_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
