"""Cost of full-size pairs: seconds per full-size pair against seconds per size x size pair, interleaved.

A full-size pair on a crop-mode run costs one window per defect, whatever the image size; what grows
with the image is reading it, placing windows and writing the whole PNG. This measures it with the
CrackForest generator's networks (configs/crackforest_native.yaml; timing does not depend on the
weights, so the run is trained for one step on the demo data), DDPM 50 steps, 8 pairs per call:

    python benchmarks/bench_fullsize.py --out experiments/native/results/cost            # about 10 minutes on one core

Every round samples each case once, in a rotated order (interleaved), so machine load hits all cases
alike; the result is each case's median over rounds and its ratio to the size x size pairs of the same
round. Writes OUT/cost.json and OUT/cost.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from defectgen.cli import main as defectgen
from defectgen.demo import make_demo_dataset, render_sample
from defectgen.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SIZES = [(200, 200), (480, 320), (1260, 500)]  # NEU, CrackForest, KolektorSDD (width x height)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "crackforest_native.yaml")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num", type=int, default=8, help="pairs per call")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_fullsize")
    ap.add_argument("--out", type=Path, required=True)
    return ap.parse_args(argv)


def prepare(work: Path, config: Path) -> tuple[Path, dict[str, Path]]:
    """A crop-mode run of the config's networks (one step per stage) and good images of each size."""
    data = make_demo_dataset(work / "data", per_class=2, size=64, seed=0, good=0)
    run = work / "run"
    if not (run / "pipeline" / "model_index.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        assert defectgen(["train", "--config", str(config), "--data", str(data), "--out", str(run), "--quiet",
                          "--set", "image_channels=1", "--set", "train.large_steps=1", "--set", "train.small_steps=1",
                          "--set", "train.sample_every=0", "--set", "train.checkpoint_every=0"]) == 0
    rng = np.random.default_rng(0)
    goods = {}
    for w, h in SIZES:  # the demo's brushed-metal texture, scaled: it compresses like a photo, unlike noise
        folder = work / f"good_{w}x{h}"
        folder.mkdir(exist_ok=True)
        for k in range(4):
            texture, _ = render_sample(rng, 256, [])
            Image.fromarray(texture).resize((w, h), Image.BICUBIC).save(folder / f"g{k}.png")
        goods[f"{w}x{h}"] = folder
    return run, goods


def seconds_per_pair(run: Path, out: Path, num: int, steps: int, *flags: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    assert defectgen(["sample", "--run", str(run), "--out", str(out), "--num", str(num), "--steps", str(steps),
                      "--sampler", "ddpm", "--batch-size", str(num), "--quiet", *flags]) == 0
    return float(json.loads((out / "manifest.json").read_text())["seconds_per_sample"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run, goods = prepare(args.work, args.config)
    cases = {"64x64 window (unconditional)": []}
    cases |= {f"full {k}, 1 defect": ["--onto", str(v)] for k, v in goods.items()}
    cases |= {"full 480x320, 2 defects": ["--onto", str(goods["480x320"]), "--defects-per-image", "2"],
              "full 480x320, 4 defects": ["--onto", str(goods["480x320"]), "--defects-per-image", "4"]}
    times: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(seconds_per_pair(run, args.work / "out", args.num, args.steps, *cases[name]))
            print(f"round {r}: {name}: {times[name][-1]:.3f} s/pair", flush=True)
    base = times[names[0]]
    rows = [{"case": n, "seconds_per_pair": statistics.median(t), "rounds": t,
             "ratio_to_window": statistics.median([a / b for a, b in zip(t, base)])} for n, t in times.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "cost.json", {"config": str(args.config.relative_to(REPO)), "steps": args.steps,
                                                "pairs_per_call": args.num, "rounds": args.rounds, "rows": rows})
    lines = ["| case | s/pair (median) | ratio to a 64x64 pair (median of per-round ratios) |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['seconds_per_pair']:.3f} | {r['ratio_to_window']:.2f}x |" for r in rows]
    atomic_write_text(args.out / "cost.md",
        f"# Cost of full-size pairs\n\n`python benchmarks/bench_fullsize.py --out {args.out}`: {args.config.name} networks, "
        f"DDPM {args.steps} steps, {args.num} pairs per call, {args.rounds} interleaved rounds, one process.\n\n"
        + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
