"""Benchmarks: what our loops cost against bare loops of the same models, how cost scales, and
what a second process buys. Writes ``bench.json``, ``bench.md`` and ``bench.png`` under ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/bench.py --out benchmarks/results/bench     # CPU, ~5 minutes
    python benchmarks/bench.py --out benchmarks/results/bench_gpu --gpu             # adds the CUDA section

Overheads are measured interleaved (ours, bare, ours, bare, ... with alternating order), and each
ratio is the median of the per-round ratios, so a busy machine slows both sides of a round alike.
Every process runs one thread. Speed claims live here, never in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from defectgen.config import load_config  # noqa: E402
from defectgen.data.samples import read_manifest  # noqa: E402
from defectgen.generator_config import GeneratorConfig  # noqa: E402
from defectgen.models import build_unet  # noqa: E402
from defectgen.pipeline import DefectGenPipeline  # noqa: E402
from defectgen.schedule import sample_generators, sampler_scheduler, target_for  # noqa: E402
from defectgen.train import train_stage  # noqa: E402

CHANNELS = 1 + 4  # grey image + 4 classes, as the demo data


def timed(fn: Callable[[], object]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def interleaved(ours: Callable[[], object], bare: Callable[[], object], rounds: int) -> dict[str, float]:
    """Median over rounds of time(ours) / time(bare); the order within a round alternates."""
    ours(), bare()  # warm-up
    ratios, t_ours, t_bare = [], [], []
    for r in range(rounds):
        if r % 2:
            b, a = timed(bare), timed(ours)
        else:
            a, b = timed(ours), timed(bare)
        ratios.append(a / b)
        t_ours.append(a)
        t_bare.append(b)
    return {"ratio": round(float(np.median(ratios)), 4), "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4), "ours_s": round(float(np.median(t_ours)), 4),
            "bare_s": round(float(np.median(t_bare)), 4), "rounds": rounds}


def bench_config(size: int, quick: bool) -> GeneratorConfig:
    """The demo generator (configs/demo.yaml) at ``size`` px; tiny networks with ``quick``."""
    cfg = load_config(GeneratorConfig, REPO / "configs" / "demo.yaml", [f"size={size}"])
    if quick:
        cfg = load_config(GeneratorConfig, REPO / "configs" / "demo.yaml", [
            f"size={size}", "large.base_channels=8", "large.norm_num_groups=8", "large.attention_head_dim=8",
            "small.base_channels=8", "small.norm_num_groups=8"])
    return cfg


def make_pipeline(cfg: GeneratorConfig, device: str, class_names: list[str] | None = None) -> DefectGenPipeline:
    torch.manual_seed(0)
    large = build_unet(cfg.large, CHANNELS, cfg.size)
    small = build_unet(cfg.small, CHANNELS, cfg.size)
    return DefectGenPipeline(large, small, cfg.diffusion.make_scheduler(), cfg.sample.switch, cfg.image_channels,
                             class_names).to(device)


def bare_sampling(pipe: DefectGenPipeline, batch: int, steps: int) -> Callable[[], object]:
    """The same trajectory written as a plain loop: noise, UNet by timestep, scheduler step."""
    def run() -> torch.Tensor:
        sched = sampler_scheduler(pipe.scheduler, "ddpm")
        sched.set_timesteps(steps)
        boundary = pipe.config.switch * sched.config.num_train_timesteps
        gens = sample_generators(0, range(batch), pipe.device)
        x = torch.stack([torch.randn(CHANNELS, pipe.unet.config.sample_size, pipe.unet.config.sample_size,
                                     generator=g, device=pipe.device) for g in gens])
        with torch.no_grad():
            for t in sched.timesteps:
                model = pipe.unet if t >= boundary else pipe.unet_2
                out = model(x, t.expand(batch).to(x.device)).sample
                x = sched.step(out, t, x, generator=gens).prev_sample
        return x.cpu()
    return run


def ours_sampling(pipe: DefectGenPipeline, batch: int, steps: int) -> Callable[[], object]:
    def run() -> object:
        gens = sample_generators(0, range(batch), pipe.device)
        return pipe(gens, num_inference_steps=steps, progress=False)
    return run


def training_pair(cfg: GeneratorConfig, data: torch.Tensor, steps: int, device: str) -> tuple[Callable, Callable]:
    """``train_stage`` for ``steps`` steps vs the bare forward + backward + AdamW loop on a fixed batch."""
    cfg.train.large_steps, cfg.train.log_every = steps, steps
    cfg.train.sample_every = cfg.train.checkpoint_every = 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))

    def ours() -> None:
        import shutil

        shutil.rmtree(tmp / "large", ignore_errors=True)
        train_stage(cfg, data, tmp / "large", "large", progress=False)

    def bare() -> None:
        torch.manual_seed(0)
        unet = build_unet(cfg.large, data.shape[1], cfg.size).to(device).train()
        opt = torch.optim.AdamW(unet.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        sched = cfg.diffusion.make_scheduler()
        g = torch.Generator().manual_seed(0)
        x0 = data[torch.randint(len(data), (cfg.train.batch_size,), generator=g)].to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, 1000, (len(x0),), generator=g).to(device)
        amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                             enabled=cfg.train.mixed_precision == "bf16")  # as accelerate runs ours
        for _ in range(steps):
            with amp:
                pred = unet(sched.add_noise(x0, noise, t), t).sample
            loss = F.mse_loss(pred.float(), target_for(sched, x0, noise, t))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.train.max_grad_norm)
            opt.step()
            opt.zero_grad()
    return ours, bare


def segmentation_pair(images: np.ndarray, masks: np.ndarray, steps: int, model: str) -> tuple[Callable, Callable]:
    """``fit_segmenter`` vs the bare smp loop (same network, batch and optimiser) on a fixed batch."""
    from defectgen.seg.models import build_model
    from defectgen.seg.train import SegConfig, fit_segmenter

    cfg = SegConfig(model=model, size=images.shape[1], steps=steps, batch_size=8, warmup_steps=2, threads=1)

    def ours() -> None:
        fit_segmenter(images, masks, cfg, num_classes=4, seed=0, device="cpu")

    def bare() -> None:
        torch.manual_seed(0)
        net = build_model(model, 4).train()
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        x = torch.from_numpy(images[:8]).permute(0, 3, 1, 2).float() / 255.0
        y = torch.from_numpy(masks[:8]).long()
        for _ in range(steps):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return ours, bare


def exponent(xs: list[float], ts: list[float]) -> float:
    """Slope of log(time) against log(x): 1 = linear cost, 2 = quadratic."""
    return round(float(np.polyfit(np.log(xs), np.log(ts), 1)[0]), 3)


def cost_curves(quick: bool, device: str) -> dict[str, dict[str, object]]:
    """Sampling time against steps, image size and batch (median of 3 each), with fitted exponents."""
    curves: dict[str, dict[str, object]] = {}
    base_size, base_steps, base_batch = (16, 5, 2) if quick else (32, 10, 2)
    grids = {"steps": [base_steps, 2 * base_steps, 4 * base_steps],
             "size": [16, 32] if quick else [16, 32, 64],
             "batch": [1, 2, 4] if quick else [1, 2, 4, 8]}
    for name, values in grids.items():
        times = []
        for v in values:
            size = v if name == "size" else base_size
            pipe = make_pipeline(bench_config(size, quick), device)
            run = ours_sampling(pipe, v if name == "batch" else base_batch, v if name == "steps" else base_steps)
            run()
            times.append(float(np.median([timed(run) for _ in range(3)])))
        curves[name] = {"values": values, "seconds": [round(t, 4) for t in times], "exponent": exponent(values, times)}
    return curves


def _torchrun(n: int, args: list[str]) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "defectgen.cli", "--", *args]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)


def scaling(quick: bool, data_dir: Path, work: Path) -> dict[str, object]:
    """Training and sampling throughput with 1 and 2 CPU processes (torchrun, gloo).

    Training keeps the global batch (8), so 2 processes do half the work each per step; sampling
    splits the indices. Times come from the run's own log and manifest (no process start-up).
    """
    steps, size = (6, 16) if quick else (30, 32)
    sets = [f"size={size}", f"train.large_steps={steps}", "train.batch_size=8", "train.sample_every=0",
            "train.checkpoint_every=0", "train.log_every=1"]
    if quick:
        sets += ["large.base_channels=8", "large.norm_num_groups=8", "large.attention_head_dim=8"]
    from defectgen.data import open_dataset

    pipe = make_pipeline(bench_config(size, quick), "cpu", list(open_dataset(data_dir).class_map.names))
    pipe.save_pretrained(work / "bench_pipeline")
    num, sample_steps = (8, 5) if quick else (32, 20)
    train: dict[str, list[float]] = {"1": [], "2": []}
    sample: dict[str, list[float]] = {"1": [], "2": []}
    for rep in range(1 if quick else 2):
        for n in (1, 2):
            run = work / f"scale_{n}_{rep}"
            _torchrun(n, ["train", "--config", str(REPO / "configs" / "demo.yaml"), "--data", str(data_dir),
                          "--out", str(run), "--stage", "large", "--quiet", *sum((["--set", x] for x in sets), [])])
            log = [json.loads(ln) for ln in (run / "large" / "log.jsonl").read_text().splitlines()]
            skip = 2  # the first steps include allocation and DDP's first bucket setup
            train[str(n)].append(8 * (steps - skip) / (log[-1]["seconds"] - log[skip - 1]["seconds"]))
            syn = work / f"samples_{n}_{rep}"
            _torchrun(n, ["sample", "--run", str(work / "bench_pipeline"), "--num", str(num), "--out", str(syn),
                          "--sampler", "ddim", "--steps", str(sample_steps), "--batch-size", "4", "--quiet"])
            sample[str(n)].append(num / read_manifest(syn)["seconds"])

    def summary(runs: dict[str, list[float]]) -> dict[str, object]:
        one, two = float(np.median(runs["1"])), float(np.median(runs["2"]))
        return {"images_per_s": {"1": round(one, 2), "2": round(two, 2)}, "speedup": round(two / one, 3),
                "efficiency": round(two / one / 2, 3), "runs": runs}
    return {"size": size, "train": {"global_batch": 8, "steps": steps, **summary(train)},
            "sample": {"num": num, "ddim_steps": sample_steps, **summary(sample)}}


def gpu_section(quick: bool, device: str = "cuda") -> dict[str, object]:
    """The card's bf16 matmul rate, and images/s for training and sampling vs the bare loop of the
    same model (the GPU config's networks at 64 and 128 px). ``quick`` with ``device="cpu"`` runs
    the same code on tiny networks, so the section is checked before a GPU minute is spent on it."""
    n, reps = (256, 2) if quick else (8192, 20)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b  # cuBLAS start-up
    secs = timed(lambda: [a @ b for _ in range(reps)])
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    out: dict[str, object] = {"device": name, "bf16_matmul_tflops": round(2 * n**3 * reps / secs / 1e12, 3)}
    train_steps, batch, steps, rounds = (2, 2, 3, 1) if quick else (20, 64, 50, 3)
    for size in (16,) if quick else (64, 128):
        cfg = bench_config(size, True) if quick else \
            load_config(GeneratorConfig, REPO / "configs" / "neu64_gpu.yaml", [f"size={size}"])
        data = torch.rand(30, CHANNELS, size, size) * 2 - 1
        train = interleaved(*training_pair(cfg, data, train_steps, device), rounds)
        pipe = make_pipeline(cfg, device)
        samp = interleaved(ours_sampling(pipe, batch, steps), bare_sampling(pipe, batch, steps), rounds)
        out[f"{size}px"] = {"train": train, "train_images_per_s": round(train_steps * cfg.train.batch_size / train["ours_s"], 1),
                            "train_batch": cfg.train.batch_size, "mixed_precision": cfg.train.mixed_precision,
                            "sample": samp, "sample_batch": batch, "sample_ddpm_steps": steps,
                            "sample_images_per_s": round(batch / samp["ours_s"], 1)}
    return out


def demo_arrays(size: int, work: Path) -> tuple[Path, np.ndarray, np.ndarray, torch.Tensor]:
    from defectgen.data import load_pairs, open_dataset
    from defectgen.demo import make_demo_dataset
    from defectgen.pairs import encode_pairs

    data_dir = make_demo_dataset(work / "data", per_class=4, size=size, seed=0)
    ds = open_dataset(data_dir)
    images, masks = load_pairs(ds.records, ds.class_map, size)
    return data_dir, images, masks, encode_pairs(images, masks, ds.class_map.num_classes, 1)


def write_report(out: Path, res: dict[str, object]) -> None:
    from defectgen.io import atomic_write_json, atomic_write_text

    atomic_write_json(out / "bench.json", res)
    o = res["overheads"]
    lines = ["# Benchmarks", "", f"`{res['command']}`, {res['date']}, {res['machine']}.", "",
             f"Load average before / after: {res['load_before']} / {res['load_after']} "
             f"(other jobs share this machine; ratios are interleaved medians).", "",
             "| overhead (interleaved, ours / bare) | median | min | max | ours s | bare s | target |",
             "|---|---|---|---|---|---|---|"]
    targets = {"sampling": "≤ 1.05", "training": "≤ 1.10", "segmentation": "≤ 1.10"}
    for k, v in o.items():
        lines.append(f"| {k}: {v['what']} | {v['ratio']:.3f} | {v['ratio_min']:.3f} | {v['ratio_max']:.3f} "
                     f"| {v['ours_s']:.3f} | {v['bare_s']:.3f} | {targets[k]} |")
    lines += ["", "| sampling cost against | values | seconds | exponent |", "|---|---|---|---|"]
    for k, v in res["cost"].items():
        lines.append(f"| {k} | {v['values']} | {v['seconds']} | {v['exponent']} |")
    s = res["scaling"]
    lines += ["", f"1 vs 2 CPU processes (torchrun, gloo, 1 thread each) at {s['size']} px:", "",
              "| job | 1 process, images/s | 2 processes, images/s | speed-up | efficiency |", "|---|---|---|---|---|"]
    for job, what in (("train", f"training, global batch {s['train']['global_batch']}"),
                      ("sample", f"sampling, {s['sample']['ddim_steps']} DDIM steps")):
        v = s[job]
        lines.append(f"| {what} | {v['images_per_s']['1']} | {v['images_per_s']['2']} | {v['speedup']}× "
                     f"| {v['efficiency']:.0%} |")
    g = res.get("gpu")
    lines += ["", "## GPU", "", json.dumps(g, indent=1) if g else "No GPU in this run: nothing measured."]
    atomic_write_text(out / "bench.md", "\n".join(lines) + "\n")
    plot(out / "bench.png", res["cost"])


def plot(path: Path, cost: dict[str, dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cost), figsize=(4 * len(cost), 3.2))
    for ax, (name, c) in zip(axes, cost.items()):
        ax.loglog(c["values"], c["seconds"], "o-")
        ax.set_xlabel(name)
        ax.set_ylabel("seconds per sampling call")
        ax.set_title(f"exponent {c['exponent']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few rounds (a smoke run, not a measurement)")
    p.add_argument("--gpu", action="store_true", help="add the CUDA section (needs a GPU)")
    p.add_argument("--gpu-only", action="store_true", help="only the CUDA section (on a lent GPU machine)")
    p.add_argument("--device", default="cuda", help="the --gpu-only section's device (cpu: a smoke run with --quick)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rounds = 3 if args.quick else 7
    work = Path(tempfile.mkdtemp(prefix="defectgen_bench_"))
    res: dict[str, object] = {"command": " ".join(["python benchmarks/bench.py", *(argv or sys.argv[1:])]),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread per process",
                              "load_before": [round(x, 2) for x in os.getloadavg()]}
    if args.gpu_only:
        res.update(gpu=gpu_section(args.quick, args.device), load_after=[round(x, 2) for x in os.getloadavg()])
        args.out.mkdir(parents=True, exist_ok=True)
        from defectgen.io import atomic_write_json

        atomic_write_json(args.out / "bench.json", res)
        print(json.dumps(res, indent=1))
        return 0
    size = 16 if args.quick else 32
    data_dir, images, masks, data = demo_arrays(size if args.quick else 64, work)
    cfg = bench_config(size, args.quick)
    pipe = make_pipeline(cfg, "cpu")
    steps, batch = (5, 2) if args.quick else (20, 4)
    small_data = torch.nn.functional.interpolate(data, size=size) if data.shape[-1] != size else data
    train_steps = 3 if args.quick else 15
    seg_steps = 3 if args.quick else 10
    seg_model = "unet-tiny" if args.quick else "unet-small"
    res["overheads"] = {
        "sampling": {"what": f"pipeline vs bare UNet loop ({steps} DDPM steps, batch {batch}, {size} px)",
                     **interleaved(ours_sampling(pipe, batch, steps), bare_sampling(pipe, batch, steps), rounds)},
        "training": {"what": f"train_stage vs bare fwd+bwd+AdamW ({train_steps} steps, batch {cfg.train.batch_size}, {size} px)",
                     **interleaved(*training_pair(cfg, small_data, train_steps, "cpu"), rounds)},
        "segmentation": {"what": f"fit_segmenter vs bare smp loop ({seg_model}, {seg_steps} steps, batch 8, {images.shape[1]} px)",
                         **interleaved(*segmentation_pair(images, masks, seg_steps, seg_model), rounds)},
    }
    res["cost"] = cost_curves(args.quick, "cpu")
    res["scaling"] = scaling(args.quick, data_dir, work)
    res["gpu"] = gpu_section(args.quick) if args.gpu and torch.cuda.is_available() else None
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, res)
    print((args.out / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
